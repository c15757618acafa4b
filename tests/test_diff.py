"""jaxdfl.diff: gradients through whole simulations with respect to the mixing matrix, transmit powers,
bandwidth shares and positions, checked against finite differences in float64 and across 1 and 4 emulated
accelerators (tests/scripts/diff_gradients.py runs each in a fresh process)."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.diff import link_entropy, mixing_matrix, sinkhorn

SCRIPT = Path(__file__).parent / "scripts" / "diff_gradients.py"


def _gradients(tmp_path, name, fd=False, **env):
    out = tmp_path / f"{name}.npz"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), *(["--fd"] if fd else [])], capture_output=True,
                          text=True, env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


def test_every_design_gradient_matches_finite_differences_in_float64(tmp_path):
    r = _gradients(tmp_path, "x64", fd=True, JAX_ENABLE_X64="1")
    assert r["float64"]
    for kind in ("mixing", "power", "bandwidth", "positions"):
        fd, along = float(r[f"fd/{kind}"]), float(r[f"along/{kind}"])
        assert abs(along) > 1e-9, (kind, along)  # a gradient that is there, not a trivially matched zero
        assert abs(fd - along) <= 1e-3 * abs(fd), (kind, fd, along)


def test_the_same_gradients_on_one_and_four_accelerators(tmp_path):
    one = _gradients(tmp_path, "one", JAX_NUM_CPU_DEVICES="1")
    four = _gradients(tmp_path, "four", JAX_NUM_CPU_DEVICES="4")
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    np.testing.assert_allclose(four["value"], one["value"], rtol=1e-5)
    for kind in ("mixing", "power", "bandwidth", "positions"):
        g1, g4 = one[f"grad/{kind}"], four[f"grad/{kind}"]
        np.testing.assert_allclose(g4, g1, rtol=2e-3, atol=1e-4 * np.abs(g1).max())


def test_mixing_designs_are_stochastic_on_their_candidates():
    mask = jnp.asarray(np.random.default_rng(0).random((5, 5)) < 0.5)
    mask = mask | mask.T
    logits = jax.random.normal(jax.random.key(0), (5, 5))
    w = mixing_matrix(logits, mask)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    assert (w[~(mask | jnp.eye(5, dtype=bool))] == 0).all() and (jnp.diag(w) > 0).all()
    d = sinkhorn(logits + logits.T, mask | jnp.eye(5, dtype=bool), iterations=200)
    np.testing.assert_allclose(d.sum(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(d.sum(1), 1.0, atol=1e-4)
    assert float(link_entropy(jnp.eye(5))) == 0.0
    assert float(link_entropy(jnp.full((5, 5), 0.2))) == pytest.approx(np.log(5), rel=1e-6)
