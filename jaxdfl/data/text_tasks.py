"""Four procedurally generated text-task families for fine-tuning a small chat model, one per capability
group of the multi-task LoRA paper: reading comprehension, math, code and commonsense reasoning.

The paper tunes on public benchmarks of those groups (BoolQ-style reading, GSM8K-style math, code, and
commonsense multiple choice), far beyond a 135M-parameter model on a CPU, so each family keeps the *kind*
of skill and the answer format of its group at a size such a model can learn (and nothing is downloaded):

- ``reading``: a short passage about made-up people, objects and places, and a yes/no question on it.
- ``arithmetic``: one- or two-step word problems whose answer is a number from 0 to 200.
- ``code``: predict what a tiny Python program prints; the answer comes from running the program.
- ``commonsense``: three-option multiple choice over small hand-written knowledge tables.

Every example is a :class:`~jaxdfl.data.text_example.TextExample`; generation is deterministic in
``(task, n, seed)``, and the position of the correct answer among the choices is balanced and shuffled.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import numpy as np

from jaxdfl.data.text_example import TextExample
from jaxdfl.errors import ConfigError

NAMES = ("Mara", "Tom", "Lena", "Omar", "Priya", "Jonas", "Aiko", "Sam", "Nina", "Diego", "Kofi", "Elsa",
         "Ravi", "Zoe", "Ivan", "Chloe")


def _pick(rng: np.random.Generator, seq, k: int | None = None):
    """One item of ``seq`` (``k=None``) or a list of ``k`` distinct items, in random order."""
    if k is None:
        return seq[rng.integers(len(seq))]
    return [seq[i] for i in rng.choice(len(seq), size=k, replace=False)]


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels in ``[0, k)``, each value used ``n // k`` or ``n // k + 1`` times, in random order."""
    return rng.permutation(np.arange(n) % k)


def _choices(answer: str, candidates: list[str], k: int, label: int, rng: np.random.Generator) -> tuple[str, ...]:
    """``k`` distinct choices: ``answer`` at index ``label`` and ``k - 1`` of the wrong ``candidates``."""
    wrong = list(dict.fromkeys(c for c in candidates if c != answer))
    others = _pick(rng, wrong, k - 1)
    return tuple(others[:label] + [answer] + others[label:])


def _near_misses(answer: int, wrong: list[int]) -> list[str]:
    """Plausible wrong numbers: ``wrong`` (e.g. the result of the wrong operation) and small slips, all >= 0."""
    return [str(v) for v in [*wrong, answer + 1, answer - 1, answer + 2, answer - 2, answer + 10, answer - 10]
            if v >= 0]


# --- reading -----------------------------------------------------------------------------------------------

COLORS = ("red", "blue", "green", "yellow", "black", "white", "purple", "brown")
OBJECTS = ("kite", "bicycle", "lamp", "guitar", "backpack", "teapot", "camera", "scarf", "notebook", "basket",
           "clock", "drum", "wagon", "vase", "jacket", "mug")
PLACES = ("shed", "garage", "kitchen", "attic", "garden", "hallway", "basement", "bedroom")


def reading(n: int, rng: np.random.Generator) -> list[TextExample]:
    """Yes/no reading comprehension: a 2–3 sentence passage saying who has which colored object (and, for
    some, where it is kept), then a question about ownership, color or place. Half the answers are "yes"."""
    out = []
    for label in _balanced_labels(n, 2, rng):
        yes = label == 0
        k = int(rng.integers(2, 4))
        names, objs, colors = _pick(rng, NAMES, k), _pick(rng, OBJECTS, k + 1), _pick(rng, COLORS, k)
        places = _pick(rng, PLACES, k)
        with_place = rng.random(k) < 0.5
        sentences = []
        for i in range(k):
            who, c, o, p = names[i], colors[i], objs[i], places[i]
            if with_place[i]:
                sentences.append(_pick(rng, (f"{who} keeps a {c} {o} in the {p}.",
                                             f"{who} stores a {c} {o} in the {p}.",
                                             f"The {c} {o} in the {p} belongs to {who}.")))
            else:
                sentences.append(_pick(rng, (f"{who} owns a {c} {o}.", f"{who} has a {c} {o}.")))
        i = int(rng.integers(k))
        kind = _pick(rng, ("own", "color", "place") if with_place[i] else ("own", "color"))
        if kind == "own":
            # "no": the object belongs to someone else in the passage, or is not mentioned at all
            obj = objs[i] if yes else objs[(i + 1 + int(rng.integers(k))) % (k + 1)]
            question = f"Does {names[i]} have a {obj}?"
        elif kind == "color":
            color = colors[i] if yes else _pick(rng, [c for c in COLORS if c != colors[i]])
            question = f"Is the {objs[i]} {color}?"
        else:
            place = places[i] if yes else _pick(rng, [p for p in PLACES if p != places[i]])
            question = f"Is the {objs[i]} in the {place}?"
        prompt = f"{' '.join(sentences)}\n{question} Answer yes or no."
        out.append(TextExample(prompt, ("yes", "no"), int(label), "reading"))
    return out


