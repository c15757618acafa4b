"""The one record every text task and dataset loader produces."""

from __future__ import annotations

from typing import NamedTuple


class TextExample(NamedTuple):
    """One question with its candidate answers.

    Attributes:
      prompt: the user's message, complete (passage, question and any listed options); the chat template
        is applied later, by the tokenizer of the model being tuned.
      choices: the candidate replies of the assistant, as the model should write them (``"yes"``, ``"42"``,
        ``"B"``...). Multiple-choice evaluation scores each by its log-likelihood after the prompt.
      label: index of the correct reply in ``choices``; ``choices[label]`` is also the target of exact-match
        evaluation of generated answers.
      task: the task family or dataset the example comes from (``"boolq"``, ``"arithmetic"``...).
    """

    prompt: str
    choices: tuple[str, ...]
    label: int
    task: str

    @property
    def answer(self) -> str:
        return self.choices[self.label]
