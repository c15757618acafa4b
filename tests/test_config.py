import pytest

from jaxdfl.config import Config, apply_overrides, list_bundled, load_config
from jaxdfl.errors import ConfigError


def test_default_is_the_quickstart():
    cfg = load_config(None)
    assert cfg == load_config("quickstart")
    assert cfg.num_devices == 8 and cfg.data.partition == "task_per_device" and cfg.topology.name != "server"


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(None, ["method.rank=8", "model.adapt=[q, v]", "optimizer.learning_rate=1e-2",
                             "method.a_std=null", "topology.name=erdos_renyi"])
    assert cfg.method.rank == 8 and cfg.model.adapt == ("q", "v")
    assert cfg.optimizer.learning_rate == pytest.approx(0.01) and cfg.method.a_std is None
    assert cfg.topology.name == "erdos_renyi"


def test_config_round_trips_through_a_dict():
    cfg = load_config(None, ["method.rank=3"])
    assert load_config(cfg.to_dict()) == cfg
    assert isinstance(load_config(cfg), Config)


@pytest.mark.parametrize("override, named", [
    ("nonexistent.key=1", "nonexistent.key"),
    ("method.nonexistent=1", "method.nonexistent"),
    ("rounds.deeper=1", "rounds.deeper"),
])
def test_unknown_override_names_the_full_path(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_yaml_key_names_its_path_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        load_config({"topology": {"name": "ring", "degre": 3}})
    assert "topology.degre" in str(err.value) and "degree" in str(err.value)


@pytest.mark.parametrize("override, named, says", [
    ("topology.name=star", "topology.name", "'ring'"),
    ("method.rank=x", "method.rank", "integer"),
    ("method.rank=0", "method.rank", ">= 1"),
    ("rounds=0", "rounds", ">= 1"),
    ("use_bool=1", "use_bool", "allowed"),
    ("optimizer.reset_state=3", "optimizer.reset_state", "true or false"),
    ("data.tasks=[shift, nope]", "data.tasks", "choose from"),
    ("model.adapt=[q, zz]", "model.adapt", "choose from"),
    ("data.test_fraction=1.5", "data.test_fraction", "(0, 1)"),
])
def test_bad_values_name_the_key_and_what_is_allowed(override, named, says):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert named in str(err.value) and says in str(err.value)


def test_infeasible_regular_graph_is_a_config_error():
    with pytest.raises(ConfigError, match="topology.degree"):
        load_config(None, ["topology.name=kregular", "topology.degree=3", "num_devices=5"])


def test_override_must_have_an_equals_sign():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["rounds"])


def test_missing_config_file_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="quickstart"):
        load_config("no/such/file.yaml")


def test_every_bundled_config_loads_and_opens_with_its_command():
    from jaxdfl.config import bundled_configs_dir

    names = list_bundled()
    assert "quickstart" in names
    for name in names:
        load_config(name)
        first = (bundled_configs_dir() / f"{name}.yaml").read_text().splitlines()[0]
        assert first.startswith("# jaxdfl run"), name
