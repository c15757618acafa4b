"""Running many devices: data by reference, a sample of devices evaluated, sparse mixing chosen by itself."""

import jax
import numpy as np
import pytest

from conftest import LIGHT


@pytest.mark.parametrize("method", [{"name": "lora", "rank": 2}, {"name": "so_lora", "rank": 2}])
def test_an_evaluation_sample_scores_those_devices_as_a_full_evaluation_does(method):
    from jaxdfl import build_simulation, load_config

    cfg = LIGHT | {"num_devices": 6, "method": method}
    every, sample = (build_simulation(load_config(cfg | {"eval_devices": n})) for n in (0, 3))
    assert every.evaluated is None and len(sample.evaluated) == 3
    state = every.init_fn(jax.random.key(0))
    state = state._replace(adapter=jax.tree.map(  # adapters that differ from device to device
        lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape, a.dtype)
        if np.issubdtype(a.dtype, np.floating) else a, state.adapter))
    w = every.topology.mixing(0)
    np.testing.assert_allclose(sample.evaluate_fn(state, w), every.evaluate_fn(state, w)[sample.evaluated],
                               rtol=1e-6)


def test_a_thousand_devices_sharing_examples_run_with_sparse_mixing(tmp_path):
    from jaxdfl import run

    cfg = LIGHT | {"num_devices": 1024, "rounds": 1, "eval_every": 1, "batch_size": 2, "eval_devices": 8,
                   "checkpoint_every": 0, "data": {"partition": "iid", "examples_per_device": 2},
                   "model": {"adapt": ["q"]}}
    summary, state = run(cfg, out=tmp_path, progress=False)
    assert summary["evaluated_devices"] == 8 and summary["num_devices"] == 1024
    assert summary["num_clusters"] == 1  # the ring, counted from its neighbour lists
    assert np.isfinite(summary["final_accuracy"])
    from jaxdfl import build_simulation, load_config

    assert build_simulation(load_config(cfg)).sparse_mixing  # a ring of 1,024: auto picks the gather
