import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.sparse import allocate, random_k_mask, top_k_mask, top_k_per_row
from jaxdfl.sparse import lora as sel


@pytest.mark.parametrize("jit", [False, True])
def test_allocation_sums_to_the_budget_and_respects_caps(jit):
    rng = np.random.default_rng(0)
    fn = jax.jit(allocate) if jit else allocate
    for _ in range(40):
        r, cap = int(rng.integers(1, 9)), int(rng.integers(1, 30))
        s = rng.exponential(size=r) * (rng.random(r) > 0.3)  # some zero importances
        budget = int(rng.integers(0, r * cap + 1))
        o = np.asarray(fn(jnp.asarray(s), budget, cap))
        assert o.sum() == budget and (o >= 0).all() and (o <= cap).all(), (s, budget, cap, o)
        # overflow goes to the others: a component below its cap never gets less than the proportional share
        # of what the capped ones left, rounded down
        free = o < cap
        if free.any() and s[free].sum() > 0:
            share = (budget - o[~free].sum()) * s[free] / s[free].sum()
            assert (o[free] >= np.floor(share) - 1e-9).all()
    np.testing.assert_array_equal(fn(jnp.array([4.0, 1.0, 0.0, 0.0]), 10, 6), [6, 4, 0, 0])


def test_allocation_saturates_at_the_caps():
    np.testing.assert_array_equal(allocate(jnp.array([1.0, 2.0, 3.0]), 100, 5), [5, 5, 5])


def test_top_k_masks_keep_exactly_k():
    x = jnp.array([[3.0, -5.0, 1.0], [1.0, 1.0, 1.0]])  # ties in row 2
    assert float(top_k_mask(x, 4).sum()) == 4 and float(top_k_mask(x, 4)[0, 1]) == 1.0
    np.testing.assert_array_equal(top_k_per_row(x, jnp.array([1, 2])), [[0, 1, 0], [1, 1, 0]])
    assert float(random_k_mask(jax.random.key(0), (5, 7), 11).sum()) == 11


@pytest.mark.parametrize("seed", range(4))
def test_sortless_masks_equal_the_double_argsort_with_ties(seed):
    """The bisection masks against ``descending_rank < k`` (ties by position), k traced, jitted and vmapped."""
    from jaxdfl.sparse.topk import descending_rank, mask_top_k

    rng = np.random.default_rng(seed)
    rows = rng.choice([0.0, 0.5, 1.0, 2.0, 1e-30, 3e38], size=(6, 40)).astype(np.float32)  # many ties
    rows[:3] = np.abs(rng.normal(size=(3, 40)))
    k = rng.integers(0, 41, size=(6, 1)).astype(np.int32)
    k[0], k[1] = 0, 40
    got = jax.jit(jax.vmap(mask_top_k))(jnp.asarray(rows), jnp.asarray(k))
    np.testing.assert_array_equal(got, np.asarray(descending_rank(jnp.asarray(rows))) < k)
    flat = jnp.asarray(rows).reshape(-1)
    for total in (0, 1, 97, 240):
        np.testing.assert_array_equal(jax.jit(mask_top_k)(flat, total), np.asarray(descending_rank(flat)) < total)


LAYER = {"b": jax.random.normal(jax.random.key(1), (12, 4)), "a": jax.random.normal(jax.random.key(2), (4, 9))}


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.93])
def test_every_selector_keeps_its_budget(ratio):
    q = int(round(ratio * 4 * (12 + 9)))
    key = jax.random.key(3)
    for name in ("soft", "tlora", "rlora"):
        mask = sel.SELECTORS[name](LAYER, LAYER, ratio, key)
        assert int(sum(m.sum() for m in mask.values())) == q, name
    slora = sel.slora(LAYER, LAYER, ratio, key)
    assert int(slora["a"].any(axis=1).sum()) == int(np.floor(ratio * 4))
    assert int(sum(m.sum() for m in sel.ilora(LAYER, LAYER, ratio, key).values())) == 4 * 21


def test_tlora_keeps_the_largest_entries():
    mask = sel.tlora(LAYER, LAYER, 0.25, None)
    values = np.abs(np.concatenate([np.asarray(LAYER["b"]).ravel(), np.asarray(LAYER["a"]).ravel()]))
    kept = np.concatenate([np.asarray(mask["b"]).ravel(), np.asarray(mask["a"]).ravel()]).astype(bool)
    assert values[kept].min() >= values[~kept].max()


def test_soft_gives_important_components_more_entries():
    factors = {"b": LAYER["b"] * jnp.array([4.0, 1.0, 0.5, 0.1]), "a": LAYER["a"]}
    mask = sel.soft(factors, factors, 0.3, None)
    per_component = np.asarray(sel.components(mask).sum(1))
    counts = np.asarray(allocate(sel.importance(factors), sel.budget(factors, 0.3), 21))
    np.testing.assert_array_equal(per_component, counts)
    assert per_component[0] > per_component[3]
    # within a component, the kept entries are the largest of its [B[:, i]; A[i, :]]
    rows = np.abs(np.asarray(sel.components(factors)))
    for i in range(4):
        kept = np.asarray(sel.components(mask))[i].astype(bool)
        if kept.any() and (~kept).any():
            assert rows[i][kept].min() >= rows[i][~kept].max()


@pytest.mark.parametrize("k", [1, 5, 64])
def test_kth_largest_is_exact(k):
    from jaxdfl.sparse import kth_largest

    rng = np.random.default_rng(k)
    x = (np.abs(rng.normal(size=(50, 64))) * rng.choice([1e-30, 1.0, 1e30], size=(50, 1))).astype(np.float32)
    x[0] = 0.0  # all ties at zero
    x[1, :10] = np.inf
    got = np.asarray(jax.jit(kth_largest, static_argnums=1)(jnp.asarray(x), k))
    np.testing.assert_array_equal(got[:, 0], -np.sort(-x, axis=1)[:, k - 1])
