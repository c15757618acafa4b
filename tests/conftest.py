import pytest

# A small but real simulation: every test that runs the engine uses this and overrides what it needs.
SMALL = {
    "seed": 3, "rounds": 4, "num_devices": 8, "local_steps": 2, "batch_size": 16, "eval_every": 2,
    "checkpoint_every": 2,
    "method": {"name": "lora", "rank": 2},
    "topology": {"name": "ring"},
}


@pytest.fixture
def small_config():
    import copy

    return copy.deepcopy(SMALL)
