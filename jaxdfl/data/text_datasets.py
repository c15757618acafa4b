"""Loaders for local copies of six public text benchmarks, in the file formats their authors publish.

Each loader reads one split file (plus, for PIQA and SocialIQA, its separate labels file) and returns
``list[TextExample]`` whose prompts are self-contained user messages for a chat model:

* multiple choice with listed options (PIQA, SocialIQA, ARC, HellaSwag): the options are lettered
  ``A. ...``, ``B. ...`` and the prompt ends with an instruction to answer with the letter; the choices are
  the letters.
* BoolQ: passage and question, ``Answer yes or no.``; the choices are ``("yes", "no")``.
* GSM8K: the question, ``Give only the final number.``; the single choice is the final answer (exact match).

Nothing is downloaded: fetch the originals yourself and pass the paths. Every problem with a file (missing,
malformed JSON, missing key, bad or misaligned label) raises :class:`~jaxdfl.errors.ConfigError` naming the
file and, where there is one, the line (``path:line``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from jaxdfl.data.text_example import TextExample
from jaxdfl.errors import ConfigError

LETTERS = "ABCDEFGHIJ"
LETTER_INSTRUCTION = "Answer with the letter of the correct option."

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------- helpers


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be None or a non-negative integer, got {limit!r}")


def _read_lines(path: PathLike, what: str) -> list[tuple[int, str]]:
    """The non-blank lines of a text file as ``(1-based line number, text)``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} file {p}: {e}") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def _records(path: PathLike, what: str, limit: int | None) -> tuple[list[tuple[int, dict]], int]:
    """Parse the first ``limit`` JSON objects of a JSONL file; also return how many records the file holds."""
    lines = _read_lines(path, what)
    out = []
    for lineno, line in lines if limit is None else lines[:limit]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{lineno}: malformed JSON in {what} file: {e.msg}") from None
        if not isinstance(rec, dict):
            raise ConfigError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        out.append((lineno, rec))
    return out, len(lines)


def _get(rec: dict, key: str, path: PathLike, lineno: int, kind: type | tuple[type, ...] = str):
    if key not in rec:
        raise ConfigError(f"{path}:{lineno}: missing key {key!r} (keys present: {sorted(rec)})")
    value = rec[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}:{lineno}: key {key!r} should be {name}, got {type(value).__name__}")
    return value.strip() if isinstance(value, str) else value


def _labels(labels_path: PathLike, data_path: PathLike, n_records: int, low: int, high: int) -> list[int]:
    """Integer labels, one per non-blank line, checked against ``[low, high]`` and the number of records."""
    if not Path(labels_path).is_file():
        raise ConfigError(f"labels file not found: {labels_path} (the labels of {data_path}, one integer a line; "
                          "pass labels_path= if it lives elsewhere)")
    lines = _read_lines(labels_path, "labels")
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


def _default_labels_path(path: PathLike) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}-labels.lst")


def _lettered(options: list[str]) -> tuple[str, tuple[str, ...]]:
    """The options as ``A. ...`` lines, and the letters."""
    letters = tuple(LETTERS[: len(options)])
    return "\n".join(f"{c}. {o}" for c, o in zip(letters, options)), letters


# ---------------------------------------------------------------------------------------------- loaders


def load_boolq(path: PathLike, limit: int | None = None) -> list[TextExample]:
    """BoolQ (Clark et al., 2019, "BoolQ: Exploring the Surprising Difficulty of Natural Yes/No Questions",
    NAACL; github.com/google-research-datasets/boolean-questions).

    Published format: ``train.jsonl`` / ``dev.jsonl``, one JSON object per line with keys ``question`` (str,
    lower case, no question mark), ``title`` (str, Wikipedia page title; optional here), ``answer`` (bool) and
    ``passage`` (str). Choices are ``("yes", "no")``; label 0 when ``answer`` is true.
    """
    _check_limit(limit)
    records, _ = _records(path, "BoolQ", limit)
    out = []
    for lineno, rec in records:
        question = _get(rec, "question", path, lineno)
        passage = _get(rec, "passage", path, lineno)
        answer = _get(rec, "answer", path, lineno, bool)
        title = _get(rec, "title", path, lineno) if "title" in rec else ""
        question = question[:1].upper() + question[1:]
        if not question.endswith("?"):
            question += "?"
        head = f"Title: {title}\n" if title else ""
        prompt = f"{head}Passage: {passage}\n\nQuestion: {question}\nAnswer yes or no."
        out.append(TextExample(prompt, ("yes", "no"), 0 if answer else 1, "boolq"))
    return out


