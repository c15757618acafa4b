import pytest

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
