"""The round program and scanned rounds, on the toy objective and method (tests/toy.py): fast and exact."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import toy
from jaxdfl.adapters import lora
from jaxdfl.core import RoundControl
from jaxdfl.sim.local import over_devices
from jaxdfl.sim.round import run_rounds
from jaxdfl.sim.state import RoundInputs
from jaxdfl.topology import graphs

M = 6
RING = graphs.metropolis_hastings(graphs.ring_adjacency(M))


def inputs(ws, active=None, ratio=None, exchange=False, first=0):
    """Stacked inputs of ``len(ws)`` rounds."""
    r = len(ws)
    control = RoundControl(None if ratio is None else jnp.full(r, ratio, jnp.float32), jnp.full(r, exchange),
                           jnp.zeros(r))
    return RoundInputs(jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(7), jnp.arange(first, first + r)),
                       jnp.arange(first, first + r), jnp.asarray(np.stack(ws), jnp.float32),
                       None if active is None else jnp.asarray(np.stack(active)), control, None)


def one(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


@pytest.fixture(scope="module")
def data():
    return toy.device_data(M)


@pytest.mark.parametrize("method", [toy.bias_method(), lora(rank=2)], ids=["bias", "lora"])
def test_scanned_rounds_equal_the_loop_of_single_rounds(data, method):
    step = toy.round_step(method, optax.adam(0.1))
    scanned = jax.jit(lambda s, i: run_rounds(step, s, data, i))
    ws = [RING, np.eye(M), RING, RING]
    state, metrics = scanned(toy.init_states(method, optax.adam(0.1), M), inputs(ws))
    loop = toy.init_states(method, optax.adam(0.1), M)
    losses = []
    for r, w in enumerate(ws):
        loop, m = scanned(loop, inputs([w], first=r))
        losses.append(m["train_loss"][0])
    chex.assert_trees_all_close(state, loop, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["train_loss"], losses, rtol=1e-6)
    assert metrics["device_loss"].shape == (4, M)


def test_mixing_applies_w_to_what_devices_trained(data):
    step = jax.jit(lambda s, i: run_rounds(toy.round_step(toy.bias_method()), s, data, i))
    fresh = lambda: toy.init_states(toy.bias_method(), optax.sgd(0.5), M)  # noqa: E731
    local, m_alone = step(fresh(), inputs([np.eye(M)]))
    mixed, m_ring = step(fresh(), inputs([RING]))
    expected = RING @ np.asarray(local.adapter.params["lin"])
    np.testing.assert_allclose(mixed.adapter.params["lin"], expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(np.asarray(local.adapter.params["lin"]), axis=0).max() > 1e-2  # devices really differ
    assert float(m_alone["uplink_params"][0]) == 0 and int(m_alone["senders"][0]) == 0
    assert float(m_ring["uplink_params"][0]) == M * toy.C and float(m_ring["uplink_bits"][0]) == 32 * M * toy.C


def test_only_active_devices_train_encode_and_send(data):
    method = toy.bias_method()
    state0 = toy.init_states(method, optax.adam(0.1), M)
    active = np.array([1, 4])
    w = np.zeros((M, M), np.float32)
    w[:, active] = 0.5  # server average of the two sampled clients
    state, metrics = run_rounds(toy.round_step(method, optax.adam(0.1)), state0, data, inputs([w], active=[active]))
    encoded = np.asarray(state.adapter.memory.encoded)
    np.testing.assert_array_equal(encoded, [0, 1, 0, 0, 1, 0])
    for i in (0, 2, 3, 5):  # optimizer state of idle devices carries over untouched
        chex.assert_trees_all_equal(one(state.opt_state, i), one(state0.opt_state, i))
    assert metrics["device_loss"].shape == (1, 2) and float(metrics["uplink_params"][0]) == 2 * toy.C
    params = np.asarray(state.adapter.params["lin"])
    np.testing.assert_allclose(params, np.broadcast_to(params[0], params.shape))  # everyone gets the average


def test_round_control_reaches_every_encode(data):
    method = toy.bias_method()
    run = lambda ratio: run_rounds(toy.round_step(method), toy.init_states(method, optax.sgd(0.5), M), data,  # noqa: E731
                                   inputs([RING], ratio=ratio))[0]
    np.testing.assert_allclose(run(0.3).adapter.memory.last_ratio, 0.3)
    np.testing.assert_allclose(run(None).adapter.memory.last_ratio, -1.0)


def test_exchange_rounds_count_every_device_as_a_sender(data):
    """On an exchange round a device also hands its expert to the devices it gives zero weight."""
    method = toy.bias_method()
    state = toy.init_states(method, optax.sgd(0.5), M)
    _, metrics = run_rounds(toy.round_step(method), state, data, inputs([np.eye(M)], exchange=True))
    assert int(metrics["senders"][0]) == M and float(metrics["uplink_params"][0]) == M * toy.C


@pytest.mark.parametrize("chunk, active", [(4, None), (2, [[0, 2, 3, 5], [1, 2, 4, 5]]), (8, None)],
                         ids=["one-and-a-part", "sampled-whole-groups", "more-than-M"])
def test_device_chunks_give_the_same_round(data, chunk, active):
    method = lora(rank=2)
    state = toy.init_states(method, optax.adam(0.1), M)
    results = [run_rounds(toy.round_step(method, optax.adam(0.1), device_chunk=c), state, data,
                          inputs([RING, RING], active)) for c in (0, chunk)]
    chex.assert_trees_all_close(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_device_chunks_update_the_state_in_place():
    """With ``carried``, the groups write the new state over the old (donated) one: the program's temporaries
    hold a few groups' worth (1/32 of the state each), where ``lax.map`` stacks a second copy of the whole
    state. The step is Adam-like (the new params read the new moments): that is where XLA, left to fuse the
    reads of a group's old moments into their writes, copied every moment in every group."""
    m, p = 512, 512

    def step(scale, mine):
        params, mu, nu, x = mine
        g = jnp.tanh(params * scale + x)
        mu, nu = 0.9 * mu + 0.1 * g, 0.99 * nu + 0.01 * g * g
        return params - 0.1 * mu / (jnp.sqrt(nu) + 1e-8), mu, nu, g.sum()

    state_bytes = 3 * m * p * 4
    temporaries = {}
    for carried in (0, 3):
        mapped = over_devices(step, 16, carried)
        program = jax.jit(lambda s, a, b, c, x: mapped(s, (a, b, c, x)), donate_argnums=(1, 2, 3))
        args = (jnp.float32(2.0), jnp.ones((m, p)), jnp.zeros((m, p)), jnp.zeros((m, p)), jnp.ones((m, 1)))
        temporaries[carried] = program.lower(*args).compile().memory_analysis().temp_size_in_bytes
        expected = jax.vmap(step, in_axes=(None, 0))(*args[:1], args[1:])
        chex.assert_trees_all_close(program(*args), expected, rtol=1e-6)
    assert temporaries[0] >= state_bytes > 4 * temporaries[3]


