"""Loaders for six public text benchmarks, in the file formats their authors publish and in the layouts of
their Hugging Face Hub copies.

Each loader reads one split through Hugging Face ``datasets`` (``load_dataset``): a local JSON lines, JSON or
parquet file, or ``hub:NAME[:CONFIG]:SPLIT`` (e.g. ``hub:google/boolq:validation``) where a network reaches
the Hub. PIQA and SocialIQA as published keep their labels in a separate file; their Hub copies carry a
``label`` column, which is used when present. Each returns ``list[TextExample]`` whose prompts are
self-contained user messages for a chat model:

* multiple choice with listed options (PIQA, SocialIQA, ARC, HellaSwag): the options are lettered
  ``A. ...``, ``B. ...`` and the prompt ends with an instruction to answer with the letter; the choices are
  the letters.
* BoolQ: passage and question, ``Answer yes or no.``; the choices are ``("yes", "no")``.
* GSM8K: the question, ``Give only the final number.``; the single choice is the final answer (exact match).

Local files are never fetched: download the originals yourself and pass the paths. Every problem with a file
(missing, malformed JSON, missing key, bad or misaligned label) raises :class:`~jaxdfl.errors.ConfigError`
naming the file and the line (``path:line``) of a JSON lines file, or the row of any other table
(``path, row n``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from jaxdfl.data.tables import (PathLike, check_limit, default_labels_path, field, inline_labels,
                                read_labels, read_records)
from jaxdfl.data.text_example import TextExample
from jaxdfl.errors import ConfigError

LETTERS = "ABCDEFGHIJ"
LETTER_INSTRUCTION = "Answer with the letter of the correct option."


# ---------------------------------------------------------------------------------------------- loaders


def _lettered(options: list[str]) -> tuple[str, tuple[str, ...]]:
    """The options as ``A. ...`` lines, and the letters."""
    letters = tuple(LETTERS[: len(options)])
    return "\n".join(f"{c}. {o}" for c, o in zip(letters, options)), letters


def load_boolq(path: PathLike, limit: int | None = None) -> list[TextExample]:
    """BoolQ (Clark et al., 2019, "BoolQ: Exploring the Surprising Difficulty of Natural Yes/No Questions",
    NAACL; github.com/google-research-datasets/boolean-questions).

    Published format: ``train.jsonl`` / ``dev.jsonl``, one JSON object per line with keys ``question`` (str,
    lower case, no question mark), ``title`` (str, Wikipedia page title; optional here), ``answer`` (bool) and
    ``passage`` (str). Choices are ``("yes", "no")``; label 0 when ``answer`` is true.
    """
    check_limit(limit)
    records, _ = read_records(path, "BoolQ", limit)
    out = []
    for where, rec in records:
        question = field(rec, "question", where)
        passage = field(rec, "passage", where)
        answer = field(rec, "answer", where, bool)
        title = field(rec, "title", where) if "title" in rec else ""
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
    check_limit(limit)
    records, n = read_records(path, "PIQA", limit)
    labels = inline_labels(records, 0, 1) or read_labels(labels_path or default_labels_path(path), path, n, 0, 1)
    out = []
    for (where, rec), label in zip(records, labels):
        goal = field(rec, "goal", where)
        options, letters = _lettered([field(rec, "sol1", where), field(rec, "sol2", where)])
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
    check_limit(limit)
    records, n = read_records(path, "SocialIQA", limit)
    labels = inline_labels(records, 1, 3) or read_labels(labels_path or default_labels_path(path), path, n, 1, 3)
    out = []
    for (where, rec), label in zip(records, labels):
        context = field(rec, "context", where)
        question = field(rec, "question", where)
        options, letters = _lettered([field(rec, f"answer{c}", where) for c in "ABC"])
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
    check_limit(limit)
    records, _ = read_records(path, "ARC", limit)
    out = []
    for where, rec in records:
        question = field(rec, "question", where, (dict, str))
        if isinstance(question, str):  # the Hub copy: question text, choices {"text": [...], "label": [...]}
            hub = field(rec, "choices", where, dict)
            stem, raw = question, [{"text": t, "label": k} for t, k in zip(field(hub, "text", where, list),
                                                                           field(hub, "label", where, list))]
        else:
            stem, raw = field(question, "stem", where), field(question, "choices", where, list)
        if not raw or len(raw) > len(LETTERS):
            raise ConfigError(f"{where}: question.choices has {len(raw)} entries, expected 1 to {len(LETTERS)}")
        texts, keys = [], []
        for choice in raw:
            if not isinstance(choice, dict):
                raise ConfigError(f"{where}: each of question.choices should be an object with 'text' "
                                  f"and 'label', got {type(choice).__name__}")
            texts.append(field(choice, "text", where))
            keys.append(str(field(choice, "label", where, (str, int))).strip())
        answer_key = str(field(rec, "answerKey", where, (str, int))).strip()
        if answer_key not in keys:
            raise ConfigError(f"{where}: answerKey {answer_key!r} is not among the choice labels {keys}")
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
    check_limit(limit)
    records, _ = read_records(path, "HellaSwag", limit)
    out = []
    for where, rec in records:
        if "ctx" in rec:
            ctx = field(rec, "ctx", where)
        else:
            ctx_a, ctx_b = field(rec, "ctx_a", where), field(rec, "ctx_b", where)
            ctx = f"{ctx_a} {ctx_b[:1].upper()}{ctx_b[1:]}".strip()
        endings = field(rec, "endings", where, list)
        if not endings or len(endings) > len(LETTERS) or not all(isinstance(e, str) for e in endings):
            raise ConfigError(f"{where}: 'endings' should be a list of 1 to {len(LETTERS)} strings")
        if "label" not in rec:
            raise ConfigError(f"{where}: missing key 'label'; the HellaSwag test split is unlabeled, "
                              "use hellaswag_train.jsonl or hellaswag_val.jsonl")
        label = rec["label"]
        if isinstance(label, str) and label.strip().isdigit():  # the Hugging Face copy stores it as a string
            label = int(label)
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(endings):
            raise ConfigError(f"{where}: label {rec['label']!r} should be an int in [0, {len(endings) - 1}]")
        activity = field(rec, "activity_label", where) if "activity_label" in rec else ""
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
    check_limit(limit)
    records, _ = read_records(path, "GSM8K", limit)
    out = []
    for where, rec in records:
        question = field(rec, "question", where)
        solution = field(rec, "answer", where)
        if "####" not in solution:
            raise ConfigError(f"{where}: 'answer' has no final '#### <number>' line")
        final = solution.rsplit("####", 1)[1].strip().replace(",", "")
        if not final:
            raise ConfigError(f"{where}: the '####' line of 'answer' is empty")
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
    """Load ``path`` (a local file or a ``hub:`` spec) with the loader registered as ``name`` in
    :data:`LOADERS` (published PIQA and SocialIQA take their labels from the sibling ``<stem>-labels.lst``)."""
    if name not in LOADERS:
        raise ConfigError(f"unknown text dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](path, limit=limit)


__all__ = ["LOADERS", "load_arc", "load_boolq", "load_dataset_file", "load_gsm8k", "load_hellaswag", "load_piqa",
           "load_siqa"]