# --- arithmetic --------------------------------------------------------------------------------------------

ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps", "shells", "cards", "eggs",
         "coins", "balloons")
CONTAINERS = ("boxes", "bags", "jars", "baskets")


def _word_problem(rng: np.random.Generator) -> tuple[str, int, list[int]]:
    """One word problem: ``(text, answer, results of plausible wrong operations)``."""
    who, other = _pick(rng, NAMES, 2)
    item, box = _pick(rng, ITEMS), _pick(rng, CONTAINERS)
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))
    kind = int(rng.integers(5))
    if kind == 0:
        a, b = r(2, 99), r(2, 99)
        verb = _pick(rng, ("buys", "finds", "is given"))
        return (f"{who} has {a} {item} and {verb} {b} more. How many {item} does {who} have now?",
                a + b, [abs(a - b)])
    if kind == 1:
        a = r(10, 120)
        b = r(2, a)
        return (f"{who} has {a} {item} and gives {b} to {other}. How many {item} does {who} have left?",
                a - b, [a + b])
    if kind == 2:
        a, b = r(2, 12), r(2, 12)
        return (f"There are {a} {box} with {b} {item} in each. How many {item} are there in total?",
                a * b, [a + b, a * (b - 1)])
    if kind == 3:
        a, b = r(5, 80), r(2, 60)
        c = r(1, a + b)
        text = (f"{who} has {a} {item}, buys {b} more and then gives {c} to {other}. "
                f"How many {item} does {who} have now?")
        return text, a + b - c, [a + b + c, a - b + c]
    a, b, c = r(2, 9), r(2, 12), r(1, 40)
    text = f"{who} buys {a} {box} with {b} {item} in each and already had {c}. How many {item} does {who} have now?"
    return text, a * b + c, [a * b, a + b + c]


def arithmetic(n: int, rng: np.random.Generator) -> list[TextExample]:
    """Word problems (add, subtract, multiply; one or two steps) with answers in 0..200 and four numeric
    choices: the answer, wrong-operation results and off-by-a-little slips."""
    out = []
    for label in _balanced_labels(n, 4, rng):
        text, answer, wrong = _word_problem(rng)
        choices = _choices(str(answer), _near_misses(answer, wrong), 4, int(label), rng)
        out.append(TextExample(f"{text} Give only the final number.", choices, int(label), "arithmetic"))
    return out


# --- code --------------------------------------------------------------------------------------------------

WORDS = ("planet", "garden", "python", "market", "silver", "candle", "frozen", "jacket", "window", "rocket",
         "tiger", "lemon", "bright", "orange", "cloud", "monkey")  # no repeated letters
_SAFE_BUILTINS = {"print": print, "range": range, "len": len, "max": max, "min": min}


