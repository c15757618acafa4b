"""Robust aggregation rules against NumPy hand computations, and the robust mix against the plain one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.core import Message
from jaxdfl.federation import (clipped_mean, coordinate_median, krum_scores, multi_krum, robust_mix, trimmed_mean,
                               weighted_mean)
from jaxdfl.federation.aggregators import make_rule
from jaxdfl.federation.config import AggregationConfig
from jaxdfl.topology import graphs, mix
from jaxdfl.topology.neighbours import from_edges

D, P = 7, 9


@pytest.fixture
def view():
    """One receiver's view: 7 senders (sender 5 not heard), 9 entries, a random presence mask with every entry
    held by at least two heard senders, one outlying sender (3)."""
    rng = np.random.default_rng(0)
    u = rng.normal(size=(D, P)).astype(np.float32)
    u[3] += 40.0
    weight = rng.uniform(0.5, 1.5, D).astype(np.float32)
    weight[5] = 0.0
    present = rng.random((D, P)) < 0.7
    present[:2] = True
    present &= weight[:, None] > 0
    return u, present, weight


def _sets(u, present):
    return [u[present[:, p], p] for p in range(P)]


def test_weighted_mean_and_median_per_entry(view):
    u, present, weight = view
    mean = [np.sum(weight[present[:, p]] * u[present[:, p], p]) / weight[present[:, p]].sum() for p in range(P)]
    np.testing.assert_allclose(weighted_mean(u, present, weight), mean, rtol=1e-5)
    np.testing.assert_allclose(coordinate_median(u, present, weight), [np.median(s) for s in _sets(u, present)],
                               rtol=1e-6)


@pytest.mark.parametrize("trim", [0.0, 0.2, 0.4])
def test_trimmed_mean_drops_the_same_count_at_each_end(view, trim):
    u, present, weight = view
    expected = []
    for s in _sets(u, present):
        cut = int(np.floor(trim * len(s)))
        expected.append(np.sort(s)[cut:len(s) - cut].mean())
    np.testing.assert_allclose(trimmed_mean(u, present, weight, trim), expected, rtol=1e-5)


def _krum_by_hand(u, present, weight, f):
    v = np.where(present, u, 0.0)
    heard = np.flatnonzero(weight > 0)
    n = len(heard)
    k = min(max(n - f - 2, 1), n - 1)
    scores = np.full(D, np.inf)
    for i in heard:
        d = sorted(np.sum((v[i] - v[j]) ** 2) for j in heard if j != i)
        scores[i] = sum(d[:k])
    return scores


@pytest.mark.parametrize("f", [1, 2, 10])
def test_krum_scores_sum_the_nearest_heard_senders(view, f):
    u, present, weight = view
    np.testing.assert_allclose(krum_scores(u, present, weight, f), _krum_by_hand(u, present, weight, f), rtol=1e-4)


@pytest.mark.parametrize("select", [1, 3, 0])
def test_multi_krum_averages_the_best_scored_senders(view, select):
    u, present, weight = view
    f = 1
    scores = _krum_by_hand(u, present, weight, f)
    m = select if select else int((weight > 0).sum()) - f
    chosen = np.argsort(scores)[:m]
    assert 3 not in chosen  # the outlier is never picked
    keep = np.zeros(D, bool)
    keep[chosen] = True
    expected = weighted_mean(u, present & keep[:, None], np.where(keep, weight, 0))
    np.testing.assert_allclose(multi_krum(u, present, weight, f, select), expected, rtol=1e-5)


def test_norm_clip_scales_each_update_to_the_bound(view):
    u, present, weight = view
    v = np.where(present, u, 0.0)
    scale = np.minimum(1.0, 2.0 / np.linalg.norm(v, axis=1))
    expected = weighted_mean(u * scale[:, None], present, weight)
    np.testing.assert_allclose(clipped_mean(u, present, weight, 2.0), expected, rtol=1e-5)
    assert scale[3] < 0.1  # the outlier is clipped hard


def _messages(m, masked):
    rng = np.random.default_rng(1)
    values = {"x": jnp.asarray(rng.normal(size=(m, 3, 2)), jnp.float32), "y": jnp.asarray(rng.normal(size=(m, 4)),
                                                                                           jnp.float32)}
    mask = None
    if masked:
        mask = jax.tree.map(lambda v: jnp.asarray(rng.random(v.shape) < 0.6, jnp.float32), values)
    return Message(values, mask, jnp.float32(0), jnp.float32(0))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("form", ["dense", "neighbours"])
def test_the_mean_rule_is_the_plain_mix(masked, form):
    m = 6
    message = _messages(m, masked)
    w = graphs.metropolis_hastings(graphs.ring_adjacency(m))
    if form == "neighbours":
        w = jax.tree.map(jnp.asarray, from_edges(graphs.ring_edges(m), m, "metropolis"))
    plain = mix(w, message)
    robust = robust_mix(weighted_mean, w, message, jax.tree.map(lambda v: 0.3 * v, message.values))
    if masked:  # where nobody sent an entry both give 0
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), robust.mass, plain.mass)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), robust.values, plain.values)


def test_a_server_runs_the_rule_once_and_everyone_gets_it():
    m = 5
    message = _messages(m, False)
    w = graphs.server_average(np.ones(m), np.array([0, 2, 3]))
    out = robust_mix(make_rule(AggregationConfig(rule="median")), w, message, None, server=True)
    expected = jax.tree.map(lambda v: np.median(np.asarray(v)[[0, 2, 3]], axis=0), message.values)
    for name in expected:
        np.testing.assert_allclose(out.values[name], np.broadcast_to(expected[name], out.values[name].shape),
                                   rtol=1e-6)


def test_dense_messages_keep_the_row_scale_of_unbiased_weights():
    """Paper B's unbiased server weights do not sum to one: the robust result is scaled like the plain sum."""
    m = 4
    message = _messages(m, False)
    w = graphs.server_average(np.ones(m), np.array([1, 2]), unbiased=True)  # weights 2 · 1/4 = 0.5 each
    out = robust_mix(weighted_mean, w, message, None, server=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), out.values, mix(w, message).values)
