"""Configs that ship with jaxdfl (the repository's top-level ``configs/``, installed as ``jaxdfl.configs``)."""

from __future__ import annotations

from pathlib import Path

from jaxdfl.errors import ConfigError


def bundled_configs_dir() -> Path:
    """The folder holding the bundled configs."""
    try:
        import jaxdfl.configs
    except ImportError:  # running from a source checkout, where configs/ sits beside jaxdfl/
        return Path(__file__).resolve().parent.parent / "configs"
    return Path(jaxdfl.configs.__file__).parent


def list_bundled() -> list[str]:
    """Names of the bundled configs, e.g. ``quickstart`` or ``paper_a/lora``."""
    root = bundled_configs_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_path(name_or_path: str | Path) -> Path:
    """A config given as a file path or as a bundled name (``quickstart``, ``paper_a/lora``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_configs_dir() / f"{str(name_or_path).removesuffix('.yaml')}.yaml"
    if bundled.is_file():
        return bundled
    raise ConfigError(f"config {str(name_or_path)!r} is neither a file nor a bundled config; "
                      f"bundled: {', '.join(list_bundled())}")
