"""Reading benchmark tables for :mod:`jaxdfl.data.text_datasets`: local JSON lines, JSON or parquet files and
Hub copies, through Hugging Face ``datasets``, with every problem named by file and line (or row)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from jaxdfl.errors import ConfigError

PathLike = str | os.PathLike


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be None or a non-negative integer, got {limit!r}")


def read_lines(path: PathLike, what: str) -> list[tuple[int, str]]:
    """The non-blank lines of a text file as ``(1-based line number, text)``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} file {p}: {e}") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


HUB = "hub:"


def load_table(source: str, what: str):
    """``datasets.load_dataset`` on a local file (by its suffix) or a ``hub:`` spec; the rows as dicts."""
    import datasets

    datasets.disable_progress_bars()
    if source.startswith(HUB):  # hub:NAME[:CONFIG]:SPLIT, or hub:NAME for its train split
        parts = source[len(HUB):].split(":")
        name, config, split = parts[0], parts[1:-1], parts[-1] if len(parts) > 1 else "train"
        args, kwargs = (name, *config), {"split": split}
    else:
        kind = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}.get(Path(source).suffix.lower(), "json")
        args, kwargs = (kind,), {"data_files": source, "split": "train"}
    try:
        return datasets.load_dataset(*args, **kwargs).to_list()
    except Exception as err:  # datasets wraps parse and schema errors in its own exception types
        raise ConfigError(f"cannot read {what} {source}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def read_records(path: PathLike, what: str, limit: int | None) -> tuple[list[tuple[str, dict]], int]:
    """The first ``limit`` records of a table, each with where it came from (``path:line`` for JSON lines,
    ``path, row n`` otherwise); also how many records the table holds."""
    source = str(path)
    lines = None
    if not source.startswith(HUB):
        if Path(path).suffix.lower() in (".jsonl", ""):
            lines = read_lines(path, what)  # also: not found, unreadable
            for lineno, line in lines:  # name the first malformed line, which datasets would not
                try:
                    json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{lineno}: malformed JSON in {what} file: {e.msg}") from None
        elif not Path(path).is_file():
            directory = " (it is a directory)" if Path(path).is_dir() else ""
            raise ConfigError(f"{what} file not found: {path}{directory}")
    rows = load_table(source, what) if lines is None or lines else []
    out = []
    for i, rec in enumerate(rows if limit is None else rows[:limit]):
        where = f"{path}:{lines[i][0]}" if lines is not None else f"{path}, row {i + 1}"
        if not isinstance(rec, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        out.append((where, {k: v for k, v in rec.items() if v is not None}))  # datasets fills absent keys with None
    return out, len(rows)


def field(rec: dict, key: str, where: str, kind: type | tuple[type, ...] = str):
    if key not in rec:
        raise ConfigError(f"{where}: missing key {key!r} (keys present: {sorted(rec)})")
    value = rec[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: key {key!r} should be {name}, got {type(value).__name__}")
    return value.strip() if isinstance(value, str) else value


def read_labels(labels_path: PathLike, data_path: PathLike, n_records: int, low: int, high: int) -> list[int]:
    """Integer labels, one per non-blank line, checked against ``[low, high]`` and the number of records."""
    if not Path(labels_path).is_file():
        raise ConfigError(f"labels file not found: {labels_path} (the labels of {data_path}, one integer a line; "
                          "pass labels_path= if it lives elsewhere)")
    lines = read_lines(labels_path, "labels")
    if len(lines) != n_records:
        raise ConfigError(f"labels file {labels_path} has {len(lines)} labels but {data_path} has {n_records} "
                          "records; they must align line by line")
    labels = []
    for lineno, line in lines:
        try:
            value = int(line.strip())
        except ValueError:
            raise ConfigError(f"{labels_path}:{lineno}: label {line.strip()!r} is not an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{labels_path}:{lineno}: label {value} out of range [{low}, {high}]")
        labels.append(value)
    return labels


def inline_labels(records: list[tuple[str, dict]], low: int, high: int) -> list[int] | None:
    """The ``label`` column of a Hub copy (ints, or digit strings), checked against ``[low, high]``; None
    when the records carry no labels (the published files keep them apart)."""
    if not records or "label" not in records[0][1]:
        return None
    labels = []
    for where, rec in records:
        value = str(field(rec, "label", where, (str, int))).strip()
        if not value.isdigit() or not low <= int(value) <= high:
            raise ConfigError(f"{where}: label {value!r} out of range [{low}, {high}]")
        labels.append(int(value))
    return labels


def default_labels_path(path: PathLike) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}-labels.lst")
