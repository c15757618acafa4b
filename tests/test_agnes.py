"""AGNES cluster topology (Paper A §IV-C): every cluster meets the collision cap and the power budget, no two
clusters could still merge, and the merge order matches a naive re-implementation."""

import numpy as np
import pytest

from jaxdfl.metrics import collision_rate
from jaxdfl.network import min_power
from jaxdfl.topology import agnes_clusters

NET = dict(p_max=0.1, delay_bound=0.5, bandwidth=1e6, noise=1e-13, path_loss_exp=3.5)


def _collision(s):
    return float(np.max(np.asarray(collision_rate(s)))) if len(s) > 1 else 0.0


def _power_ok(members, pos, bits):
    n = len(members)
    for i in members:
        others = [j for j in members if j != i]
        if not others:
            continue
        d = np.maximum(np.linalg.norm(pos[others] - pos[i], axis=1), 1.0)
        need = np.asarray(min_power(bits[i], n - 1, NET["bandwidth"], NET["delay_bound"], d ** -NET["path_loss_exp"],
                                    NET["noise"])).sum()
        if need > NET["p_max"] * (1 + 1e-6):
            return False
    return True


def _naive_agnes(s, pos, bits, s_max):
    clusters = [[i] for i in range(len(s))]
    while len(clusters) > 1:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                merged = clusters[a] + clusters[b]
                coll = _collision(s[merged])
                if coll > s_max + 1e-12 or not _power_ok(merged, pos, bits):
                    continue
                dist = np.mean([np.linalg.norm(pos[i] - pos[j]) for i in clusters[a] for j in clusters[b]])
                if best is None or (coll, dist) < best[:2]:
                    best = (coll, dist, a, b)
        if best is None:
            break
        _, _, a, b = best
        clusters[a] = clusters[a] + clusters.pop(b)
    labels = np.zeros(len(s), int)
    for c, members in enumerate(sorted(clusters, key=min)):
        labels[members] = c
    return labels


def _instance(seed, m=9, layers=3):
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.02, 0.35, (m, layers))
    pos = rng.uniform(-400, 400, (m, 2))
    bits = rng.uniform(2e4, 4e5, m)
    return s, pos, bits


@pytest.mark.parametrize("seed", range(6))
def test_every_cluster_meets_the_collision_cap_and_the_power_budget(seed):
    s, pos, bits = _instance(seed)
    s_max = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0][seed]
    labels = agnes_clusters(s, pos, s_max=s_max, bits=bits, **NET)
    clusters = [np.flatnonzero(labels == c) for c in range(labels.max() + 1)]
    assert sorted(np.concatenate(clusters).tolist()) == list(range(len(s)))
    for members in clusters:
        assert _collision(s[members]) <= s_max + 1e-9
        assert _power_ok(list(members), pos, bits)
    # maximal: no two clusters could still merge
    for a in range(len(clusters)):
        for b in range(a + 1, len(clusters)):
            merged = list(clusters[a]) + list(clusters[b])
            assert _collision(s[merged]) > s_max or not _power_ok(merged, pos, bits)
    np.testing.assert_array_equal(labels, _naive_agnes(s, pos, bits, s_max))


def test_dense_devices_never_share_a_cluster_and_a_loose_cap_makes_one():
    s, pos, bits = _instance(0, m=6)
    assert (agnes_clusters(np.ones((6, 2)), pos, s_max=0.5, bits=bits, **NET) == np.arange(6)).all()
    near = np.random.default_rng(1).uniform(-20, 20, (6, 2))
    assert (agnes_clusters(s, near, s_max=1.0, bits=bits, **NET) == 0).all()
