import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SMALL
from jaxdfl.adapters import sparse_lora
from jaxdfl.adapters.soft import orthogonality_penalty
from jaxdfl.config import load_config
from jaxdfl.errors import ConfigError
from jaxdfl.metrics import lora_covariance
from jaxdfl.core import RoundControl
from jaxdfl.sim.build import build_simulation

LAYERS = {"x": (9, 7), "y": (7, 5)}


@pytest.mark.parametrize("selector", ["soft", "tlora", "rlora", "slora"])
def test_error_feedback_loses_nothing(selector):
    """memory + everything sent = everything accumulated, over many rounds with a moving global model."""
    method = sparse_lora(selector, rank=3, ratio=0.3, error_feedback=True)
    state = method.init(jax.random.key(0), LAYERS)
    encode = jax.jit(method.encode)
    total_update = jax.tree.map(jnp.zeros_like, state.params)
    total_sent = jax.tree.map(jnp.zeros_like, state.params)
    for t in range(60):
        ref = state.params
        local = jax.tree.map(lambda p, k=t: p + 0.1 * jax.random.normal(jax.random.key(k), p.shape), ref)
        total_update = jax.tree.map(lambda s, a, b: s + a - b, total_update, local, ref)
        message, state = encode(state._replace(params=local), ref, jax.random.key(100 + t), RoundControl())
        total_sent = jax.tree.map(jnp.add, total_sent, message.values)
        jax.tree.map(np.testing.assert_array_equal, state.params, ref)  # the client falls back to the global model
        state = state._replace(params=jax.tree.map(lambda p, s: p + 0.5 * s, ref, message.values))  # new global
    residual = jax.tree.map(lambda u, s, m: u - s - m, total_update, total_sent, state.memory)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(residual)) < 1e-4
    assert max(float(jnp.abs(m).max()) for m in jax.tree.leaves(state.memory)) > 1e-3  # memory really holds something


def test_without_error_feedback_the_message_is_the_sparsified_delta():
    method = sparse_lora("tlora", rank=2, ratio=0.5, error_feedback=False)
    state = method.init(jax.random.key(0), LAYERS)
    local = jax.tree.map(lambda p: p + 1.0, state.params)
    message, new = method.encode(state._replace(params=local), state.params, jax.random.key(1), RoundControl())
    assert new.memory == ()
    for v in jax.tree.leaves(message.values):
        assert set(np.unique(np.asarray(v))) <= {0.0, 1.0}


def test_orthogonality_penalty_is_the_off_diagonal_gram_mass():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 3)))
    assert float(orthogonality_penalty({"b": jnp.asarray(q), "a": jnp.asarray(q.T)})) < 1e-10
    b = np.random.default_rng(1).normal(size=(8, 3))
    a = np.random.default_rng(2).normal(size=(3, 5))
    gb, ga = b.T @ b, a @ a.T
    expected = (gb ** 2).sum() - (np.diag(gb) ** 2).sum() + (ga ** 2).sum() - (np.diag(ga) ** 2).sum()
    np.testing.assert_allclose(orthogonality_penalty({"b": jnp.asarray(b), "a": jnp.asarray(a)}), expected, rtol=1e-4)


def test_gram_offdiagonal_measures_how_orthogonal_b_columns_are():
    from jaxdfl.metrics import gram_offdiagonal

    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(9, 3)))
    assert float(gram_offdiagonal(jnp.asarray(q * [1.0, 2.0, 3.0]))) == pytest.approx(0.0, abs=1e-6)
    same = jnp.ones((5, 4))  # four equal columns
    assert float(gram_offdiagonal(same)) == pytest.approx(np.sqrt(1 - 1 / 4), rel=1e-6)
    b = np.random.default_rng(1).normal(size=(6, 2))
    gram = b.T @ b
    assert float(gram_offdiagonal(jnp.asarray(b))) == pytest.approx(
        np.sqrt(2) * abs(gram[0, 1]) / np.linalg.norm(gram), rel=1e-5)
    assert float(gram_offdiagonal(jnp.zeros((4, 2)))) == 0.0


