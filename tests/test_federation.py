"""Realistic federations in the round program, on the toy objective (tests/toy.py): offline devices, message
accounting, Byzantine devices, server optimizers and FedProx, each against a hand computation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import toy
from jaxdfl.federation import make_poison, make_rule, make_server_optimizer
from jaxdfl.federation.config import AggregationConfig, AttackConfig, ServerOptimizerConfig
from jaxdfl.sim.local import make_local_train
from jaxdfl.sim.round import run_rounds
from jaxdfl.topology import drop_senders, graphs
from test_engine import RING, M, inputs, one

SERVER = graphs.server_average(np.ones(M), np.arange(M))
LOST = ("messages_delivered", "messages_lost_unavailable", "messages_lost_late", "messages_lost_dropped",
        "messages_lost_outage")


@pytest.fixture(scope="module")
def data():
    return toy.device_data(M)


def run(data, ws, *, available=None, method=None, optimizer=None, byzantine=None, **kwargs):
    method = method or toy.bias_method()
    optimizer = optimizer or optax.adam(0.1)
    state = toy.init_states(method, optimizer, M)
    if kwargs.get("server_optimizer") is not None:
        state = state._replace(server=kwargs["server_optimizer"].init(one(state.adapter.params, 0)))
    planned = inputs(ws)
    if available is not None:
        planned = planned._replace(available=jnp.asarray(np.stack(available)))
    if byzantine is not None:
        data = data._replace(byzantine=jnp.asarray(byzantine))
    step = toy.round_step(method, optimizer, **kwargs)
    return state, jax.jit(lambda s, i: run_rounds(step, s, data, i))(state, planned)


def accounted(metrics):
    return np.asarray(metrics["messages_planned"]), sum(np.asarray(metrics[k]) for k in LOST)


def test_offline_devices_keep_their_state_and_nobody_hears_them(data):
    online = np.ones(M, bool)
    online[[1, 4]] = False
    start, (state, metrics) = run(data, [RING], available=[online])
    _, (reference, _) = run(data, [np.asarray(drop_senders(jnp.asarray(RING), jnp.asarray(online)))])
    for i in range(M):
        expected = start if not online[i] else reference
        chex.assert_trees_all_close(one(state.adapter, i), one(expected.adapter, i), rtol=1e-6)
        chex.assert_trees_all_close(one(state.opt_state, i), one(expected.opt_state, i), rtol=1e-6)
    # a ring of 6 has 12 links; each offline device loses its 2 out and 2 in links, none shared
    planned, total = accounted(metrics)
    assert planned[0] == 12 and int(metrics["messages_lost_unavailable"][0]) == 8 and total[0] == 12
    assert int(metrics["online_devices"][0]) == 4 and int(metrics["senders"][0]) == 4
    np.testing.assert_allclose(metrics["train_loss"][0], np.asarray(metrics["device_loss"][0])[online].mean(),
                               rtol=1e-6)


def test_a_server_averages_the_online_clients_and_everyone_downloads_it(data):
    online = np.array([True, False, True, True, False, True])
    start, (state, metrics) = run(data, [SERVER], available=[online], server=True)
    _, (alone, _) = run(data, [np.eye(M)])
    expected = np.asarray(alone.adapter.params["lin"])[online].mean(0)
    np.testing.assert_allclose(state.adapter.params["lin"], np.broadcast_to(expected, (M, toy.C)), rtol=1e-5)
    for i in (1, 4):  # offline clients' optimizer state carries over
        chex.assert_trees_all_close(one(state.opt_state, i), one(start.opt_state, i))
    planned, total = accounted(metrics)
    assert planned[0] == M and total[0] == M and int(metrics["messages_lost_unavailable"][0]) == 2


def test_a_server_that_hears_nobody_leaves_every_device_as_it_was(data):
    start, (state, metrics) = run(data, [SERVER], available=[np.zeros(M, bool)], server=True)
    chex.assert_trees_all_close(state.adapter, start.adapter)
    assert int(metrics["messages_delivered"][0]) == 0 and int(metrics["messages_lost_unavailable"][0]) == M


def test_sign_flipping_devices_send_their_update_reversed(data):
    byzantine = np.zeros(M, bool)
    byzantine[[0, 3]] = True
    poison = make_poison(AttackConfig(kind="sign_flip", share=0.3, scale=2.0))
    start, (state, _) = run(data, [np.eye(M)], poison=poison, centre_at_start=True, byzantine=byzantine)
    _, (honest, _) = run(data, [np.eye(M)])
    p0, p, ph = (np.asarray(s.adapter.params["lin"]) for s in (start, state, honest))
    np.testing.assert_allclose(p[byzantine], p0[byzantine] - 2.0 * (ph - p0)[byzantine], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p[~byzantine], ph[~byzantine], rtol=1e-6)


def test_noise_attackers_send_gaussian_updates():
    poison = make_poison(AttackConfig(kind="noise", share=0.1, noise_std=0.5))
    values = {"a": jnp.ones((200, 100)), "b": jnp.ones(50)}
    sent = poison(values, values, jax.random.key(0))
    noise = np.concatenate([np.ravel(sent["a"] - 1), np.ravel(sent["b"] - 1)])
    assert abs(noise.std() - 0.5) < 0.01 and abs(noise.mean()) < 0.01


def test_label_flippers_train_on_reversed_labels(data):
    byzantine = np.zeros(M, bool)
    byzantine[0] = True
    sgd = optax.sgd(0.5)
    _, (state, _) = run(data, [np.eye(M)], optimizer=sgd, byzantine=byzantine, label_classes=toy.C)
    rows = np.asarray(data.index[0])
    flipped = data._replace(y=data.y.at[rows].set(toy.C - 1 - data.y[rows]))
    _, (expected, _) = run(flipped, [np.eye(M)], optimizer=sgd)
    _, (honest, _) = run(data, [np.eye(M)], optimizer=sgd)
    chex.assert_trees_all_close(state.adapter, expected.adapter, rtol=1e-6)
    assert np.abs(np.asarray(state.adapter.params["lin"][0] - honest.adapter.params["lin"][0])).max() > 1e-2


def test_a_robust_server_rule_shuts_out_a_scaled_attacker(data):
    byzantine = np.zeros(M, bool)
    byzantine[5] = True
    poison = make_poison(AttackConfig(kind="scale", share=0.2, scale=100.0))
    kwargs = dict(poison=poison, centre_at_start=True, byzantine=byzantine, server=True)
    _, (attacked, _) = run(data, [SERVER], **kwargs)
    _, (median, _) = run(data, [SERVER], rule=make_rule(AggregationConfig(rule="median")), **kwargs)
    _, (alone, _) = run(data, [np.eye(M)])
    local = np.array(alone.adapter.params["lin"])
    local[5] = 100.0 * local[5]  # the toy starts at 0, so the scaled update is 100 × its local result
    np.testing.assert_allclose(median.adapter.params["lin"][0], np.median(local, 0), rtol=1e-5)
    np.testing.assert_allclose(attacked.adapter.params["lin"][0], local.mean(0), rtol=1e-5)


def test_fedavgm_without_momentum_at_rate_one_is_fedavg(data):
    sgd = make_server_optimizer(ServerOptimizerConfig(name="fedavgm", learning_rate=1.0, momentum=0.0))
    _, (plain, _) = run(data, [SERVER, SERVER], server=True)
    _, (stepped, _) = run(data, [SERVER, SERVER], server=True, server_optimizer=sgd)
    chex.assert_trees_all_close(stepped.adapter, plain.adapter, rtol=1e-6)


def test_fedadam_steps_on_the_pseudo_gradient(data):
    """One round: m = (1 − β1) g, v = (1 − β2) g², bias-corrected to g and g², so the step is
    −η g / (|g| + τ) with g = global − average (Reddi et al. 2021, Alg. 2)."""
    cfg = ServerOptimizerConfig(name="fedadam", learning_rate=0.05, eps=1e-2)
    start, (state, _) = run(data, [SERVER], server=True, server_optimizer=make_server_optimizer(cfg))
    _, (plain, _) = run(data, [SERVER], server=True)
    x0 = np.asarray(start.adapter.params["lin"][0])
    g = x0 - np.asarray(plain.adapter.params["lin"][0])
    expected = x0 - cfg.learning_rate * g / (np.abs(g) + cfg.eps)
    np.testing.assert_allclose(state.adapter.params["lin"], np.broadcast_to(expected, (M, toy.C)), rtol=1e-5)
    assert int(state.server[0].count) == 1


def test_fedprox_adds_the_proximal_gradient():
    """A loss linear in the bias (gradient c) and SGD at rate η: step 1 moves by −ηc, step 2 by −η(c + μ·(−ηc)),
    so two steps end at θ0 − 2ηc + η²μc."""
    method = toy.bias_method()
    c = jnp.array([1.0, -2.0, 0.5])
    eta, mu = 0.1, 3.0

    def linear_loss(base, x, y, hook):
        return jnp.sum(hook("lin", x[:1])[0] * c)

    train = make_local_train(linear_loss, method, optax.sgd(eta), 2, 1, False, prox_mu=mu)
    state = method.init(jax.random.key(0), toy.LAYERS)
    state = state._replace(params={"lin": jnp.array([0.3, 0.1, -0.2])})
    d = toy.device_data(1)
    out, _, _ = train(state, optax.sgd(eta).init(state.params), d.base, d.x, d.y, d.index[0], d.n[0],
                      jax.random.key(1))
    np.testing.assert_allclose(out.params["lin"], state.params["lin"] - 2 * eta * c + eta ** 2 * mu * c, rtol=1e-6)


def test_a_straggler_does_its_first_steps_only():
    """E = 4 with a budget of 2 steps is E = 2: the masked steps leave params and optimizer state alone."""
    method, opt = toy.bias_method(), optax.adam(0.1)
    d = toy.device_data(1)
    state = method.init(jax.random.key(0), toy.LAYERS)
    args = (state, opt.init(state.params), d.base, d.x, d.y, d.index[0], d.n[0], jax.random.key(1))
    short = make_local_train(toy.OBJECTIVE.loss, method, opt, 2, 4, False)(*args)
    masked = make_local_train(toy.OBJECTIVE.loss, method, opt, 4, 4, False)(*args, steps=jnp.int32(2))
    full = make_local_train(toy.OBJECTIVE.loss, method, opt, 4, 4, False)(*args)
    chex.assert_trees_all_close(masked, short, rtol=1e-6)
    assert np.abs(np.asarray(full[0].params["lin"] - short[0].params["lin"])).max() > 1e-3


@pytest.mark.parametrize("drop", [False, True])
def test_late_devices_send_partial_work_or_miss_the_deadline(data, drop):
    steps = np.array([2, 1, 2, 2, 1, 2], np.int32)  # of 2 local steps: devices 1 and 4 are late
    method, opt = toy.bias_method(), optax.adam(0.1)
    state = toy.init_states(method, opt, M)
    step = toy.round_step(method, opt, server=True, drop_late=drop)
    planned = inputs([SERVER])._replace(steps=jnp.asarray(steps[None]))
    new, metrics = jax.jit(lambda s, i: run_rounds(step, s, data, i))(state, planned)
    one_step = toy.round_step(method, opt, local_steps=1)
    _, (alone, _) = run(data, [np.eye(M)])
    alone_short = run_rounds(one_step, state, data, inputs([np.eye(M)]))[0]
    local = np.array(alone.adapter.params["lin"])
    local[[1, 4]] = np.asarray(alone_short.adapter.params["lin"])[[1, 4]]  # what a late device has by the deadline
    on_time = np.array([True, False, True, True, False, True])
    expected = local[on_time].mean(0) if drop else local.mean(0)
    np.testing.assert_allclose(new.adapter.params["lin"], np.broadcast_to(expected, (M, toy.C)), rtol=1e-5)
    assert int(metrics["late_devices"][0]) == 2 and float(metrics["local_steps_mean"][0]) == pytest.approx(10 / 6)
    assert int(metrics["messages_lost_late"][0]) == (2 if drop else 0)
    planned_count, total = accounted(metrics)
    assert planned_count[0] == total[0] == M


def test_scaffold_corrects_every_local_gradient():
    """A loss linear in the bias (gradient g) and SGD at rate η: E steps with correction c − c_i end at
    θ0 − Eη(g + c − c_i)."""
    method = toy.bias_method()
    g, corr = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, 0.3, -1.0])
    train = make_local_train(lambda base, x, y, hook: jnp.sum(hook("lin", x[:1])[0] * g), method, optax.sgd(0.1),
                             3, 1, False)
    state = method.init(jax.random.key(0), toy.LAYERS)
    d = toy.device_data(1)
    out, _, _ = train(state, optax.sgd(0.1).init(state.params), d.base, d.x, d.y, d.index[0], d.n[0],
                      jax.random.key(1), correction={"lin": corr})
    np.testing.assert_allclose(out.params["lin"], -3 * 0.1 * (g + corr), rtol=1e-6)


def test_scaffold_variates_after_a_round(data):
    """Round 1 (all variates 0) is FedAvg's; then a delivering client's c_i = (x − y_i)/(Eη) and the server's
    c = (1/N) Σ over those clients; a client not sampled keeps c_i = 0 and sends nothing for it."""
    from jaxdfl.sim.state import Variates

    method, eta = toy.bias_method(), 0.5
    sampled = np.array([0, 2, 3, 5])
    w = graphs.server_average(np.ones(M), sampled)
    state = toy.init_states(method, optax.sgd(eta), M)
    zeros = jax.tree.map(jnp.zeros_like, state.adapter.params)
    state = state._replace(variates=Variates(zeros, one(zeros, 0)))
    active = [jnp.asarray(sampled, jnp.int32)]
    step = toy.round_step(method, optax.sgd(eta), server=True, scaffold_lr=eta)
    new, metrics = run_rounds(step, state, data, inputs([w], active=active))
    plain, plain_metrics = run_rounds(toy.round_step(method, optax.sgd(eta), server=True), state, data,
                                      inputs([w], active=active))
    chex.assert_trees_all_close(new.adapter, plain.adapter, rtol=1e-6)
    alone, _ = run_rounds(toy.round_step(method, optax.sgd(eta)), state, data, inputs([np.eye(M)], active=active))
    y = np.asarray(alone.adapter.params["lin"])  # each sampled client's local result from x = 0
    c_i = np.zeros_like(y)
    c_i[sampled] = (0.0 - y[sampled]) / (2 * eta)  # E = 2 local steps
    np.testing.assert_allclose(new.variates.client["lin"], c_i, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new.variates.server["lin"], c_i.sum(0) / M, rtol=1e-5, atol=1e-7)
    assert float(metrics["uplink_params"][0] - plain_metrics["uplink_params"][0]) == len(sampled) * toy.C


def test_fedavgm_steps_with_momentum_on_the_pseudo_gradient():
    """Two rounds at rate η and momentum β: the first step is η g1, the second η (g2 + β g1), with
    g = global − average and each round's average from clients that trained from that round's global."""
    eta, beta = 0.5, 0.9
    opt = make_server_optimizer(ServerOptimizerConfig(name="fedavgm", learning_rate=eta, momentum=beta))
    data = toy.device_data(M)
    method = toy.bias_method()
    step = toy.round_step(method, optax.sgd(0.5), server=True, server_optimizer=opt)
    plain = toy.round_step(method, optax.sgd(0.5), server=True)
    state = toy.init_states(method, optax.sgd(0.5), M)
    state = state._replace(server=opt.init(one(state.adapter.params, 0)))
    x0 = np.asarray(state.adapter.params["lin"][0])
    after_one, _ = run_rounds(step, state, data, inputs([SERVER]))
    g1 = x0 - np.asarray(run_rounds(plain, state, data, inputs([SERVER]))[0].adapter.params["lin"][0])
    x1 = np.asarray(after_one.adapter.params["lin"][0])
    np.testing.assert_allclose(x1, x0 - eta * g1, rtol=1e-5, atol=1e-7)
    after_two, _ = run_rounds(step, after_one, data, inputs([SERVER], first=1))
    averaged = run_rounds(plain, after_one._replace(server=()), data, inputs([SERVER], first=1))[0]
    g2 = x1 - np.asarray(averaged.adapter.params["lin"][0])
    np.testing.assert_allclose(after_two.adapter.params["lin"][0], x1 - eta * (g2 + beta * g1), rtol=1e-5,
                               atol=1e-7)


def buffered_run(data, steps_per_round, size, exponent=0.5):
    """FedBuff on the SERVER toy: ``(start state, (state, metrics))`` after one round per entry of
    ``steps_per_round`` (each device's local steps that round, of 2)."""
    from jaxdfl.federation.buffered import initial_buffer

    method, opt = toy.bias_method(), optax.adam(0.1)
    state = toy.init_states(method, opt, M)
    state = state._replace(buffer=initial_buffer(one(state.adapter.params, 0), M))
    step = toy.round_step(method, opt, server=True, centre_at_start=True, buffer=(size, exponent))
    planned = inputs([SERVER] * len(steps_per_round))
    if steps_per_round[0] is not None:
        planned = planned._replace(steps=jnp.asarray(np.stack(steps_per_round), jnp.int32))
    return state, jax.jit(lambda s, i: run_rounds(step, s, data, i))(state, planned)


def test_buffered_aggregation_with_one_round_jobs_is_fedavg(data):
    _, (fedavg, _) = run(data, [SERVER, SERVER], server=True)
    _, (buffered, metrics) = buffered_run(data, [None, None], size=M)
    chex.assert_trees_all_close(buffered.buffer.global_params, one(fedavg.adapter.params, 0), rtol=1e-5)
    chex.assert_trees_all_close(buffered.adapter.params, fedavg.adapter.params, rtol=1e-5)
    np.testing.assert_array_equal(metrics["server_steps"], [1, 2])
    np.testing.assert_array_equal(metrics["staleness_mean"], [0, 0])


def test_buffered_aggregation_by_hand(data):
    """Devices 1 and 4 do 1 of 2 steps a round, so their jobs take two rounds. Round 1: the other four arrive,
    fill the buffer of 4, and the server steps to g1 = mean of their updates; 1 and 4 keep g0. Round 2: all six
    arrive, 1 and 4 with τ = 1 (their update from g0, weighted 2^-1/2), the rest from g1."""
    slow = np.array([False, True, False, False, True, False])
    steps = np.where(slow, 1, 2).astype(np.int32)
    start, (state, metrics) = buffered_run(data, [steps, steps], size=4)
    method, opt = toy.bias_method(), optax.adam(0.1)
    alone = toy.round_step(method, opt)  # every device trains by itself: W = I
    first = run_rounds(alone, start, data, inputs([np.eye(M)]))[0]
    y1 = np.asarray(first.adapter.params["lin"])
    g1 = y1[~slow].mean(0)
    adapter, opt_state = jax.tree.map(  # the fast devices after round 1, the slow ones as they started
        lambda new, old: jnp.where(jnp.asarray(~slow).reshape(-1, *[1] * (new.ndim - 1)), new, old),
        (first.adapter, first.opt_state), (start.adapter, start.opt_state))
    mid = toy.init_states(method, opt, M)._replace(
        adapter=adapter._replace(params={"lin": jnp.where(slow[:, None], 0.0, g1)}), opt_state=opt_state)
    y2 = np.asarray(run_rounds(alone, mid, data, inputs([np.eye(M)], first=1))[0].adapter.params["lin"])
    delta = np.where(slow[:, None], 2 ** -0.5 * (y2 - 0.0), y2 - g1)
    g2 = g1 + delta.sum(0) / M  # weights 1/6 each, summing to 1 over the six arrivals
    np.testing.assert_allclose(state.buffer.global_params["lin"], g2, rtol=1e-5)
    np.testing.assert_allclose(state.adapter.params["lin"], np.broadcast_to(g2, (M, toy.C)), rtol=1e-5)
    np.testing.assert_array_equal(metrics["messages_planned"], [4, 6])
    np.testing.assert_array_equal(metrics["messages_delivered"], [4, 6])
    np.testing.assert_array_equal(metrics["in_flight"], [2, 0])
    np.testing.assert_array_equal(metrics["server_steps"], [1, 2])
    np.testing.assert_allclose(metrics["staleness_mean"], [0, 2 / 6])


def test_a_buffer_not_full_holds_the_global_model(data):
    slow = np.array([False, True, False, False, True, False])
    start, (state, metrics) = buffered_run(data, [np.where(slow, 1, 2).astype(np.int32)], size=5)
    chex.assert_trees_all_close(state.buffer.global_params, one(start.adapter.params, 0))
    assert int(metrics["server_steps"][0]) == 0 and int(metrics["buffer_updates"][0]) == 4
    assert int(state.buffer.count) == 4 and float(state.buffer.weight) == pytest.approx(4 / 6)
