"""Client-level differential privacy: clipping and noise against hand computations, and ε(δ) against
dp-accounting's own numbers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, NeighboringRelation, SampledWithoutReplacementDpEvent
from dp_accounting.rdp import RdpAccountant

import jaxdfl
from jaxdfl.core import Message
from jaxdfl.errors import ConfigError
from jaxdfl.federation.config import PrivacyConfig
from jaxdfl.federation.privacy import central_dp_mix, epsilon_after, local_dp
from jaxdfl.topology import graphs

M = 5


def _message(scale=1.0):
    rng = np.random.default_rng(0)
    values = {"a": jnp.asarray(scale * rng.normal(size=(M, 40, 30)), jnp.float32),
              "b": jnp.asarray(scale * rng.normal(size=(M, 7)), jnp.float32)}
    return Message(values, None, jnp.float32(0), jnp.float32(0))


def _flat(tree, i):
    return np.concatenate([np.ravel(np.asarray(x)[i]) for x in jax.tree.leaves(tree)])


def test_central_dp_clips_each_update_and_noises_the_weighted_sum():
    message = _message(scale=3.0)
    centre = jax.tree.map(lambda v: jnp.broadcast_to(0.5 * v[:1], v.shape), message.values)  # the global model
    w = graphs.server_average(np.arange(1.0, M + 1), np.array([0, 1, 3]))
    clip = 2.0
    updates = np.stack([_flat(message.values, j) - _flat(centre, 0) for j in range(M)])
    clipped = updates * np.minimum(1.0, clip / np.linalg.norm(updates, axis=1, keepdims=True))
    expected = _flat(centre, 0) + w[0] @ clipped
    quiet = central_dp_mix(jnp.asarray(w), message, centre, clip, 0.0, jax.random.key(0))
    for i in range(M):  # every device receives the same aggregate
        np.testing.assert_allclose(_flat(quiet.values, i), expected, rtol=1e-5, atol=1e-5)
    noisy = central_dp_mix(jnp.asarray(w), message, centre, clip, 1.5, jax.random.key(0))
    noise = _flat(noisy.values, 0) - expected
    std = 1.5 * clip * w[0].max()  # z · C · max_j a_j
    assert abs(noise.std() / std - 1) < 0.05 and abs(noise.mean()) < 0.1 * std


def test_local_dp_clips_then_adds_noise_of_z_times_c():
    values = jax.tree.map(lambda v: v[0], _message(scale=3.0).values)
    centre = jax.tree.map(lambda v: 0.25 * v, values)
    update = _flat(jax.tree.map(lambda v: v[None], values), 0) - _flat(jax.tree.map(lambda v: v[None], centre), 0)
    quiet = local_dp(values, centre, jax.random.key(1), 1.0, 0.0)
    sent = _flat(jax.tree.map(lambda v: v[None], quiet), 0) - _flat(jax.tree.map(lambda v: v[None], centre), 0)
    np.testing.assert_allclose(sent, update / np.linalg.norm(update), rtol=1e-5, atol=1e-6)
    noisy = local_dp(values, centre, jax.random.key(1), 1.0, 0.8)
    noise = _flat(jax.tree.map(lambda v: v[None], noisy), 0) - _flat(jax.tree.map(lambda v: v[None], quiet), 0)
    assert abs(noise.std() / 0.8 - 1) < 0.05


@pytest.mark.parametrize("mechanism, k", [("central", 10), ("central", 100), ("local", 10)])
def test_epsilon_is_dp_accountings_own(mechanism, k):
    cfg = PrivacyConfig(mechanism=mechanism, noise_multiplier=1.2, delta=1e-5)
    gaussian = GaussianDpEvent(0.6)  # replace-one: the sensitivity of a clipped update is 2C
    event = SampledWithoutReplacementDpEvent(100, k, gaussian) if mechanism == "central" and k < 100 else gaussian
    for rounds in (1, 20):
        accountant = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
        accountant.compose(event, rounds)
        assert epsilon_after(cfg, 100, k, rounds) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
    assert epsilon_after(cfg, 100, k, 20) > epsilon_after(cfg, 100, k, 1)
    assert epsilon_after(PrivacyConfig(mechanism=mechanism, noise_multiplier=0.0), 100, k, 1) == float("inf")


def test_sampling_fewer_clients_spends_less():
    cfg = PrivacyConfig(mechanism="central", noise_multiplier=1.0)
    assert epsilon_after(cfg, 100, 10, 50) < epsilon_after(cfg, 100, 100, 50)


def test_privacy_settings_are_checked():
    with pytest.raises(ConfigError, match="needs topology.name=server"):
        jaxdfl.load_config(None, ["privacy.mechanism=central"])
    with pytest.raises(ConfigError, match="aggregation.rule: mean"):
        jaxdfl.load_config(None, ["privacy.mechanism=central", "topology.name=server", "aggregation.rule=median"])


def test_a_private_run_logs_its_budget_every_round(tmp_path):
    overrides = ["rounds=2", "num_devices=6", "local_steps=2", "batch_size=8", "eval_every=2",
                 "topology.name=server", "topology.clients_per_round=3", "privacy.mechanism=central",
                 "privacy.noise_multiplier=1.0", "privacy.clip_norm=0.5"]
    summary, _ = jaxdfl.run(None, overrides, out=tmp_path / "run", progress=False)
    cfg = PrivacyConfig(mechanism="central", noise_multiplier=1.0, clip_norm=0.5)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    eps = [json.loads(line)["epsilon"] for line in lines]
    assert eps == [epsilon_after(cfg, 6, 3, 1), epsilon_after(cfg, 6, 3, 2)]
    assert summary["epsilon"] == eps[-1] and summary["delta"] == 1e-5 and np.isfinite(summary["final_accuracy"])


def test_poisson_sampling_is_accounted_as_dp_accounting_does():
    from dp_accounting import PoissonSampledDpEvent

    cfg = PrivacyConfig(mechanism="central", sampling="poisson", sample_rate=0.05, noise_multiplier=1.1)
    for rounds in (1, 30):
        accountant = RdpAccountant()  # add or remove one client
        accountant.compose(PoissonSampledDpEvent(0.05, GaussianDpEvent(1.1)), rounds)
        assert epsilon_after(cfg, 200, 0, rounds) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)


def test_poisson_rounds_divide_by_the_expected_count():
    """McMahan et al.'s fixed denominator: the clients heard each count 1/(qN), however many came."""
    message = _message(scale=3.0)
    w = graphs.server_average(np.ones(M), np.array([1, 4]))  # two clients drew themselves this round
    fixed = 1.0 / (0.4 * M)
    updates = np.stack([_flat(message.values, j) for j in range(M)])
    clipped = updates * np.minimum(1.0, 1.5 / np.linalg.norm(updates, axis=1, keepdims=True))
    out = central_dp_mix(jnp.asarray(w), message, None, 1.5, 0.0, jax.random.key(0), fixed_weight=fixed)
    np.testing.assert_allclose(_flat(out.values, 0), fixed * (clipped[1] + clipped[4]), rtol=1e-5, atol=1e-6)
    noisy = central_dp_mix(jnp.asarray(w), message, None, 1.5, 2.0, jax.random.key(0), fixed_weight=fixed)
    assert abs((_flat(noisy.values, 0) - _flat(out.values, 0)).std() / (2.0 * 1.5 * fixed) - 1) < 0.05


def test_a_poisson_run_plans_the_clients_it_draws(tmp_path):
    from jaxdfl.federation import poisson_plan

    overrides = ["rounds=3", "num_devices=10", "local_steps=1", "batch_size=8", "eval_every=3", "topology.name=server",
                 "privacy.mechanism=central", "privacy.sampling=poisson", "privacy.sample_rate=0.3"]
    summary, _ = jaxdfl.run(None, overrides, out=tmp_path / "run", progress=False)
    cfg = jaxdfl.load_config(None, overrides)
    drawn = poisson_plan(cfg.privacy, 10, 0, None)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["messages_planned"] for r in lines] == [int(drawn(r).sum()) for r in range(3)]
    assert all(r["messages_lost_unavailable"] == 0 for r in lines)
    assert [r["epsilon"] for r in lines] == [epsilon_after(cfg.privacy, 10, 0, r) for r in (1, 2, 3)]
