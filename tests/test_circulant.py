"""Circulant graphs mix by shifts of the device axis: the numbers of the neighbour gather, and on a mesh only
``ppermute`` of boundary rows between chips (no all-gather)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.topology import graphs
from jaxdfl.topology.circulant import RING_SHIFTS, in_shift_order, roll_mix
from jaxdfl.topology.neighbours import Neighbours, from_edges, gather_mix, to_dense


def _lists(m, shifts, seed=0):
    index = (np.arange(m)[:, None] + np.asarray(shifts)[None, :]) % m
    weight = np.random.default_rng(seed).uniform(size=(m, len(shifts))).astype(np.float32)
    return Neighbours(index.astype(np.int32), weight)


def test_ring_lists_in_shift_order_are_the_same_ring():
    for m in (3, 4, 9):
        lists = from_edges(graphs.ring_edges(m), m)
        ordered = in_shift_order(lists, RING_SHIFTS)
        np.testing.assert_array_equal(to_dense(ordered), to_dense(lists))
        np.testing.assert_array_equal(ordered.index, (np.arange(m)[:, None] + np.array(RING_SHIFTS)) % m)
    with pytest.raises(ValueError, match="not among"):
        in_shift_order(from_edges(np.array([[0, 2]]), 5), RING_SHIFTS)


@pytest.mark.parametrize("shifts", [RING_SHIFTS, (0, 2, -3, 5)])
def test_roll_mix_equals_the_gather(shifts):
    lists = _lists(12, shifts)
    tree = {"a": jax.random.normal(jax.random.key(0), (12, 3, 4)), "b": jnp.arange(12.0)}
    want = gather_mix(jax.tree.map(jnp.asarray, lists), tree)
    got = roll_mix(shifts, jnp.asarray(lists.weight), tree)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6), got, want)


SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jaxdfl.sim.mesh import make_mesh, sharded
from jaxdfl.topology.circulant import roll_mix
from jaxdfl.topology.neighbours import Neighbours, gather_mix
m, out = 16, {}
mesh = make_mesh(m)
x = jax.random.normal(jax.random.key(0), (m, 5))
for shifts in [(0, 1, -1), (0, 3, -2)]:
    index = (np.arange(m)[:, None] + np.asarray(shifts)) % m
    w = jax.random.uniform(jax.random.key(1), (m, len(shifts)))
    want = gather_mix(Neighbours(jnp.asarray(index, jnp.int32), w), x)
    f = jax.jit(lambda w, x: roll_mix(shifts, w, x, mesh))
    xs = jax.device_put(x, sharded(mesh))
    hlo = f.lower(w, xs).compile().as_text()
    out[str(shifts)] = {"max_diff": float(jnp.abs(f(w, xs) - want).max()), "ppermute": "collective-permute" in hlo,
                        "all_gather": "all-gather" in hlo, "chips": mesh.shape["devices"]}
print(json.dumps(out))
"""


def test_on_four_chips_shifts_move_only_boundary_rows():
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for result in json.loads(done.stdout.strip().splitlines()[-1]).values():
        assert result.pop("max_diff") <= 1e-6
        assert result == {"ppermute": True, "all_gather": False, "chips": 4}