def run_snippet(code: str) -> str:
    """What ``code`` prints (trailing newline removed), run with only a few builtins available."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {"__builtins__": _SAFE_BUILTINS})  # noqa: S102 - our own generated snippets only
    return buf.getvalue().rstrip("\n")


def _snippet(rng: np.random.Generator) -> tuple[str, list[str]]:
    """A 2–4 line program printing one short value, and plausible wrong outputs for it."""
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))
    kind = int(rng.integers(6))
    if kind == 0:
        a, b = r(5, 30), r(2, 9)
        results = {"+": a + b, "-": a - b, "*": a * b, "//": a // b, "%": a % b}
        op = _pick(rng, list(results))
        return f"a = {a}\nb = {b}\nprint(a {op} b)", _near_misses(results[op], list(results.values()))
    if kind == 1:
        a, b, c = r(1, 9), r(1, 9), r(2, 5)
        return f"x = {a}\nx = x + {b}\nprint(x * {c})", _near_misses((a + b) * c, [a + b * c, a * c + b])
    if kind == 2:
        start, stop = r(0, 3), r(5, 10)
        total = sum(range(start, stop))
        return (f"total = 0\nfor i in range({start}, {stop}):\n    total += i\nprint(total)",
                _near_misses(total, [total + stop, total - start, total - (stop - 1)]))  # off by one
    if kind == 3:
        xs = [r(0, 9) for _ in range(r(3, 7))]
        if rng.random() < 0.5:
            return f"xs = {xs}\nprint(len(xs))", _near_misses(len(xs), [sum(xs), max(xs)])
        return f"xs = {xs}\nxs.append({r(0, 9)})\nprint(len(xs))", _near_misses(len(xs) + 1, [len(xs), len(xs) + 2])
    if kind == 4:
        word = _pick(rng, WORDS)
        i = r(-len(word), len(word) - 1)
        return f's = "{word}"\nprint(s[{i}])', list(word)
    xs = [r(0, 50) for _ in range(r(3, 6))]
    results = {"max(xs)": max(xs), "min(xs)": min(xs), "max(xs) - min(xs)": max(xs) - min(xs)}
    expr = _pick(rng, list(results))
    return f"xs = {xs}\nprint({expr})", _near_misses(results[expr], [*results.values(), xs[0], xs[-1]])


def code(n: int, rng: np.random.Generator) -> list[TextExample]:
    """Code-output prediction: a tiny Python program (arithmetic, a loop sum, ``len``, string indexing,
    ``max``/``min``) in a code block; the answer is what running it prints, among four candidate outputs."""
    out = []
    for label in _balanced_labels(n, 4, rng):
        snippet, wrong = _snippet(rng)
        choices = _choices(run_snippet(snippet), wrong, 4, int(label), rng)
        prompt = f"```python\n{snippet}\n```\nWhat does this program print? Give only the output."
        out.append(TextExample(prompt, choices, int(label), "code"))
    return out


# --- commonsense -------------------------------------------------------------------------------------------

# Tiers far enough apart that any item of a higher tier is clearly above any item of a lower one.
WEIGHT_TIERS = (("a feather", "a leaf", "a paper clip", "a soap bubble"),
                ("a book", "a shoe", "an apple", "a cup"),
                ("a bicycle", "a chair", "a suitcase", "a television"),
                ("a car", "an elephant", "a truck", "a bus"))
HEAT_TIERS = (("an ice cube", "a snowball", "an icicle", "a bowl of ice cream"),
              ("a pillow", "a wooden spoon", "a sock", "a pencil"),
              ("a campfire", "a candle flame", "a hot oven", "a pot of boiling water"))
TOOLS = {"cut paper": "scissors", "drive in a nail": "a hammer", "dig a hole": "a shovel",
         "sweep the floor": "a broom", "tighten a bolt": "a wrench", "measure a length": "a ruler",
         "unlock a door": "a key", "water the plants": "a watering can", "eat soup": "a spoon",
         "take a photo": "a camera", "brush your teeth": "a toothbrush", "boil water": "a kettle",
         "see in the dark": "a flashlight", "fix a torn shirt": "a needle and thread"}
HABITATS = {"the ocean": ("a whale", "a shark", "an octopus", "a dolphin", "a jellyfish"),
            "the desert": ("a camel", "a scorpion", "a fennec fox"),
            "a farm": ("a cow", "a pig", "a sheep", "a chicken", "a goat"),
            "the polar ice": ("a polar bear", "a walrus", "a penguin"),
            "the jungle": ("a monkey", "a parrot", "a jaguar", "a gorilla")}
SITUATIONS = {"you feel cold": "put on a warm coat", "you are thirsty": "drink a glass of water",
              "you are sleepy at night": "go to bed", "it starts to rain": "open an umbrella",
              "you are hungry": "eat a meal", "your hands are dirty": "wash your hands",
              "the room is dark": "turn on the light", "you cut your finger": "put on a bandage",
              "the phone rings": "answer the phone", "a friend has a birthday": "give them a present",
              "your shoelace is untied": "tie your shoelace", "you see a fire": "call the fire brigade"}


def _mc_question(rng: np.random.Generator) -> tuple[str, str, list[str]]:
    """One commonsense question: ``(question, correct option, two wrong options)``."""
    kind = int(rng.integers(4))
    if kind == 0:
        tiers, high, low = _pick(rng, ((WEIGHT_TIERS, "heaviest", "lightest"), (HEAT_TIERS, "hottest", "coldest")))
        picked = sorted(rng.choice(len(tiers), size=3, replace=False))
        items = [_pick(rng, tiers[t]) for t in picked]  # ascending
        if rng.random() < 0.5:
            return f"Which of these is the {high}?", items[2], items[:2]
        return f"Which of these is the {low}?", items[0], items[1:]
    if kind == 1:
        purpose = _pick(rng, list(TOOLS))
        return (f"Which tool would you use to {purpose}?", TOOLS[purpose],
                _pick(rng, [t for p, t in TOOLS.items() if p != purpose], 2))
    if kind == 2:
        home = _pick(rng, list(HABITATS))
        return (f"Where does {_pick(rng, HABITATS[home])} usually live?", home,
                _pick(rng, [h for h in HABITATS if h != home], 2))
    situation = _pick(rng, list(SITUATIONS))
    return (f"What should you do when {situation}?", SITUATIONS[situation],
            _pick(rng, [a for s, a in SITUATIONS.items() if s != situation], 2))


def commonsense(n: int, rng: np.random.Generator) -> list[TextExample]:
    """Three-option commonsense questions (heaviest/lightest, hottest/coldest, which tool, which habitat, what
    to do when...) with the options listed in the prompt; the reply is the correct option's text (scored as
    lm-evaluation-harness scores PIQA: by each option's likelihood), its position balanced over the three."""
    out = []
    for label in _balanced_labels(n, 3, rng):
        question, correct, wrong = _mc_question(rng)
        options = _choices(correct, wrong, 3, int(label), rng)
        prompt = f"{question}\nOptions: {'; '.join(options)}.\nAnswer with the correct option."
        out.append(TextExample(prompt, options, int(label), "commonsense"))
    return out


