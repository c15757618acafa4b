"""The same run on 1 and on 4 (emulated) accelerator devices gives the same numbers."""

import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import json, sys
import jax, numpy as np
from conftest import LIGHT
from jaxdfl.sim.run import run
# 8 devices: on 2 or 4 chips each holds several, so a ring's shifts run as ppermute of boundary rows
summary, state = run(LIGHT | {"num_devices": 8, "topology": {"name": "ring", "mixing_form": sys.argv[2]}},
                     out=sys.argv[1], progress=False)
leaves = [np.asarray(x) for x in jax.tree.leaves(state.adapter.params)]
shards = {len(x.sharding.device_set) for x in jax.tree.leaves(state)}
np.savez(sys.argv[1] + "/params.npz", *leaves)
print(json.dumps({"jax_devices": jax.device_count(), "state_spread_over": sorted(shards)}))
"""


def _run(tmp_path, n, form="dense"):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(n), "JAX_PLATFORMS": "cpu"}
    out = tmp_path / f"dev{n}-{form}"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out), form], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    params = np.load(out / "params.npz")
    return info, summary, [params[k] for k in sorted(params.files, key=lambda s: int(s.split("_")[1]))]


def test_one_two_and_four_devices_agree(tmp_path):
    """Dense mixing on 1 device against dense mixing on 4 and the ring's shifts (sparse: explicit ppermute
    between chips) on 2 and 4."""
    info1, summary1, params1 = _run(tmp_path, 1)
    assert info1 == {"jax_devices": 1, "state_spread_over": [1]}
    for n, form in ((4, "dense"), (2, "sparse"), (4, "sparse")):
        _check_same(summary1, params1, n, *_run(tmp_path, n, form))


def _check_same(summary1, params1, n, info4, summary4, params4):
    assert info4 == {"jax_devices": n, "state_spread_over": [n]}  # really sharded over n devices
    for a, b in zip(params1, params4):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for key in ("final_accuracy", "uplink_params_total"):
        assert abs(summary1[key] - summary4[key]) <= 1e-5
    for task in summary1["per_task_accuracy"]:
        assert abs(summary1["per_task_accuracy"][task] - summary4["per_task_accuracy"][task]) <= 1e-5
