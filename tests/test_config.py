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
    ("optimizer.reset_state=3", "optimizer.reset_state", "true or false"),
    ("method.name=sgd", "method.name", "'so_lora'"),
    ("method.alpha=x", "method.alpha", "number"),
    ("data.tasks=[]", "data.tasks", "at least one"),
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
        assert first.startswith(("# jaxdfl run", "# jaxdfl learn")), name


def test_each_method_has_its_own_section_and_defaults():
    lori = load_config(None, ["method.name=lori"]).method
    proposed = load_config(None, ["method.name=so_lora"]).method
    assert (lori.density, lori.allocation, lori.refine, lori.moe_top_k) == (0.1, "uniform", "none", 0)
    assert (proposed.density, proposed.allocation, proposed.refine) == (0.5, "entropy", "column")
    assert lori.per_device_init and not load_config(None).method.per_device_init
    soft = load_config(None, ["method.name=tlora", "method.ratio=0.25"]).method
    assert soft.name == "tlora" and soft.ratio == 0.25 and type(soft).sends_deltas
    with pytest.raises(ConfigError, match="method.moe_top_k: must be >= 0"):
        load_config(None, ["method.name=so_lora", "method.moe_top_k=-1"])


def test_a_key_of_another_method_names_the_method_in_use():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["method.density=0.3"])  # the quick start runs lora, which has no density
    message = str(err.value)
    assert "method.density" in message and "method.name: lora" in message and "rank" in message
    with pytest.raises(ConfigError, match="method.nonexistent"):
        load_config(None, ["method.nonexistent=1"])  # no method has it


def test_cross_section_checks_read_method_properties():
    with pytest.raises(ConfigError, match="server_weights.*soft, tlora"):
        load_config(None, ["topology.name=server", "topology.server_weights=unbiased"])
    cfg = load_config(None, ["topology.name=server", "topology.server_weights=unbiased", "method.name=rlora",
                             "control.name=osfa"])
    assert cfg.control.name == "osfa"
