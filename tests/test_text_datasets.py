"""The benchmark loaders read the published file formats (tiny hand-written fixtures) and fail clearly."""

import json
import re
import shutil
from pathlib import Path

import pytest

from jaxdfl.data.text_datasets import (
    LOADERS,
    load_arc,
    load_boolq,
    load_dataset_file,
    load_gsm8k,
    load_hellaswag,
    load_piqa,
    load_siqa,
)
from jaxdfl.data.text_example import TextExample
from jaxdfl.errors import ConfigError

FIX = Path(__file__).parent / "fixtures" / "text"


def _line_of(prompt: str, letter: str) -> str:
    """The text listed under ``letter`` in a lettered-options prompt."""
    lines = [ln for ln in prompt.splitlines() if ln.startswith(f"{letter}. ")]
    assert len(lines) == 1, prompt
    return lines[0][3:]


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_boolq():
    ex = load_boolq(FIX / "boolq" / "dev.jsonl")
    assert [e.label for e in ex] == [0, 1, 0]
    assert all(e.choices == ("yes", "no") and e.task == "boolq" for e in ex)
    assert ex[1].answer == "no"
    p = ex[1].prompt
    assert "Penguins are a group of aquatic flightless birds." in p
    assert "Question: Can penguins fly?" in p and "Title: Penguin" in p
    assert p.endswith("Answer yes or no.")


def test_piqa_labels_from_sibling_file():
    ex = load_piqa(FIX / "piqa" / "valid.jsonl")
    assert [e.label for e in ex] == [0, 1, 0]
    assert ex[1].choices == ("A", "B") and ex[1].answer == "B"
    assert _line_of(ex[1].prompt, "B") == "Run the lid under hot water for a minute, then twist."
    assert _line_of(ex[0].prompt, ex[0].answer).startswith("leave the pit in")
    assert "How do I loosen a tight jar lid?" in ex[1].prompt
    assert ex[1].prompt.endswith("Answer with the letter of the correct option.")


def test_piqa_explicit_labels_path(tmp_path):
    labels = tmp_path / "other.lst"
    labels.write_text("1\n1\n1\n")
    assert [e.label for e in load_piqa(FIX / "piqa" / "valid.jsonl", labels_path=labels)] == [1, 1, 1]


def test_siqa_labels_are_one_based():
    ex = load_siqa(FIX / "siqa" / "dev.jsonl")
    assert [e.label for e in ex] == [1, 0, 2]  # file says 2, 1, 3
    assert ex[0].choices == ("A", "B", "C")
    assert _line_of(ex[0].prompt, ex[0].answer) == "grateful to Casey"
    assert _line_of(ex[2].prompt, "C") == "apologize and help clean it up"
    assert ex[0].prompt.startswith("Jordan forgot his lunch") and "How would Jordan feel" in ex[0].prompt
    assert all(e.task == "siqa" for e in ex)


def test_arc_letter_and_digit_keys():
    ex = load_arc(FIX / "arc" / "ARC-Easy-Test.jsonl")
    assert [e.label for e in ex] == [1, 2, 3]
    assert [len(e.choices) for e in ex] == [4, 3, 5]
    assert ex[1].choices == ("A", "B", "C")  # digit labels 1-3 are relettered
    assert _line_of(ex[1].prompt, ex[1].answer) == "carbon dioxide"
    assert _line_of(ex[0].prompt, "B") == "the Sun"
    assert _line_of(ex[2].prompt, "E") == "a stopwatch" and ex[2].answer == "D"
    assert "What do plants need from the air" in ex[1].prompt


