"""The Pallas top-k kernel (jaxdfl.sparse.topk_kernel) in interpret mode against the jnp selections: exact
masks (ties by position) and exact k-th values, in both block layouts (GPU/Triton and TPU/Mosaic)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.sparse import topk
from jaxdfl.sparse.topk import descending_rank, kth_largest, mask_top_k
from jaxdfl.sparse.topk_kernel import kth_largest_pallas, mask_top_k_pallas

PLATFORMS = ["gpu", "tpu"]


def _data(shape, seed=0, ties=False):
    """Non-negative float32 ``shape``; with ``ties``, only five distinct values (zero among them)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, shape) / 4 if ties else np.abs(rng.standard_normal(shape))
    return jnp.asarray(x, jnp.float32)


def _per_row_k(rows, n, seed=0):
    """``[rows, 1]`` int32 counts, the first row 0 and the last n, the rest at random."""
    k = np.random.default_rng(seed).integers(0, n + 1, (rows, 1))
    k[0], k[-1] = 0, n
    return jnp.asarray(k, jnp.int32)


def _check(x, k, platform):
    mask = mask_top_k_pallas(x, k, platform=platform, interpret=True)
    np.testing.assert_array_equal(mask, descending_rank(x) < k)
    assert mask.dtype == jnp.bool_ and mask.shape == x.shape
    kth = kth_largest_pallas(x, k, platform=platform, interpret=True)
    np.testing.assert_array_equal(kth, kth_largest(x, k))  # k = 0 gives +inf in both


@pytest.mark.parametrize("platform", PLATFORMS)
def test_per_row_exact(platform):
    """41 rows of 200 (not a multiple of 128 lanes nor a power of two), half of them with many ties: three
    blocks on the GPU layout; padded rows and columns on both."""
    x = jnp.concatenate([_data((21, 200), seed=1), _data((20, 200), seed=2, ties=True)])
    _check(x, _per_row_k(41, 200, seed=3), platform)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_few_rows_and_short_rows(platform):
    """Fewer rows than a TPU tile (a (rows, n) block) and rows shorter than a lane width."""
    x = _data((3, 37), seed=3, ties=True)
    _check(x, jnp.asarray([[0], [5], [37]], jnp.int32), platform)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_whole_array_is_one_row(platform):
    """Whole-array top-k (mask calibration): a 1-D array with an int k."""
    x = _data((1000,), seed=4, ties=True)
    select = jax.jit(lambda x, k: mask_top_k_pallas(x, k, platform=platform, interpret=True))
    for k in (0, 1, 333, 1000):
        mask = select(x, k)
        np.testing.assert_array_equal(mask, descending_rank(x) < k)
        assert int(mask.sum()) == k


def test_vmapped():
    x = _data((3, 4, 150), seed=5, ties=True)
    k = jnp.asarray(np.random.default_rng(6).integers(0, 151, (3, 4, 1)), jnp.int32)
    mask = jax.vmap(lambda x, k: mask_top_k_pallas(x, k, interpret=True))(x, k)
    np.testing.assert_array_equal(mask, descending_rank(x) < k)
    kth = jax.vmap(lambda x, k: kth_largest_pallas(x, k, interpret=True))(x, jnp.maximum(k, 1))
    np.testing.assert_array_equal(kth, kth_largest(x, jnp.maximum(k, 1)))


def test_jit_with_traced_k():
    x = _data((6, 130), seed=7)
    traces = []

    @jax.jit
    def select(x, k):
        traces.append(None)
        return mask_top_k_pallas(x, k, interpret=True)

    for k in (3, 64, 130):
        k = jnp.full((6, 1), k, jnp.int32)
        np.testing.assert_array_equal(select(x, k), descending_rank(x) < k)
    assert len(traces) == 1  # k is an argument, not a constant


def test_selection_passes_no_gradient():
    """The kernel works on bit patterns: differentiating through a masked product is fine."""
    x = _data((4, 64), seed=8)
    grad = jax.grad(lambda x: (x * mask_top_k_pallas(x, 5, interpret=True)).sum())(x)
    np.testing.assert_array_equal(grad, descending_rank(x) < 5)


@pytest.mark.parametrize("kernel", ["jnp", "pallas"])
def test_switch_keeps_cpu_on_jnp(monkeypatch, kernel):
    """The setting adds the kernel as the GPU/TPU branch; either way CPU runs the jnp bisection (a pallas_call
    would not lower here). Fresh lambdas: JAX reuses the trace of a function it has jitted before."""
    monkeypatch.setattr(topk, "KERNEL", kernel)
    x = _data((5, 300), seed=9, ties=True)
    k = _per_row_k(5, 300, seed=10)
    k1 = jnp.maximum(k, 1)
    assert ("pallas_call" in str(jax.make_jaxpr(lambda x, k: mask_top_k(x, k))(x, k))) == (kernel == "pallas")
    np.testing.assert_array_equal(jax.jit(lambda x, k: mask_top_k(x, k))(x, k), descending_rank(x) < k)
    np.testing.assert_array_equal(jax.jit(lambda x: kth_largest(x, 7))(x), topk._bisect(x, 7))
    np.testing.assert_array_equal(jax.jit(lambda x, k: kth_largest(x, k))(x, k1), topk._bisect(x, k1))