def test_covariance_is_zero_for_identical_clients_and_matches_numpy():
    rng = np.random.default_rng(0)
    b, a = rng.normal(size=(1, 6, 2)), rng.normal(size=(1, 2, 4))
    same = {"l": {"b": jnp.asarray(np.repeat(b, 3, 0)), "a": jnp.asarray(np.repeat(a, 3, 0))}}
    assert float(lora_covariance(same, jnp.array([1.0, 2.0, 3.0]))) < 1e-5
    layers = {n: {"b": rng.normal(size=(4, 6, 2)), "a": rng.normal(size=(4, 2, 5))} for n in ("l1", "l2")}
    w = np.array([1.0, 3.0, 2.0, 2.0])
    p = w / w.sum()
    sq = 0.0
    for f in layers.values():
        prod = sum(p[k] * f["b"][k] @ f["a"][k] for k in range(4))
        mean = sum(p[k] * f["b"][k] for k in range(4)) @ sum(p[k] * f["a"][k] for k in range(4))
        sq += ((prod - mean) ** 2).sum()
    got = lora_covariance(jax.tree.map(jnp.asarray, layers), jnp.asarray(w))
    np.testing.assert_allclose(got, np.sqrt(sq), rtol=1e-4)


SERVER = {**SMALL, "num_devices": 10, "rounds": 3, "eval_every": 3,
          "data": {"partition": "shards", "num_shards": 2},
          "topology": {"name": "server", "clients_per_round": 3, "server_weights": "unbiased"}}


def _run(overrides):
    sim = build_simulation(load_config(SERVER, overrides))
    state = sim.init_fn(jax.random.key(0))
    state, metrics = sim.run_rounds(state, sim.inputs(0, 3))
    history = [jax.tree.map(lambda a, r=r: np.asarray(a[r]), metrics) for r in range(3)]
    return sim, state, history


def test_soft_with_ratio_one_is_ilora():
    _, s_soft, m_soft = _run(["method.name=soft", "method.ratio=1.0"])
    _, s_ilora, m_ilora = _run(["method.name=ilora"])
    jax.tree.map(np.testing.assert_array_equal, s_soft.adapter.params, s_ilora.adapter.params)
    assert [m["uplink_params"] for m in m_soft] == [m["uplink_params"] for m in m_ilora]


def test_server_round_trains_only_the_sampled_clients():
    sim, state, history = _run(["method.name=soft", "method.ratio=0.25"])
    last = sim.topology.active(2)
    w = sim.topology.mixing(2)
    assert len(last) == 3 and np.allclose(w[0, last], 10 / 3 * sim.data.n[last] / sim.data.n.sum())
    # every client holds the same global model; clients never sampled still hold zero memory
    for leaf in jax.tree.leaves(state.adapter.params):
        np.testing.assert_allclose(leaf, np.broadcast_to(leaf[0], leaf.shape), atol=1e-6)
    ever = set(np.concatenate([sim.topology.active(r) for r in range(3)]).tolist())
    memory = np.stack([np.abs(np.asarray(m)).reshape(10, -1).max(1) for m in jax.tree.leaves(state.adapter.memory)]).max(0)
    assert all(memory[i] == 0 for i in range(10) if i not in ever) and all(memory[i] > 0 for i in ever)
    per_layer = {n: int(round(0.25 * sim.config.method.rank * sum(s))) for n, s in sim.layers.items()}
    assert all(m["uplink_params"] == 3 * sum(per_layer.values()) for m in history)
    assert all(m["covariance_fro"] > 0 for m in history[1:])


def test_unbiased_weights_need_a_delta_method():
    with pytest.raises(ConfigError, match="server_weights"):
        load_config(SERVER, ["method.name=lora"])