def test_hellaswag():
    ex = load_hellaswag(FIX / "hellaswag" / "hellaswag_val.jsonl")
    assert [e.label for e in ex] == [2, 0]
    assert ex[0].choices == ("A", "B", "C", "D")
    assert _line_of(ex[0].prompt, "C") == "scrubs a plate with a sponge and rinses it under the tap."
    assert "A man stands at a kitchen sink" in ex[0].prompt and "Washing dishes" in ex[0].prompt
    # WikiHow markers are removed from context and endings
    assert "[" not in ex[1].prompt and "How to water a houseplant. Check the soil first." in ex[1].prompt
    assert _line_of(ex[1].prompt, "B") == "Pour a whole bucket on the leaves every hour."


def test_hellaswag_unlabeled_test_split_is_a_clear_error():
    path = FIX / "hellaswag" / "hellaswag_test.jsonl"
    with pytest.raises(ConfigError, match=r"hellaswag_test\.jsonl:1: missing key 'label'"):
        load_hellaswag(path)


def test_gsm8k_final_answer():
    ex = load_gsm8k(FIX / "gsm8k" / "test.jsonl")
    assert [e.choices for e in ex] == [("72",), ("1350",)]  # "#### 1,350" loses its comma
    assert all(e.label == 0 and e.task == "gsm8k" for e in ex)
    assert ex[0].prompt.startswith("A baker makes 24 muffins")
    assert ex[0].prompt.endswith("Give only the final number.") and "<<" not in ex[0].prompt


@pytest.mark.parametrize("name, rel, n", [
    ("boolq", "boolq/dev.jsonl", 3), ("piqa", "piqa/valid.jsonl", 3), ("siqa", "siqa/dev.jsonl", 3),
    ("arc", "arc/ARC-Easy-Test.jsonl", 3), ("hellaswag", "hellaswag/hellaswag_val.jsonl", 2),
    ("gsm8k", "gsm8k/test.jsonl", 2),
])
def test_dispatch_and_limit(name, rel, n):
    full = load_dataset_file(name, FIX / rel)
    assert len(full) == n and all(isinstance(e, TextExample) and e.task == name for e in full)
    assert all(0 <= e.label < len(e.choices) for e in full)
    assert load_dataset_file(name, FIX / rel, limit=1) == full[:1]
    assert load_dataset_file(name, str(FIX / rel), limit=0) == []
    assert LOADERS[name](FIX / rel, limit=100) == full


def test_unknown_name_and_bad_limit():
    with pytest.raises(ConfigError, match="unknown text dataset 'mmlu'.*boolq"):
        load_dataset_file("mmlu", FIX / "boolq" / "dev.jsonl")
    with pytest.raises(ConfigError, match="limit"):
        load_boolq(FIX / "boolq" / "dev.jsonl", limit=-1)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_missing_file_names_the_path(name, tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match="not found: " + re.escape(str(path))):
        load_dataset_file(name, path)


def test_malformed_json_names_file_and_line(tmp_path):
    good = json.loads((FIX / "boolq" / "dev.jsonl").read_text().splitlines()[0])
    path = _write(tmp_path / "dev.jsonl", [good, "", '{"question": "broken", '])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:3: malformed JSON"):
        load_boolq(path)


def test_missing_key_names_key_and_line(tmp_path):
    path = _write(tmp_path / "train.jsonl", [
        {"question": "q", "answer": "#### 1"},
        {"question": "q"},
    ])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:2: missing key 'answer'"):
        load_gsm8k(path)
    arc = _write(tmp_path / "arc.jsonl", [{"id": "x", "question": {"choices": []}, "answerKey": "A"}])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(arc))}:1: missing key 'stem'"):
        load_arc(arc)


def test_bad_values(tmp_path):
    boolq = _write(tmp_path / "b.jsonl", [{"question": "q", "passage": "p", "answer": "True"}])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(boolq))}:1: key 'answer' should be bool"):
        load_boolq(boolq)
    gsm = _write(tmp_path / "g.jsonl", [{"question": "q", "answer": "no final line"}])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(gsm))}:1: .*####"):
        load_gsm8k(gsm)
    arc = _write(tmp_path / "a.jsonl", [{"id": "x", "answerKey": "C", "question": {
        "stem": "s", "choices": [{"text": "t", "label": "A"}, {"text": "u", "label": "B"}]}}])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(arc))}:1: answerKey 'C' is not among"):
        load_arc(arc)
    hs = _write(tmp_path / "h.jsonl", [{"ctx": "c", "endings": ["a", "b", "c", "d"], "label": 4}])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(hs))}:1: label 4"):
        load_hellaswag(hs)


