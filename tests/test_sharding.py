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
m = int(sys.argv[3])
summary, state = run(LIGHT | {"num_devices": m, "topology": {"name": "ring", "mixing_form": sys.argv[2]}},
                     out=sys.argv[1], progress=False)
leaves = [np.asarray(x)[:m] for x in jax.tree.leaves(state.adapter.params)]  # the real devices (no padding)
shards = {len(x.sharding.device_set) for x in jax.tree.leaves(state)}
np.savez(sys.argv[1] + "/params.npz", *leaves)
print(json.dumps({"jax_devices": jax.device_count(), "state_spread_over": sorted(shards)}))
"""


def _run(tmp_path, n, form="dense", devices=8):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(n), "JAX_PLATFORMS": "cpu"}
    out = tmp_path / f"dev{n}-{form}-{devices}"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out), form, str(devices)], env=env, capture_output=True,
                          text=True, cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    params = np.load(out / "params.npz")
    return info, summary, [params[k] for k in sorted(params.files, key=lambda s: int(s.split("_")[1]))]


def test_one_two_and_four_devices_agree(tmp_path):
    """Dense mixing on 1 device against the ring's shifts (sparse: explicit ppermute between chips) on 2 and 4
    (dense mixing on 4 chips: the six-device test below)."""
    info1, summary1, params1 = _run(tmp_path, 1)
    assert info1 == {"jax_devices": 1, "state_spread_over": [1]}
    for n, form in ((2, "sparse"), (4, "sparse")):
        _check_same(summary1, params1, n, *_run(tmp_path, n, form))


def test_six_devices_fill_four_chips_with_two_inert_ones(tmp_path):
    """6 devices on 4 chips: padded to 8 (two inert devices) instead of the 2 chips gcd(6, 4) would use; the
    numbers of one chip, with the inert devices in no metric."""
    info1, summary1, params1 = _run(tmp_path, 1, devices=6)
    for form in ("dense", "sparse"):
        _check_same(summary1, params1, 4, *_run(tmp_path, 4, form, devices=6))
        metrics1, metrics4 = (_metrics(tmp_path / f"dev{n}-{f}-6") for n, f in ((1, "dense"), (4, form)))
        for a, b in zip(metrics1, metrics4):
            for key in ("train_loss", "uplink_params", "senders", "collision_empirical", "num_clusters"):
                assert abs(a[key] - b[key]) <= 1e-5, (key, a[key], b[key])


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _check_same(summary1, params1, n, info4, summary4, params4):
    assert info4 == {"jax_devices": n, "state_spread_over": [n]}  # really sharded over n devices
    for a, b in zip(params1, params4):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for key in ("final_accuracy", "uplink_params_total", "trainable_params", "state_bytes_per_device"):
        assert abs(summary1[key] - summary4[key]) <= 1e-5
    for task in summary1["per_task_accuracy"]:
        assert abs(summary1["per_task_accuracy"][task] - summary4["per_task_accuracy"][task]) <= 1e-5
