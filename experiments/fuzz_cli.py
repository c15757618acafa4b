"""Fuzz the command line with bad configs and arguments: every case must end with exit 0 (a valid config,
checked with ``jaxdfl run --check``, which builds the simulation and trains nothing) or exit 2 with exactly one
line on stderr, never a traceback, never a hang.

    python experiments/fuzz_cli.py               # 500 cases, seed 0; prints the counts (docs/reliability.md)
    python experiments/fuzz_cli.py --cases 2000 --seed 1

Each case is one of: a config key (every key of every section and of every method's section) set to a value
drawn from a pool of wrong types, out-of-range numbers, non-finite numbers and odd strings; a YAML file with
a random defect (a list at the top level, a key twice, bad indentation, a binary blob, an unknown section);
or mangled arguments (unknown flags, missing values, flags without ``=``, paths that are files or unwritable).
``tests/test_fuzz_cli.py`` runs the same generator under hypothesis in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import random
import signal
import sys
import tempfile
import time
import typing
from pathlib import Path

VALUES = ["-1", "0", "1", "2", "3", "-0.5", "0.5", "1.5", "1e9", "-1e9", "1e-30", "nan", ".inf", "-.inf", "true",
          "false", "null", "''", "abc", "[]", "[1, 2]", "[q, zz]", "{}", "{a: 1}", "'1'", "1e3", "999999",
          "[shift, nope]", "ring", "lora", "so_lora", "server", "d2d", "tsfa", "'   '", "\"x\\ny\""]


def config_keys() -> list[str]:
    """Every dotted key of the config, the keys of every method's section included."""
    from jaxdfl.config import Config

    def walk(cls, prefix):
        keys = []
        for f in dataclasses.fields(cls):
            options = getattr(cls, "VARIANTS", {}).get(f.name)
            tp = typing.get_type_hints(cls)[f.name]
            sections = list(dict.fromkeys(options.values())) if options else (
                [tp] if dataclasses.is_dataclass(tp) else [])
            if sections:
                keys += sorted({k for s in sections for k in walk(s, f"{prefix}{f.name}.")})
            else:
                keys.append(prefix + f.name)
        return keys

    return walk(Config, "")


def make_case(rng: random.Random, keys: list[str], tmp: Path) -> list[str]:
    """One command line (argv without the program name)."""
    kind = rng.random()
    argv = ["run", "--check"]
    if kind < 0.65:  # one or two config keys set to drawn values
        for _ in range(rng.choice((1, 1, 2))):
            key = rng.choice(keys + ["nonexistent", "method.bogus", "rounds.deeper", "model..dim"])
            argv += ["--set", f"{key}={rng.choice(VALUES)}"]
    elif kind < 0.85:  # a YAML file with a defect
        path = tmp / f"case{rng.randrange(10**9)}.yaml"
        path.write_bytes(rng.choice([
            b"- rounds\n- seed\n", b"rounds: 3\nrounds: 4\n", b"method:\n  name: lora\n   rank: 2\n",
            b"\x00\xff\xfe binary", b"method: [1, 2]\n", b"unknown_section:\n  a: 1\n", b"rounds: {a: 1}\n",
            b"model:\n  adapt: 7\n", b"data:\n  tasks: []\n", b"method:\n  name: lora\n  density: 0.2\n",
            b"seed: 1e999\n", b": : :\n", b"topology: ring\n", b"",
        ]))
        argv.append(str(path))
    else:  # mangled arguments
        file = tmp / "a-file"
        file.write_text("x")
        argv = rng.choice([
            ["run", "--set"], ["run", "--set", "rounds"], ["run", "--bogus"], ["run", "a", "b"],
            ["run", "--check", "--out", str(file)], ["run", "--check", "--out", str(file / "under")],
            ["run", "no/such/config.yaml"], ["plot", str(tmp / "missing")], ["pull", "no-such-model"],
            ["run", "--check", "--log", "mlflow"], ["frobnicate"], [], ["run", "--check", "--set", "=1"],
        ])
    return argv


def run_case(argv: list[str], timeout_s: int = 120) -> dict:
    """Run ``jaxdfl`` in this process: its exit status, stderr lines, and whether it raised or hung."""
    from jaxdfl.cli import main

    def hang(signum, frame):
        raise TimeoutError

    err, out = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(timeout_s)
    outcome = {"argv": argv, "raised": None, "hung": False, "code": None}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            outcome["code"] = main(argv)
    except TimeoutError:
        outcome["hung"] = True
    except BaseException as exc:  # a traceback the user would have seen
        outcome["raised"] = f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    lines = [line for line in err.getvalue().splitlines() if not line.startswith("jaxdfl: warning:")]
    outcome["stderr"] = lines
    outcome["clean"] = (not outcome["hung"] and outcome["raised"] is None and
                        (outcome["code"] == 0 or (outcome["code"] == 2 and len(lines) == 1
                                                  and lines[0].startswith("jaxdfl: error:"))))
    return outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng, keys, start = random.Random(args.seed), config_keys(), time.time()
    counts = {"cases": 0, "clear error (exit 2, one line)": 0, "valid config (exit 0)": 0, "traceback": 0,
              "hang": 0, "other": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.cases):
            outcome = run_case(make_case(rng, keys, Path(tmp)))
            counts["cases"] += 1
            if outcome["hung"]:
                counts["hang"] += 1
            elif outcome["raised"]:
                counts["traceback"] += 1
            elif outcome["clean"]:
                counts["clear error (exit 2, one line)" if outcome["code"] == 2 else "valid config (exit 0)"] += 1
            else:
                counts["other"] += 1
            if not outcome["clean"]:
                print(f"case {i}: {outcome}", file=sys.__stderr__)
    for name, n in counts.items():
        print(f"{name:<34} {n}")
    print(f"{len(keys)} config keys; {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
