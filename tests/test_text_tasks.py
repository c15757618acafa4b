import contextlib
import io
import re

import pytest

from jaxdfl.data.text_tasks import TASKS, generate, run_snippet, task_split
from jaxdfl.errors import ConfigError


@pytest.mark.parametrize("task", list(TASKS))
def test_deterministic_per_seed_and_different_across_seeds(task):
    assert generate(task, 50, seed=1) == generate(task, 50, seed=1)
    assert [e.prompt for e in generate(task, 50, seed=1)] != [e.prompt for e in generate(task, 50, seed=2)]


@pytest.mark.parametrize("task", list(TASKS))
def test_examples_are_well_formed_and_short(task):
    for ex in generate(task, 400, seed=0):
        assert ex.task == task
        assert 0 <= ex.label < len(ex.choices)
        assert len(set(ex.choices)) == len(ex.choices)
        assert len(ex.prompt.split()) < 60
        assert all(0 < len(c.split()) <= 5 for c in ex.choices)  # "call the fire brigade"


@pytest.mark.parametrize("task", list(TASKS))
def test_at_least_600_distinct_prompts_and_disjoint_split(task):
    train, test = task_split(task, 500, 100, seed=0)
    assert len(train) == 500 and len(test) == 100
    train_prompts, test_prompts = {e.prompt for e in train}, {e.prompt for e in test}
    assert len(train_prompts) == 500 and len(test_prompts) == 100
    assert not train_prompts & test_prompts


def test_split_asking_for_more_than_a_family_can_make_raises():
    with pytest.raises(ConfigError, match="distinct prompts"):
        task_split("code", 20_000, 1_000, seed=0)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ConfigError, match="reading, arithmetic, code, commonsense"):
        generate("boolq", 3, seed=0)


def test_reading_is_yes_no_and_balanced():
    examples = generate("reading", 400, seed=7)
    assert all(e.choices == ("yes", "no") and e.prompt.endswith("Answer yes or no.") for e in examples)
    assert 0.4 <= sum(e.answer == "yes" for e in examples) / len(examples) <= 0.6


def test_reading_answers_follow_from_the_passage():
    for ex in generate("reading", 300, seed=3):
        passage, question = ex.prompt.split("\n")
        if m := re.match(r"Is the (\w+) (\w+)\?", question):  # color question
            obj, color = m.groups()
            assert (f"{color} {obj}" in passage) == (ex.answer == "yes"), ex.prompt
        elif m := re.match(r"Is the (\w+) in the (\w+)\?", question):
            obj, place = m.groups()
            assert (f" {obj} in the {place}" in passage) == (ex.answer == "yes"), ex.prompt
        else:
            who, obj = re.match(r"Does (\w+) have a (\w+)\?", question).groups()
            owner = re.search(rf"(\w+) (?:keeps|stores|owns|has) a \w+ {obj}\b|{obj} in the \w+ belongs to (\w+)",
                              passage)
            assert (owner is not None and who in owner.groups()) == (ex.answer == "yes"), ex.prompt


def _solve_word_problem(prompt: str) -> int:
    nums = [int(x) for x in re.findall(r"\d+", prompt)]
    if "in each" in prompt:
        return nums[0] * nums[1] + (nums[2] if "already had" in prompt else 0)
    if "then gives" in prompt:
        return nums[0] + nums[1] - nums[2]
    if "gives" in prompt:
        return nums[0] - nums[1]
    return nums[0] + nums[1]


def test_arithmetic_answers_are_correct_and_choices_are_numbers():
    examples = generate("arithmetic", 400, seed=5)
    for ex in examples:
        assert ex.prompt.endswith("Give only the final number.")
        assert len(ex.choices) == 4 and all(c.isdigit() for c in ex.choices)
        assert int(ex.answer) == _solve_word_problem(ex.prompt), ex.prompt
        assert 0 <= int(ex.answer) <= 200
    # the correct answer is not always in the same place
    assert {ex.label for ex in examples} == {0, 1, 2, 3}


def test_code_answers_equal_the_output_of_running_the_snippet():
    examples = generate("code", 300, seed=11)
    for ex in examples:
        snippet = re.fullmatch(r"```python\n(.*)\n```\nWhat does this program print\? Give only the output\.",
                               ex.prompt, re.DOTALL).group(1)
        assert 2 <= len(snippet.splitlines()) <= 4
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(snippet, {})  # noqa: S102 - full builtins, independent of run_snippet
        assert out.getvalue() == ex.answer + "\n", ex.prompt
        assert run_snippet(snippet) == ex.answer
        assert len(ex.choices) == 4


def listed_options(prompt: str) -> list[str]:
    return re.search(r"^Options: (.+)\.$", prompt, re.MULTILINE).group(1).split("; ")


def test_commonsense_format_and_balance():
    examples = generate("commonsense", 300, seed=2)
    counts = [0, 0, 0]
    for ex in examples:
        assert list(ex.choices) == listed_options(ex.prompt)  # the replies are the listed options, in order
        assert len(set(ex.choices)) == 3
        assert ex.prompt.endswith("Answer with the correct option.")
        counts[ex.label] += 1
    assert all(abs(c - 100) <= 1 for c in counts)


def test_commonsense_ranking_questions_pick_the_extreme():
    from jaxdfl.data.text_tasks import HEAT_TIERS, WEIGHT_TIERS

    tier = {item: i for tiers in (WEIGHT_TIERS, HEAT_TIERS) for i, group in enumerate(tiers) for item in group}
    checked = 0
    for ex in generate("commonsense", 300, seed=4):
        question = ex.prompt.split("\n")[0]
        if m := re.match(r"Which of these is the (\w+)\?", question):
            ranks = {text: tier[text] for text in listed_options(ex.prompt)}
            pick = max if m.group(1) in ("heaviest", "hottest") else min
            assert ex.answer == pick(ranks, key=ranks.get)
            checked += 1
    assert checked > 30
