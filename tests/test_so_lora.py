"""Paper A part 1: collision rate, spectral entropy, sparsity allocation, SO-LoRA's mask, messages and
implicit MoE, each checked against an independent computation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.adapters.so_lora import LayerStats, allocate_sparsity, so_lora, spectral_entropy
from jaxdfl.adapters.spectral import calibration
from jaxdfl.core import ExpertView, Mixed, RoundControl
from jaxdfl.metrics import collision_rate, empirical_collision


@pytest.mark.parametrize("jit", [False, True])
def test_collision_rate_matches_monte_carlo(jit):
    rng = np.random.default_rng(0)
    s = rng.uniform(0.05, 0.6, size=(6, 3))
    fn = jax.jit(collision_rate) if jit else collision_rate
    analytic = np.asarray(fn(s))
    assert analytic.shape == (3,)
    positions = 200_000
    masks = rng.random((6, 3, positions)) < s[:, :, None]
    measured = ((masks.sum(0)) >= 2).mean(-1)
    # binomial standard error of each layer's estimate, 5 sigma
    np.testing.assert_array_less(np.abs(measured - analytic), 5 * np.sqrt(analytic * (1 - analytic) / positions))
    assert float(fn(s[:, 0])) == pytest.approx(analytic[0], rel=1e-6)  # [devices] → scalar


def test_collision_rate_edges_and_gradient():
    assert float(collision_rate(jnp.array([0.3]))) == pytest.approx(0.0, abs=1e-7)  # one device never collides
    assert float(collision_rate(jnp.array([1.0, 1.0, 0.2]))) == pytest.approx(1.0)
    # two devices: S = s1·s2; at s = 1 the gradient must still be finite and right (no division by 1 − s)
    s = jnp.array([1.0, 0.4, 0.0])
    grad = jax.grad(lambda v: collision_rate(v))(s)
    eps = 1e-3
    numeric = [(float(collision_rate(s.at[i].add(eps))) - float(collision_rate(s.at[i].add(-eps)))) / (2 * eps)
               for i in range(3)]
    np.testing.assert_allclose(grad, numeric, atol=2e-3)
    assert np.isfinite(np.asarray(grad)).all()


def test_empirical_collision_counts_positions_with_two_or_more():
    masks = np.array([[1, 1, 0, 0, 1], [1, 0, 0, 1, 1], [0, 0, 0, 1, 1]], bool)
    # position 0: 2 devices, 1: 1, 2: 0, 3: 2, 4: 3 → 3 of 5
    assert float(empirical_collision(masks)) == pytest.approx(3 / 5)
    assert float(jax.jit(empirical_collision)(masks.astype(np.float32))) == pytest.approx(3 / 5)


def test_spectral_entropy_is_its_definition():
    rng = np.random.default_rng(1)
    w0, h = rng.normal(size=(12, 7)), rng.normal(size=(20, 7))
    sigma = np.linalg.svd(w0 @ (h.T @ h), compute_uv=False)
    p = sigma / sigma.sum()
    expected = -(p * np.log(p)).sum()
    assert float(spectral_entropy(jnp.asarray(w0, jnp.float32), jnp.asarray(h, jnp.float32))) == pytest.approx(
        expected, rel=1e-4)
    # zero (padding) rows change nothing; a rank-one input has entropy 0
    padded = np.concatenate([h, np.zeros((5, 7))])
    assert float(spectral_entropy(jnp.asarray(w0), jnp.asarray(padded))) == pytest.approx(expected, rel=1e-4)
    one = np.outer(rng.normal(size=20), rng.normal(size=7))
    assert float(spectral_entropy(jnp.asarray(w0), jnp.asarray(one))) == pytest.approx(0.0, abs=1e-3)


def _brute_force_allocation(entropy, budget, sizes, temperature):
    """Try every set of saturated layers; keep the one whose λ is consistent with it."""
    share = np.exp(entropy / temperature - (entropy / temperature).max())
    share /= share.sum()
    if budget >= sizes.sum():
        return np.ones_like(sizes)
    for k in range(len(sizes)):
        for full in itertools.combinations(range(len(sizes)), k):
            rest = [i for i in range(len(sizes)) if i not in full]
            lam = (budget - sizes[list(full)].sum()) / share[rest].sum()
            if all(lam * share[i] >= sizes[i] - 1e-9 for i in full) and all(lam * share[i] <= sizes[i] + 1e-9
                                                                             for i in rest):
                return np.minimum(lam * share, sizes) / sizes
    raise AssertionError("no consistent allocation")


@pytest.mark.parametrize("jit", [False, True])
def test_allocate_sparsity_matches_brute_force(jit):
    rng = np.random.default_rng(2)
    fn = jax.jit(allocate_sparsity, static_argnums=3) if jit else allocate_sparsity
    for case in range(40):
        layers = int(rng.integers(1, 7))
        sizes = rng.integers(4, 200, size=layers).astype(np.float64)
        entropy = rng.uniform(0, 4, size=layers)
        temperature = float(rng.choice([0.3, 1.0, 3.0]))
        budget = float(rng.uniform(0.05, 1.1) * sizes.sum())
        s = np.asarray(fn(entropy, budget, sizes, temperature))
        expected = _brute_force_allocation(entropy, budget, sizes, temperature)
        np.testing.assert_allclose(s, expected, rtol=1e-4, atol=1e-6, err_msg=f"case {case}")
        assert (s >= 0).all() and (s <= 1 + 1e-6).all()
        assert (s * sizes).sum() == pytest.approx(min(budget, sizes.sum()), rel=1e-5)


def test_allocation_without_saturation_is_a_22_with_min():
    entropy, sizes = np.array([1.0, 2.0, 0.5]), np.array([100.0, 100.0, 100.0])
    share = np.exp(entropy) / np.exp(entropy).sum()
    s = allocate_sparsity(entropy, 60.0, sizes)
    np.testing.assert_allclose(s, 60.0 * share / sizes, rtol=1e-5)


LAYERS = {"l0": (6, 5), "l1": (5, 3)}  # name → (in k, out d)


def _stats(key, examples=50.0):
    """Statistics as a calibration would return them: a unit mean-input direction and an entropy per layer."""
    ks = jax.random.split(key, len(LAYERS) + 1)
    direction = {n: jax.random.normal(k, (fan_in,)) for k, (n, (fan_in, _)) in zip(ks, LAYERS.items())}
    direction = {n: v / jnp.linalg.norm(v) for n, v in direction.items()}
    return LayerStats(direction, jax.random.uniform(ks[-1], (len(LAYERS),), maxval=2.0), jnp.asarray(examples))


def test_calibration_reads_the_inputs_of_every_adapted_map():
    """The entropy is A(21) of W0 and the layer's inputs on the device's real examples, the direction their
    normalised mean; padding examples beyond n change nothing."""
    rng = np.random.default_rng(5)
    base = {"l0": {"w": rng.normal(size=(6, 5))}, "l1": {"w": rng.normal(size=(5, 3))}}
    base = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), base)

    def forward(base, x, hook):  # two linear maps: x -> l0 -> tanh -> l1
        hook("l0", x)
        h = jnp.tanh(x @ base["l0"]["w"])
        hook("l1", h)
        return h @ base["l1"]["w"]

    x = jnp.asarray(rng.normal(size=(7, 6)), jnp.float32)
    stats = calibration(examples=5)(forward, base, LAYERS, x, jnp.asarray(4))
    h0, h1 = np.asarray(x[:4]), np.tanh(np.asarray(x[:4]) @ np.asarray(base["l0"]["w"]))
    for i, (name, h) in enumerate((("l0", h0), ("l1", h1))):
        w0 = np.asarray(base[name]["w"]).T
        assert float(stats.entropy[i]) == pytest.approx(float(spectral_entropy(jnp.asarray(w0), jnp.asarray(h))),
                                                        rel=1e-5)
        np.testing.assert_allclose(stats.direction[name], h.mean(0) / np.linalg.norm(h.mean(0)), rtol=1e-5)
    assert float(stats.examples) == 4


def test_init_refines_a_by_the_direction_and_allocates_the_budget():
    method = so_lora(rank=3, density=0.4, refine="column")
    stats = _stats(jax.random.key(1))
    state = method.init(jax.random.key(0), LAYERS, stats)
    plain = so_lora(rank=3, density=0.4, refine="none").init(jax.random.key(0), LAYERS, stats)
    for name, (fan_in, _) in LAYERS.items():  # A_ref = A · diag(√k · h̄/‖h̄‖), A(26)
        expected = np.asarray(plain.frozen.a[name]) * np.sqrt(fan_in) * np.asarray(stats.direction[name])[None]
        np.testing.assert_allclose(state.frozen.a[name], expected, rtol=1e-6)
    sizes = np.array([5 * 3, 3 * 3])
    np.testing.assert_allclose(state.frozen.density, allocate_sparsity(stats.entropy, 0.4 * sizes.sum(), sizes),
                               rtol=1e-6)
    np.testing.assert_array_equal(state.frozen.keep, np.round(np.asarray(state.frozen.density) * sizes))


def test_calibrated_mask_keeps_the_allocated_entries_and_a_is_counted_once():
    method = so_lora(rank=3, density=0.4)
    state = method.init(jax.random.key(0), LAYERS, _stats(jax.random.key(1)))
    sizes = np.array([5 * 3, 3 * 3])
    assert int(state.frozen.keep.sum()) == pytest.approx(0.4 * sizes.sum(), abs=1)
    # pretend local training filled B densely
    trained = state._replace(params=jax.tree.map(lambda b: jax.random.normal(jax.random.key(2), b.shape),
                                                 state.params))
    msg, after = method.encode(trained, state.params, jax.random.key(3), RoundControl())
    for i, name in enumerate(LAYERS):
        mask = np.asarray(after.memory.mask[name])
        b = np.asarray(trained.params[name]["b"])
        assert mask.sum() == int(state.frozen.keep[i])
        kept = np.abs(b[mask == 1])
        assert kept.min() >= np.abs(b[mask == 0]).max()  # the top-|B| entries
        assert (np.asarray(after.params[name]["b"])[mask == 0] == 0).all()
    a_params = sum(3 * fan_in for fan_in, _ in LAYERS.values())
    kept = int(state.frozen.keep.sum())
    assert float(msg.count) == kept + a_params  # first contact: B's kept values and A, once
    assert float(msg.bits) == 32 * (kept + a_params) + sizes.sum()  # plus the mask positions, once
    msg2, _ = method.encode(after, after.params, jax.random.key(4), RoundControl())
    assert float(msg2.count) == kept and float(msg2.bits) == 32 * kept


def test_lori_as_its_authors_run_it():
    """shared_a: one A for every device; mask_scope=model: one top-|B| threshold over all layers at the
    layer-wise total; calib_reset: B restarts from zero under the mask; merge_weight scales the mixture."""
    kw = dict(rank=3, density=0.4, allocation="uniform", refine="none", top_k=0)
    method = so_lora(**kw, shared_a=True, mask_scope="model", calib_reset=True, merge_weight=0.3)
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.vmap(lambda k: method.init(k, LAYERS, _stats(k)))(keys)
    for name in LAYERS:
        np.testing.assert_array_equal(states.frozen.a[name][0], states.frozen.a[name][2])
    per_device = jax.vmap(lambda k: so_lora(**kw).init(k, LAYERS, _stats(k)))(keys)
    assert not np.allclose(per_device.frozen.a["l0"][0], per_device.frozen.a["l0"][2])

    state = jax.tree.map(lambda a: a[0], states)
    b = {"l0": jnp.asarray(np.arange(1, 16).reshape(5, 3) / 10.0), "l1": jnp.full((3, 3), 2.0)}  # l1 dominates
    trained = state._replace(params={n: {"b": v} for n, v in b.items()})
    msg, after = method.encode(trained, state.params, jax.random.key(3), RoundControl())
    total = int(state.frozen.keep.sum())
    magnitudes = np.concatenate([np.abs(np.asarray(b[n])).ravel() for n in LAYERS])
    threshold = np.sort(magnitudes)[::-1][total - 1]
    for name in LAYERS:
        expected = np.abs(np.asarray(b[name])) >= threshold
        np.testing.assert_array_equal(np.asarray(after.memory.mask[name]), expected)
        np.testing.assert_array_equal(np.asarray(after.params[name]["b"]), 0.0)  # retrained from zero
    np.testing.assert_allclose(np.asarray(after.memory.mask["l1"]).mean(), 1.0)  # the model scope's own split
    density = method.density(after)
    np.testing.assert_allclose([float(density[n]) for n in LAYERS],
                               [np.asarray(after.memory.mask[n]).mean() for n in LAYERS])

    plain = so_lora(**kw, shared_a=True)
    view = ExpertView(jax.vmap(method.experts.expert)(states), jnp.ones(3), jnp.zeros(3), jnp.asarray(0))
    mine = state._replace(params={n: {"b": jnp.ones_like(v["b"])} for n, v in state.params.items()})
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
    np.testing.assert_allclose(method.experts.infer(mine, "l0", x, view),
                               0.3 * plain.experts.infer(mine, "l0", x, view), rtol=1e-6)


def test_merge_masked_and_literal_and_the_exchange_snapshot():
    method = so_lora(rank=1, density=1.0, aggregation="masked")
    literal = so_lora(rank=1, density=1.0, aggregation="literal")
    stats = LayerStats({"l": jnp.array([1.0, 0.0])}, jnp.zeros(1), jnp.asarray(4.0))
    state = method.init(jax.random.key(0), {"l": (2, 2)}, stats)
    state = state._replace(memory=state.memory._replace(mask={"l": jnp.array([[1.0], [0.0]])}))
    # mixed average 3.0 over mass 0.5 at the first entry: masked keeps 3.0, literal gives Σ W v = 1.5
    mixed = Mixed({"l": {"b": jnp.array([[3.0], [5.0]])}}, {"l": {"b": jnp.array([[0.5], [1.0]])}})
    merged = method.merge(state, mixed, RoundControl())
    np.testing.assert_allclose(merged.params["l"]["b"], [[3.0], [0.0]])
    np.testing.assert_allclose(merged.memory.aggregate["l"], [[3.0], [5.0]])  # what was heard, every position
    np.testing.assert_allclose(merged.memory.shared["l"], 0.0)  # no exchange: nothing handed over
    np.testing.assert_allclose(literal.merge(state, mixed, RoundControl()).params["l"]["b"], [[1.5], [0.0]])
    exchanged = method.merge(state, mixed, RoundControl(exchange=True))
    np.testing.assert_allclose(exchanged.memory.shared["l"], [[3.0], [0.0]])  # the snapshot B̄ ⊙ M


@pytest.mark.parametrize("top_k, scope, weighting", [(0, "all", "sum"), (1, "all", "sum"), (3, "all", "sum"),
                                                     (5, "all", "sum"), (1, "expert", "sum"), (1, "all", "mean"),
                                                     (1, "expert", "mean")])
def test_implicit_moe_matches_dense_reference(top_k, scope, weighting):
    """A(24) and A(29) in each reading: top-k over every held expert's components or within each expert,
    experts summed or weighted 1/|M|, against a per-example NumPy loop."""
    rank, experts_n = 2, 4
    method = so_lora(rank=rank, alpha=4.0, density=0.5, top_k=top_k, refine="column", moe_top_k_scope=scope,
                     moe_weighting=weighting)
    keys = jax.random.split(jax.random.key(5), experts_n)
    states = jax.vmap(lambda k: method.init(k, LAYERS, _stats(k)))(keys)
    rng = np.random.default_rng(3)
    masks = {n: jnp.asarray(rng.random((experts_n, d, rank)) < 0.6, jnp.float32) for n, (_, d) in LAYERS.items()}
    snapshot = {n: jnp.asarray(rng.normal(size=(experts_n, d, rank)), jnp.float32) for n, (_, d) in LAYERS.items()}
    states = states._replace(memory=states.memory._replace(mask=masks, shared=snapshot))
    table = jax.vmap(method.experts.expert)(states)
    aggregate = {n: jnp.asarray(rng.normal(size=(d, rank)), jnp.float32) for n, (_, d) in LAYERS.items()}
    own = {n: {"b": jnp.asarray(rng.normal(size=(d, rank)), jnp.float32)} for n, (_, d) in LAYERS.items()}
    me = jax.tree.map(lambda a: a[0], states)
    me = me._replace(params=own, memory=me.memory._replace(aggregate=aggregate))
    held = jnp.array([1.0, 0.0, 1.0, 0.0])  # itself and expert 2 in its cluster; 3 stored from another cluster
    stored = jnp.array([0.0, 0.0, 0.0, 1.0])
    view = ExpertView(table, held, stored, jnp.asarray(0))
    x = jnp.asarray(rng.normal(size=(7, 6)), jnp.float32)
    got = np.asarray(jax.jit(lambda x: method.experts.infer(me, "l0", x, view))(x))

    a = np.asarray(table["l0"]["a"])
    m = np.asarray(masks["l0"])
    b = [np.asarray(own["l0"]["b"]) * m[0], np.zeros((5, rank)), np.asarray(aggregate["l0"]) * m[2],
         np.asarray(snapshot["l0"][3])]  # own trainable B, not held, aggregate ⊙ its mask, the stored snapshot
    expected = np.zeros((7, 5))
    for row in range(7):
        z = np.stack([a[e] @ np.asarray(x[row]) * float(held[e] + stored[e]) for e in range(experts_n)])  # [E, r]
        groups = z if scope == "expert" else z.reshape(1, -1)  # where the top-k ranks components
        kept = []
        for flat in groups:
            keep = np.zeros_like(flat)
            keep[np.argsort(-np.abs(flat), kind="stable")[:top_k or len(flat)]] = 1
            kept.append(flat * keep)
        z = np.stack(kept).reshape(z.shape)
        weight = 1.0 / 3 if weighting == "mean" else 1.0  # three experts held: itself, expert 2, stored 3
        expected[row] = 2.0 * weight * sum(b[e] @ z[e] for e in range(experts_n))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # only the device's own entries get a gradient
    grads = jax.grad(lambda p: method.experts.infer(me._replace(params=p), "l0", x, view).sum())(own)
    assert np.abs(np.asarray(grads["l0"]["b"])).sum() > 0
    np.testing.assert_array_equal(np.asarray(grads["l0"]["b"])[m[0] == 0], 0.0)


def test_projection_overlap_matches_a_loop():
    from jaxdfl.metrics import projection_overlap

    a = np.random.default_rng(4).normal(size=(3, 2, 9))
    pairs = [np.linalg.norm(a[i] @ a[j].T) / (np.linalg.norm(a[i]) * np.linalg.norm(a[j]))
             for i in range(3) for j in range(3) if i != j]
    assert float(projection_overlap(jnp.asarray(a))) == pytest.approx(np.mean(pairs), rel=1e-5)


def test_so_lora_round_accounting_and_collision_through_the_engine(small_config):
    """One round of so_lora on a ring: the uplink is Σ_i (kept B entries + A) and the logged collision equals
    the empirical collision of each device's closed neighbourhood's masks."""
    from jaxdfl.config import load_config
    from jaxdfl.sim.build import build_simulation

    small_config["method"] = {"name": "so_lora", "rank": 2, "density": 0.3}
    sim = build_simulation(load_config(small_config))
    state = sim.init_fn(jax.random.key(0))
    a_params = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(state.adapter.frozen.a))
    keep = np.asarray(state.adapter.frozen.keep).sum(1)  # [M]
    w = sim.topology.mixing(0)
    state, m = sim.run_rounds(state, sim.inputs(0, 1))
    assert float(m["uplink_params"][0]) == pytest.approx(keep.sum() + len(keep) * a_params)
    masks = state.adapter.memory.mask
    assert np.asarray(sum(x.sum(axis=(1, 2)) for x in masks.values())).tolist() == keep.tolist()
    flat = np.concatenate([np.asarray(x).reshape(len(w), -1) for x in masks.values()], 1)
    expected = np.mean([empirical_collision(flat[np.flatnonzero(w[i])]) for i in range(len(w))])
    assert float(m["collision_empirical"][0]) == pytest.approx(expected, rel=1e-5)
    assert 0 < expected < 1
    assert sim.trainable_params(state) == pytest.approx(keep.mean())
