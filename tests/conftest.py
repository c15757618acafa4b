import atexit
import os
import shutil
import tempfile

import pytest

# Compiled XLA programs go to a disk cache for this session, shared by both test workers and the processes
# tests start: many tests compile the same programs again (a run and its resumption, the same small config),
# and compiling is most of a small test's time (the suite took 1,161 s on 2 cores without it). The session
# starts with an empty cache, so nothing from an earlier run is reused. Set before JAX starts; it is
# inherited by the workers, which pytest starts after reading this file.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxdfl-tests-xla-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ |= {"JAX_COMPILATION_CACHE_DIR": _cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                   "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}

# A small but real simulation: every test that runs the engine uses this and overrides what it needs.
SMALL = {
    "seed": 3, "rounds": 4, "num_devices": 8, "local_steps": 2, "batch_size": 16, "eval_every": 2,
    "checkpoint_every": 2,
    "method": {"name": "lora", "rank": 2},
    "topology": {"name": "ring"},
}


# Lighter still, for tests of what a run does around its rounds (files, errors, signals): 4 devices, 2 rounds.
LIGHT = SMALL | {"num_devices": 4, "rounds": 2, "local_steps": 1, "batch_size": 8, "eval_every": 2,
                 "checkpoint_every": 1, "model": {"adapt": ["q", "v"]}}


def light_yaml(tmp_path):
    """LIGHT as a config file, for command lines."""
    import yaml

    path = tmp_path / "light.yaml"
    path.write_text(yaml.safe_dump(LIGHT))
    return str(path)


@pytest.fixture
def small_config():
    import copy

    return copy.deepcopy(SMALL)


def patch_build(monkeypatch, change):
    """Make ``jaxdfl.run`` pass the Simulation it builds through ``change(sim) -> sim``."""
    from jaxdfl.sim import replicas

    real = replicas.build_simulation
    monkeypatch.setattr(replicas, "build_simulation", lambda cfg, *args, **kwargs: change(real(cfg, *args, **kwargs)))


def interrupt_before_round(r: int):
    """A ``change`` for :func:`patch_build`: Ctrl-C when the run plans round ``r`` (0-based)."""

    def change(sim):
        def mixing(q):
            if q == r:
                raise KeyboardInterrupt
            return sim.topology.mixing(q)

        return sim._replace(topology=sim.topology._replace(mixing=mixing))

    return change


def straight_and_resumed(cfg, out, monkeypatch, at: int = 3) -> tuple[list[dict], list[dict]]:
    """The ``metrics.jsonl`` records (``wall_s`` left out) of ``cfg`` run straight through, and of the same run
    interrupted when it plans round ``at`` and resumed from its newest checkpoint."""
    import json

    from jaxdfl.sim.run import run

    run(cfg, out=out / "straight", progress=False)
    with monkeypatch.context() as patch:
        patch_build(patch, interrupt_before_round(at))
        with pytest.raises(KeyboardInterrupt):
            run(cfg, out=out / "broken", progress=False)
    run(cfg, out=out / "broken", resume=True, progress=False)
    return tuple([{k: v for k, v in json.loads(line).items() if k != "wall_s"}
                  for line in (out / name / "metrics.jsonl").read_text().splitlines()]
                 for name in ("straight", "broken"))