def load_piqa(path: PathLike, labels_path: PathLike | None = None, limit: int | None = None) -> list[TextExample]:
    """PIQA (Bisk et al., 2020, "PIQA: Reasoning about Physical Commonsense in Natural Language", AAAI;
    yonatanbisk.com/piqa).

    Published format: ``train.jsonl`` / ``valid.jsonl``, one JSON object per line with keys ``goal``,
    ``sol1`` and ``sol2``; the labels are in a separate file ``train-labels.lst`` / ``valid-labels.lst``, one
    integer per line (0 = ``sol1``, 1 = ``sol2``). ``labels_path`` defaults to the sibling
    ``<stem>-labels.lst``. Choices are ``("A", "B")``.
    """
    _check_limit(limit)
    records, n = _records(path, "PIQA", limit)
    labels_path = _default_labels_path(path) if labels_path is None else labels_path
    labels = _labels(labels_path, path, n, 0, 1)
    out = []
    for (lineno, rec), label in zip(records, labels):
        goal = _get(rec, "goal", path, lineno)
        options, letters = _lettered([_get(rec, "sol1", path, lineno), _get(rec, "sol2", path, lineno)])
        prompt = f"Goal: {goal}\n\nWhich solution achieves the goal better?\n{options}\n\n{LETTER_INSTRUCTION}"
        out.append(TextExample(prompt, letters, label, "piqa"))
    return out


def load_siqa(path: PathLike, labels_path: PathLike | None = None, limit: int | None = None) -> list[TextExample]:
    """SocialIQA (Sap et al., 2019, "Social IQa: Commonsense Reasoning about Social Interactions", EMNLP;
    leaderboard.allenai.org/socialiqa, ``socialiqa-train-dev.zip``).

    Published format: ``train.jsonl`` / ``dev.jsonl``, one JSON object per line with keys ``context``,
    ``question``, ``answerA``, ``answerB`` and ``answerC``; the labels are in a separate file
    ``train-labels.lst`` / ``dev-labels.lst``, one integer per line, **1-based** (1 = ``answerA``, 2, 3).
    ``labels_path`` defaults to the sibling ``<stem>-labels.lst``. Choices are ``("A", "B", "C")``.
    """
    _check_limit(limit)
    records, n = _records(path, "SocialIQA", limit)
    labels_path = _default_labels_path(path) if labels_path is None else labels_path
    labels = _labels(labels_path, path, n, 1, 3)
    out = []
    for (lineno, rec), label in zip(records, labels):
        context = _get(rec, "context", path, lineno)
        question = _get(rec, "question", path, lineno)
        options, letters = _lettered([_get(rec, f"answer{c}", path, lineno) for c in "ABC"])
        prompt = f"{context}\n\nQuestion: {question}\n{options}\n\n{LETTER_INSTRUCTION}"
        out.append(TextExample(prompt, letters, label - 1, "siqa"))
    return out


def load_arc(path: PathLike, limit: int | None = None) -> list[TextExample]:
    """ARC, Easy or Challenge (Clark et al., 2018, "Think you have Solved Question Answering? Try ARC, the AI2
    Reasoning Challenge", arXiv:1803.05457; allenai.org/data/arc, ``ARC-V1-Feb2018.zip``).

    Published format: ``ARC-Easy-Train.jsonl``, ``ARC-Challenge-Test.jsonl``..., one JSON object per line
    with keys ``id``, ``question`` = ``{"stem": str, "choices": [{"text": str, "label": str}, ...]}`` and
    ``answerKey``, the ``label`` of the correct choice. Labels are letters A-E or, for a few questions, digits
    1-5; there are 3 to 5 choices. The options are relettered A, B, C... in file order; choices are those
    letters.
    """
    _check_limit(limit)
    records, _ = _records(path, "ARC", limit)
    out = []
    for lineno, rec in records:
        question = _get(rec, "question", path, lineno, dict)
        stem = _get(question, "stem", path, lineno)
        raw = _get(question, "choices", path, lineno, list)
        if not raw or len(raw) > len(LETTERS):
            raise ConfigError(f"{path}:{lineno}: question.choices has {len(raw)} entries, expected 1 to {len(LETTERS)}")
        texts, keys = [], []
        for choice in raw:
            if not isinstance(choice, dict):
                raise ConfigError(f"{path}:{lineno}: each of question.choices should be an object with 'text' "
                                  f"and 'label', got {type(choice).__name__}")
            texts.append(_get(choice, "text", path, lineno))
            keys.append(str(_get(choice, "label", path, lineno, (str, int))).strip())
        answer_key = str(_get(rec, "answerKey", path, lineno, (str, int))).strip()
        if answer_key not in keys:
            raise ConfigError(f"{path}:{lineno}: answerKey {answer_key!r} is not among the choice labels {keys}")
        options, letters = _lettered(texts)
        prompt = f"Question: {stem}\n{options}\n\n{LETTER_INSTRUCTION}"
        out.append(TextExample(prompt, letters, keys.index(answer_key), "arc"))
    return out


