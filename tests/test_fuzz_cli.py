"""Property: whatever is typed on the command line (bad config values, defective YAML files, mangled
arguments), ``jaxdfl`` ends with exit 0 (a valid config, checked with --check) or exit 2 and exactly one line on
stderr: never a traceback, never a hang. The cases come from ``experiments/fuzz_cli.py``, which runs 500+ of
them and reports the counts in docs/reliability.md."""

import random
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
from fuzz_cli import config_keys, make_case, run_case  # noqa: E402

KEYS = config_keys()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_any_command_line_ends_in_exit_0_or_one_clear_line(seed, tmp_path):
    outcome = run_case(make_case(random.Random(seed), KEYS, tmp_path), timeout_s=120)
    assert outcome["clean"], outcome


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
                   st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_of_any_key_ends_in_exit_0_or_one_clear_line(key, value, tmp_path):
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    outcome = run_case(["run", "--check", "--out", str(tmp_path / "run"), "--set", f"{key}={text}"], timeout_s=120)
    assert outcome["clean"], outcome


def test_the_generator_reaches_every_section_and_method():
    for key in ("seed", "method.moe_top_k", "method.ratio", "network.delay_bound", "control.rank_max",
                "data.num_shards", "topology.s_max", "optimizer.learning_rate", "model.adapt"):
        assert key in KEYS, key
