"""Paper A's device-to-device network: A(8) delays, A(25) minimum power, outages and their accounting."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.network import (LinkBudget, channel_gains, deliver, disk_positions, distances, link_delay, min_power,
                            random_walk, serve_links, trajectory)

BUDGET = LinkBudget(bandwidth=1e6, delay_bound=0.5, power_max=0.1, noise=1e-13, path_loss_exp=3.5)


@pytest.mark.parametrize("jit", [False, True])
def test_min_power_meets_the_delay_bound_exactly(jit):
    rng = np.random.default_rng(0)
    bits = rng.uniform(1e3, 2e6, size=50)
    links = rng.integers(1, 9, size=50).astype(np.float64)
    gain = rng.uniform(1e-12, 1e-6, size=50)
    power_fn = jax.jit(min_power) if jit else min_power
    p = power_fn(bits, links, 1e6, 0.5, gain, 1e-13)
    delay = link_delay(bits, p, gain, 1e6, links, 1e-13)
    np.testing.assert_allclose(delay, 0.5, rtol=1e-4)
    # a little less power misses the bound; the closed form is A(25) itself
    assert (np.asarray(link_delay(bits, 0.99 * p, gain, 1e6, links, 1e-13)) > 0.5).all()
    np.testing.assert_allclose(p, 1e-13 / gain * (2.0 ** (bits * links / (1e6 * 0.5)) - 1), rtol=1e-4)


def test_served_links_fit_the_power_budget_and_are_the_most_links_that_can():
    rng = np.random.default_rng(1)
    m = 7
    for case in range(20):
        planned = (rng.random((m, m)) < 0.6) & ~np.eye(m, dtype=bool)
        gain = rng.uniform(1e-11, 1e-8, (m, m))
        bits = rng.uniform(1e5, 2e6, m)
        served, power = serve_links(jnp.asarray(planned), jnp.asarray(bits, jnp.float32),
                                    jnp.asarray(gain, jnp.float32), BUDGET)
        served, power = np.asarray(served), np.asarray(power)
        assert not (served & ~planned).any()
        assert (power.sum(1) <= BUDGET.power_max * (1 + 1e-5)).all(), f"case {case}"
        for j in range(m):  # brute force: no larger subset of j's planned links fits p_max
            targets = np.flatnonzero(planned[j])
            best = 0
            for k in range(len(targets), 0, -1):
                if any(min_power(bits[j], k, 1e6, 0.5, gain[j, list(c)], 1e-13).sum() <= BUDGET.power_max
                       for c in itertools.combinations(targets, k)):
                    best = k
                    break
            assert served[j].sum() == best, f"case {case}, sender {j}"


def test_deliver_loses_no_message_silently_and_renormalises():
    m = 8
    positions = disk_positions(jax.random.key(0), m, 800.0)
    w = jnp.full((m, m), 1.0 / m)
    bits = jnp.full((m,), 1.5e6)
    for r in range(5):
        gain = channel_gains(jax.random.key(r), distances(positions), BUDGET.path_loss_exp)
        delivered, report = deliver(w, bits, gain, BUDGET)
        delivered = np.asarray(delivered)
        off_diag = ~np.eye(m, dtype=bool)
        arrived = int(((delivered != 0) & off_diag).sum())
        assert int(report.links) == m * (m - 1)
        assert int(report.delivered) == arrived  # the mixing matrix uses exactly the served links
        assert int(report.links) == int(report.delivered) + int(report.outages)  # sent = delivered + lost
        np.testing.assert_allclose(delivered.sum(1), 1.0, rtol=1e-5)
        assert (np.diag(delivered) > 0).all()
        if int(report.delivered):
            assert float(report.max_delay_s) == pytest.approx(BUDGET.delay_bound, rel=1e-3)
        assert float(report.energy_j) >= 0
    assert int(report.outages) > 0, "the test's distances and message size should cause some outages"


def test_channel_gain_is_path_loss_times_unit_mean_fading():
    dist = jnp.full((200, 200), 100.0)
    gain = np.asarray(channel_gains(jax.random.key(0), dist, 3.0))
    assert gain.mean() * 100.0 ** 3 == pytest.approx(1.0, rel=0.02)  # E[ρ] = 1 over 40,000 draws
    np.testing.assert_allclose(channel_gains(None, dist, 3.0), 1e-6)


def test_positions_stay_in_the_disk_and_trajectories_replay():
    p = disk_positions(jax.random.key(0), 500, 50.0)
    assert float(jnp.linalg.norm(p, axis=1).max()) <= 50.0
    q = random_walk(jax.random.key(1), p, 20.0, 50.0)
    assert float(jnp.linalg.norm(q, axis=1).max()) <= 50.0 + 1e-4 and float(jnp.abs(q - p).max()) > 0
    walk = trajectory(10, 50.0, 5.0, seed=3)
    late = walk(6)
    np.testing.assert_array_equal(trajectory(10, 50.0, 5.0, seed=3)(6), late)  # resume-safe
    np.testing.assert_array_equal(trajectory(10, 50.0, 0.0, seed=3)(6), walk(0))  # static