def _copy_pair(tmp_path, dataset, stem):
    shutil.copy(FIX / dataset / f"{stem}.jsonl", tmp_path / f"{stem}.jsonl")
    return tmp_path / f"{stem}.jsonl", tmp_path / f"{stem}-labels.lst"


def test_missing_labels_file(tmp_path):
    data, labels = _copy_pair(tmp_path, "piqa", "valid")
    with pytest.raises(ConfigError, match=rf"labels file not found: {re.escape(str(labels))}"):
        load_piqa(data)


def test_labels_length_mismatch(tmp_path):
    data, labels = _copy_pair(tmp_path, "siqa", "dev")
    labels.write_text("1\n2\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(labels))} has 2 labels but {re.escape(str(data))} has 3"):
        load_siqa(data)
    with pytest.raises(ConfigError, match="has 2 labels"):  # checked against the whole file even with a limit
        load_siqa(data, limit=1)


def test_labels_out_of_range(tmp_path):
    data, labels = _copy_pair(tmp_path, "siqa", "dev")
    labels.write_text("1\n0\n3\n")  # SocialIQA labels are 1-based: 0 is invalid
    with pytest.raises(ConfigError, match=rf"{re.escape(str(labels))}:2: label 0 out of range \[1, 3\]"):
        load_siqa(data)
    data, labels = _copy_pair(tmp_path, "piqa", "valid")
    labels.write_text("0\n2\n1\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(labels))}:2: label 2 out of range \[0, 1\]"):
        load_piqa(data)
    labels.write_text("0\nx\n1\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(labels))}:2: label 'x' is not an integer"):
        load_piqa(data)


def test_hub_layouts_read_from_parquet(tmp_path):
    """The Hub copies of ARC (flat choices) and PIQA (a label column) as parquet files, read through datasets
    like the published files, give the same examples."""
    import datasets

    published = load_arc(FIX / "arc" / "ARC-Easy-Test.jsonl")
    rows = [json.loads(line) for line in (FIX / "arc" / "ARC-Easy-Test.jsonl").read_text().splitlines()]
    hub = [{"id": r["id"], "question": r["question"]["stem"], "answerKey": r["answerKey"],
            "choices": {"text": [c["text"] for c in r["question"]["choices"]],
                        "label": [c["label"] for c in r["question"]["choices"]]}} for r in rows]
    datasets.Dataset.from_list(hub).to_parquet(tmp_path / "arc.parquet")
    assert load_arc(tmp_path / "arc.parquet") == published

    piqa = [json.loads(line) for line in (FIX / "piqa" / "valid.jsonl").read_text().splitlines()]
    labels = [int(v) for v in (FIX / "piqa" / "valid-labels.lst").read_text().split()]
    datasets.Dataset.from_list([r | {"label": v} for r, v in zip(piqa, labels)]).to_parquet(tmp_path / "piqa.parquet")
    assert load_piqa(tmp_path / "piqa.parquet") == load_piqa(FIX / "piqa" / "valid.jsonl")
    bad = _write(tmp_path / "p.jsonl", [piqa[0] | {"label": 1}, piqa[1] | {"label": 5}])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(bad))}:2: label '5' out of range"):
        load_piqa(bad)


def test_a_column_of_mixed_types_names_the_line(tmp_path):
    rows = [{"question": "q", "passage": "p", "answer": True}, {"question": "q", "passage": "p", "answer": [1]}]
    path = _write(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:2: key 'answer' should be bool, got list"):
        load_boolq(path)
