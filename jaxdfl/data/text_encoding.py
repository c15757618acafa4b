"""Text examples → packed token arrays the vmapped engine can slice like images.

One example becomes ``[choices, 2, L]`` int32: for choice c, row 0 holds the chat-formatted prompt
(the tokenizer's chat template, generation prompt included) followed by the reply and the end-of-turn token,
right-padded; row 1 is 1 on the reply tokens (what the model is trained and scored on) and 0 elsewhere.
Examples with fewer choices than the widest one get all-zero padding choices, which never win.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxdfl.data.text_example import TextExample
from jaxdfl.errors import ConfigError


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids of the chat-formatted user turn, ending with the assistant's generation prompt."""
    messages = [{"role": "user", "content": prompt}]
    if tokenizer.chat_template is None:  # a base model: plain text, reply after a newline
        return tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])


def reply_ids(tokenizer, reply: str) -> list[int]:
    """The reply's tokens plus the end-of-turn token (so "4" and "42" are told apart)."""
    return tokenizer(reply, add_special_tokens=False)["input_ids"] + [end_of_turn(tokenizer)]


def end_of_turn(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else (
        tokenizer.eos_token_id)


def encode(examples: Sequence[TextExample], tokenizer, max_tokens: int,
           num_choices: int | None = None, length: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Pack ``examples`` → ``(x [n, choices, 2, L], y [n], reply_len)``.

    ``L`` is the longest prompt + reply (or ``length``, to share one shape across splits) and must not
    exceed ``max_tokens``; ``reply_len`` is the longest reply in tokens. A ConfigError names the first
    example that does not fit."""
    rows = []
    for i, ex in enumerate(examples):
        p = prompt_ids(tokenizer, ex.prompt)
        rows.append([(p, reply_ids(tokenizer, c)) for c in ex.choices])
        longest = max(len(p) + len(r) for p, r in rows[-1])
        if longest > max_tokens:
            raise ConfigError(f"data.max_tokens={max_tokens}: example {i} of task {ex.task!r} needs {longest} "
                              f"tokens; raise data.max_tokens")
    width = length or max(len(p) + len(r) for row in rows for p, r in row)
    choices = num_choices or max(len(row) for row in rows)
    x = np.zeros((len(rows), choices, 2, width), np.int32)
    for i, row in enumerate(rows):
        for c, (p, r) in enumerate(row):
            x[i, c, 0, : len(p) + len(r)] = p + r
            x[i, c, 1, len(p): len(p) + len(r)] = 1
    reply_len = max(len(r) for row in rows for _, r in row)
    return x, np.array([ex.label for ex in examples], np.int32), reply_len