def _hellaswag_clean(text: str) -> str:
    """WikiHow contexts carry markers like ``[header]`` and ``[title]``; drop them as lm-evaluation-harness does."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def load_hellaswag(path: PathLike, limit: int | None = None) -> list[TextExample]:
    """HellaSwag (Zellers et al., 2019, "HellaSwag: Can a Machine Really Finish Your Sentence?", ACL;
    github.com/rowanz/hellaswag, ``data/hellaswag_{train,val,test}.jsonl``).

    Published format: one JSON object per line with keys ``ctx`` (= ``ctx_a`` + " " + ``ctx_b``; built from
    those two when absent), ``endings`` (list of 4 str), ``label`` (int index of the true ending; absent in the
    test split, which then cannot be loaded) and ``activity_label``, plus ``ind``, ``split``, ``source_id``...
    which are ignored. The WikiHow ``[header]``/``[title]`` markers are removed. Choices are ``("A", .., "D")``.
    """
    _check_limit(limit)
    records, _ = _records(path, "HellaSwag", limit)
    out = []
    for lineno, rec in records:
        if "ctx" in rec:
            ctx = _get(rec, "ctx", path, lineno)
        else:
            ctx_a, ctx_b = _get(rec, "ctx_a", path, lineno), _get(rec, "ctx_b", path, lineno)
            ctx = f"{ctx_a} {ctx_b[:1].upper()}{ctx_b[1:]}".strip()
        endings = _get(rec, "endings", path, lineno, list)
        if not endings or len(endings) > len(LETTERS) or not all(isinstance(e, str) for e in endings):
            raise ConfigError(f"{path}:{lineno}: 'endings' should be a list of 1 to {len(LETTERS)} strings")
        if "label" not in rec:
            raise ConfigError(f"{path}:{lineno}: missing key 'label'; the HellaSwag test split is unlabeled, "
                              "use hellaswag_train.jsonl or hellaswag_val.jsonl")
        label = rec["label"]
        if isinstance(label, str) and label.strip().isdigit():  # the Hugging Face copy stores it as a string
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(endings):
            raise ConfigError(f"{path}:{lineno}: label {rec['label']!r} should be an int in [0, {len(endings) - 1}]")
        activity = _get(rec, "activity_label", path, lineno) if "activity_label" in rec else ""
        options, letters = _lettered([_hellaswag_clean(e) for e in endings])
        head = f"Activity: {activity}\n" if activity else ""
        prompt = (f"Which ending continues the text most plausibly?\n\n{head}Text: {_hellaswag_clean(ctx)}\n\n"
                  f"{options}\n\n{LETTER_INSTRUCTION}")
        out.append(TextExample(prompt, letters, label, "hellaswag"))
    return out


def load_gsm8k(path: PathLike, limit: int | None = None) -> list[TextExample]:
    """GSM8K (Cobbe et al., 2021, "Training Verifiers to Solve Math Word Problems", arXiv:2110.14168;
    github.com/openai/grade-school-math, ``grade_school_math/data/{train,test}.jsonl``).

    Published format: one JSON object per line with keys ``question`` and ``answer``, a worked solution
    (with ``<<...>>`` calculator annotations) whose last line is ``#### <final answer>``. The example has the
    single choice ``(final answer,)`` with thousands separators removed (``#### 1,200`` -> ``"1200"``), label
    0: it is scored by exact match only.
    """
    _check_limit(limit)
    records, _ = _records(path, "GSM8K", limit)
    out = []
    for lineno, rec in records:
        question = _get(rec, "question", path, lineno)
        solution = _get(rec, "answer", path, lineno)
        if "####" not in solution:
            raise ConfigError(f"{path}:{lineno}: 'answer' has no final '#### <number>' line")
        final = solution.rsplit("####", 1)[1].strip().replace(",", "")
        if not final:
            raise ConfigError(f"{path}:{lineno}: the '####' line of 'answer' is empty")
        out.append(TextExample(f"{question}\n\nGive only the final number.", (final,), 0, "gsm8k"))
    return out


LOADERS: dict[str, Callable[..., list[TextExample]]] = {
    "boolq": load_boolq,
    "piqa": load_piqa,
    "siqa": load_siqa,
    "arc": load_arc,
    "hellaswag": load_hellaswag,
    "gsm8k": load_gsm8k,
}


def load_dataset_file(name: str, path: PathLike, limit: int | None = None) -> list[TextExample]:
    """Load ``path`` with the loader registered as ``name`` in :data:`LOADERS` (PIQA and SocialIQA take their
    labels from the sibling ``<stem>-labels.lst``)."""
    if name not in LOADERS:
        raise ConfigError(f"unknown text dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](path, limit=limit)


__all__ = ["LOADERS", "load_arc", "load_boolq", "load_dataset_file", "load_gsm8k", "load_hellaswag", "load_piqa",
           "load_siqa"]