# --- registry ----------------------------------------------------------------------------------------------

TASKS: dict[str, Callable[[int, np.random.Generator], list[TextExample]]] = {
    "reading": reading, "arithmetic": arithmetic, "code": code, "commonsense": commonsense}


def generate(task: str, n: int, seed: int) -> list[TextExample]:
    """``n`` examples of ``task``, deterministic in ``(task, n, seed)``; prompts may repeat. Each task draws
    from its own random stream, so the same seed gives unrelated draws in different tasks."""
    if task not in TASKS:
        raise ConfigError(f"unknown text task {task!r}; known tasks: {', '.join(TASKS)}")
    if n < 0:
        raise ConfigError(f"number of {task!r} examples must be >= 0, got {n}")
    return TASKS[task](n, np.random.default_rng([seed, list(TASKS).index(task)]))


def task_split(task: str, n_train: int, n_test: int, seed: int) -> tuple[list[TextExample], list[TextExample]]:
    """``n_train`` training and ``n_test`` test examples of ``task`` with no prompt in common (nor repeated
    within either set): generates a pool twice the size needed, drops repeated prompts, and splits it."""
    pool = generate(task, 2 * (n_train + n_test), seed)
    first: dict[str, TextExample] = {}
    for ex in pool:
        first.setdefault(ex.prompt, ex)
    unique = list(first.values())
    if len(unique) < n_train + n_test:
        raise ConfigError(f"text task {task!r} produced only {len(unique)} distinct prompts in a pool of "
                          f"{len(pool)}, fewer than the {n_train} + {n_test} train and test examples asked for")
    return unique[:n_train], unique[n_train:n_train + n_test]
