import numpy as np
import pytest

from jaxdfl.config import DataConfig
from jaxdfl.data import TASKS, build, partition, pretrain_split, task_splits
from jaxdfl.data.digits import _load_raw
from jaxdfl.errors import ConfigError


def test_tasks_differ_in_inputs_and_in_labels():
    splits = {s.name: s for s in task_splits(["shift", "rot90", "invert", "mirror"], 0.25)}
    base = splits["shift"].x_train
    for name in ("rot90", "invert", "mirror"):
        assert not np.allclose(splits[name].x_train, base), name
    maps = [tuple(TASKS[n].label_map) for n in ("plain", "shift", "rot90", "invert", "mirror")]
    assert len(set(maps)) == len(maps)  # five different label functions
    for m in maps:
        assert sorted(m) == list(range(10))
    # same underlying images: undoing the transform recovers the shift task's images
    np.testing.assert_allclose(np.rot90(splits["rot90"].x_train, -1, axes=(1, 2)), base)
    np.testing.assert_allclose(1.0 - splits["invert"].x_test, splits["shift"].x_test)


def test_shared_label_tasks_keep_the_digit_and_shift_the_inputs_mildly():
    names = ["plain", "tilt_left", "tilt_right", "noisy", "blurred"]
    splits = {s.name: s for s in task_splits(names, 0.25)}
    plain = splits["plain"]
    for name in names[1:]:
        s = splits[name]
        np.testing.assert_array_equal(s.y_train, plain.y_train)  # the true digit, same images
        change = np.abs(s.x_train - plain.x_train).mean()
        assert 0.02 < change < 0.3, (name, change)  # shifted, but still the same digits
        assert s.x_train.min() >= -1e-6 and s.x_train.max() <= 1 + 1e-6
    np.testing.assert_array_equal(task_splits(["noisy"], 0.25)[0].x_test, splits["noisy"].x_test)  # one fixed draw
    np.testing.assert_allclose(splits["tilt_left"].x_train.sum((1, 2)), plain.x_train.sum((1, 2)), rtol=0.25)


def test_pretraining_images_are_disjoint_from_the_task_images():
    images, _ = _load_raw()
    x_pre, _, x_val, _ = pretrain_split()
    s = task_splits(["plain"], 0.25)[0]
    key = lambda arr: {a.tobytes() for a in arr}  # noqa: E731
    assert not key(np.concatenate([x_pre, x_val])) & key(np.concatenate([s.x_train, s.x_test]))
    assert len(x_pre) + len(x_val) + len(s.x_train) + len(s.x_test) == len(images)


def _check_disjoint_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n


def test_task_per_device():
    tasks = np.repeat(np.arange(3), 10)
    parts = partition.task_per_device(tasks, 7, 3)
    _check_disjoint_cover(parts, 30)
    for dev, p in enumerate(parts):
        assert set(tasks[p]) == {dev % 3}


def test_iid_shards_dirichlet_cover_the_pool():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 20)
    _check_disjoint_cover(partition.iid(200, 8, rng), 200)
    shards = partition.label_shards(labels, 10, 2, rng)
    _check_disjoint_cover(shards, 200)
    assert max(len(np.unique(labels[p])) for p in shards) <= 2 + 1  # a shard can straddle two labels
    _check_disjoint_cover(partition.dirichlet(labels, 5, 0.3, rng), 200)


def test_build_pads_and_records_sizes():
    data = build(DataConfig(), num_devices=8, seed=0)
    assert data.x.shape[:2] == data.y.shape and data.x.shape[0] == 8
    assert list(data.task_of_device) == [0, 1, 2, 3, 0, 1, 2, 3]
    for i in range(8):
        assert (data.x[i, data.n[i]:] == 0).all()
    assert data.test_x.shape[0] == 4 and all(0.05 < c < 0.2 for c in data.chance)
    mixed = build(DataConfig(partition="iid"), num_devices=8, seed=0)
    assert (mixed.task_of_device == -1).all() and mixed.n.sum() == data.n.sum()


def test_devices_hold_indices_into_one_pool():
    data = build(DataConfig(), num_devices=8, seed=0)
    assert len(data.pool_x) == len(data.pool_y) == data.n.sum()  # every example stored once
    for i in range(8):
        np.testing.assert_array_equal(data.x[i, :data.n[i]], data.pool_x[data.index[i, :data.n[i]]])


@pytest.mark.parametrize("kind", ["task_per_device", "iid", "shards", "dirichlet"])
def test_examples_per_device_lets_devices_outnumber_the_examples(kind):
    pool = len(build(DataConfig(), num_devices=4, seed=0).pool_y)
    k = 50 if kind == "dirichlet" else 3  # Dirichlet proportions leave some of many small parts empty
    data = build(DataConfig(partition=kind, examples_per_device=k, dirichlet_alpha=5.0), num_devices=2 * pool,
                 seed=0)
    assert data.index.shape == (2 * pool, k) and (data.n == k).all() and len(data.pool_y) == pool
    if kind == "task_per_device":  # device i still holds task i mod T, drawn from that task's examples
        tasks = np.concatenate([np.full(len(s.y_train), t) for t, s in enumerate(task_splits(DataConfig().tasks,
                                                                                            0.25))])
        assert (data.task_of_device == np.arange(2 * pool) % 4).all()
        assert (tasks[data.index] == data.task_of_device[:, None]).all()
    assert len({tuple(row) for row in data.index[:200]}) > 150  # devices sharing a part draw different rows


def test_too_many_devices_is_a_clear_error():
    with pytest.raises(ConfigError, match="examples_per_device"):
        build(DataConfig(), num_devices=10_000, seed=0)
    with pytest.raises(ConfigError, match="fewer than the 4 tasks"):
        build(DataConfig(), num_devices=3, seed=0)
    # found by test_fuzz_cli: examples_per_device=223127027 ran out of memory before any message
    pool = len(build(DataConfig(), num_devices=4, seed=0).pool_y)
    assert build(DataConfig(examples_per_device=pool), num_devices=4, seed=0).index.shape == (4, pool)
    with pytest.raises(ConfigError, match=f"examples_per_device={pool + 1}: more than the {pool} training"):
        build(DataConfig(examples_per_device=pool + 1), num_devices=4, seed=0)


def test_unknown_tasks_are_named_before_anything_is_built():
    from jaxdfl.data import check

    with pytest.raises(ConfigError, match=r"data.tasks: .*choose from .*'mirror'"):
        check(DataConfig(tasks=("shift", "nope")))
    with pytest.raises(ConfigError, match="data.tasks: .*'arithmetic'"):
        check(DataConfig(name="text_tasks", tasks=("shift",)))