def test_gradient_flows_through_the_mixing_matrix(data):
    """d/dW of Σ_i ||Σ_j W_ij L_j||² after one round is 2 Y L^T with L the local results: the round program is
    differentiable in the topology."""
    method = toy.bias_method()
    step = toy.round_step(method)
    state = toy.init_states(method, optax.sgd(0.5), M)

    planned = inputs([RING])

    def objective(w):
        new, _ = run_rounds(step, state, data, planned._replace(w=w[None]))
        return jnp.sum(new.adapter.params["lin"] ** 2)

    grad = jax.jit(jax.grad(objective))(jnp.asarray(RING))
    local = np.asarray(run_rounds(step, state, data, inputs([np.eye(M)]))[0].adapter.params["lin"])
    np.testing.assert_allclose(grad, 2 * (RING @ local) @ local.T, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("through", [False, True])
def test_training_through_experts_runs_the_inference_mixture(through):
    """so_lora on the toy model, three devices in one cluster, one example each (so every batch is that
    example) and one local step: a round's training loss is the loss at the round's starting adapter, through
    the device's own delta, or with ``train_with_experts`` through its mixture of every held expert."""
    from jaxdfl.adapters import so_lora
    from jaxdfl.core import adapter_hook, expert_views
    from jaxdfl.sim.state import SimState

    m = 3
    method = so_lora(rank=2, density=0.5, top_k=0, calib_examples=1, train_with_experts=through)
    data = toy.device_data(m, n=1)
    data = data._replace(base={"lin": {"w": jax.random.normal(jax.random.key(3), (toy.K, toy.C))}})
    x, y = data.x[data.index], data.y[data.index]  # [M, n, ...]: each device's examples
    stats = jax.vmap(lambda x, n: method.calibrate(toy.OBJECTIVE.forward, data.base, toy.LAYERS, x, n))(x, data.n)
    adapter = jax.vmap(lambda k, s: method.init(k, toy.LAYERS, s))(jax.random.split(jax.random.key(0), m), stats)
    state = SimState(adapter, jax.vmap(optax.sgd(0.5).init)(adapter.params))
    step = toy.round_step(method, local_steps=1)
    full = np.full((m, m), 1.0 / m, np.float32)
    state, _ = run_rounds(step, state, data, inputs([full]))
    views = expert_views(jax.vmap(method.experts.expert)(state.adapter), jnp.asarray(full), 0.0)
    expected = []
    for i in range(m):
        view = views._replace(held=views.held[i], stored=views.stored[i], index=views.index[i])
        hook = adapter_hook(method, one(state.adapter, i), view if through else None)
        expected.append(toy.OBJECTIVE.loss(data.base, x[i, :1], y[i, :1], hook))
    _, metrics = run_rounds(step, state, data, inputs([full], first=1))
    np.testing.assert_allclose(metrics["device_loss"][0], expected, rtol=1e-5)
    own = [toy.OBJECTIVE.loss(data.base, x[i, :1], y[i, :1], adapter_hook(method, one(state.adapter, i)))
           for i in range(m)]
    assert np.abs(np.asarray(own) - np.asarray(expected)).max() > 1e-4 or not through  # the mixture differs


def test_a_run_is_cut_into_programs_at_evaluations_and_checkpoints():
    from jaxdfl.sim.schedule import segments

    assert segments(0, 20, 10, 10) == [(0, 10), (10, 20)]
    assert segments(0, 7, 5, 3) == [(0, 3), (3, 5), (5, 6), (6, 7)]
    assert segments(4, 7, 5, 0) == [(4, 5), (5, 7)]  # resumed mid-run
    assert segments(7, 7, 5, 3) == []  # resumed after the last round was saved: nothing left to run
