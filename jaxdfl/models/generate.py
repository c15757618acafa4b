"""Greedy decoding with a decoder, and exact-match evaluation of generated answers.

Decoding runs as one jitted program over a right-padded token buffer ``[batch, prompt + new]``: every step
recomputes the causal forward pass over the buffer (no key/value cache) and writes each row's argmax token
after its own last token. At the sizes jaxdfl evaluates (prompts of ~100 tokens, answers of a few tokens)
this costs a few forward passes per answer and keeps one code path for training and decoding.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.data.text_encoding import end_of_turn, prompt_ids
from jaxdfl.data.text_example import TextExample
from jaxdfl.models import decoder


@partial(jax.jit, static_argnames=("spec", "max_new_tokens", "hook_fn"))
def _greedy(params, tokens, lengths, spec, max_new_tokens, hook_fn=None, hook_args=None):
    rows = jnp.arange(tokens.shape[0])
    hook = None if hook_fn is None else (lambda name, h: hook_fn(hook_args, name, h))

    def step(i, carry):
        tokens, lengths = carry
        h = decoder.hidden_states(params, tokens, spec, hook)[rows, lengths - 1]  # [batch, hidden]
        nxt = decoder.logits_from_hidden(params, h, spec, hook).argmax(-1).astype(tokens.dtype)
        return tokens.at[rows, lengths].set(nxt), lengths + 1

    return jax.lax.fori_loop(0, max_new_tokens, step, (tokens, lengths))[0]


def greedy(params, spec: decoder.DecoderSpec, prompts: Sequence[Sequence[int]], max_new_tokens: int,
           hook_fn=None, hook_args=None, prompt_width: int | None = None) -> list[list[int]]:
    """The greedy continuation (``max_new_tokens`` ids) of every prompt (lists of token ids).

    An adapter attaches through ``hook_fn(hook_args, name, h) -> dy | None``: ``hook_fn`` is static (define
    it once, not per call, or every call compiles anew) and ``hook_args`` a pytree of arrays (the adapter).
    ``prompt_width`` pads the buffer to a fixed size, so that calls with different prompts share one program."""
    lengths = np.array([len(p) for p in prompts], np.int32)
    tokens = np.zeros((len(prompts), (prompt_width or lengths.max()) + max_new_tokens), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
    out = np.asarray(_greedy(params, jnp.asarray(tokens), jnp.asarray(lengths), spec, max_new_tokens, hook_fn,
                             hook_args))
    return [out[i, n: n + max_new_tokens].tolist() for i, n in enumerate(lengths)]


def normalise(text: str) -> str:
    """Lower case, outer whitespace and a trailing full stop removed: ``" Yes."`` → ``"yes"``."""
    return text.strip().rstrip(".").strip().lower()


def generate_answers(params, spec: decoder.DecoderSpec, tokenizer, examples: Sequence[TextExample],
                     max_new_tokens: int = 8, hook_fn=None, hook_args=None, batch_size: int = 16) -> list[str]:
    """The model's reply to each example's prompt (chat template applied), cut at the end-of-turn token
    (adapter: see :func:`greedy`)."""
    stop = end_of_turn(tokenizer)
    prompts = [prompt_ids(tokenizer, ex.prompt) for ex in examples]
    width = max(len(p) for p in prompts)
    replies = []
    for at in range(0, len(prompts), batch_size):
        chunk = prompts[at: at + batch_size]
        chunk = chunk + [chunk[0]] * (batch_size - len(chunk))  # one shape for every batch: one compilation
        for ids in greedy(params, spec, chunk, max_new_tokens, hook_fn, hook_args, width)[: len(prompts) - at]:
            replies.append(tokenizer.decode(ids[: ids.index(stop)] if stop in ids else ids))
    return replies


def exact_match(replies: Sequence[str], examples: Sequence[TextExample]) -> float:
    """Share of replies equal to the correct answer after :func:`normalise`."""
    return float(np.mean([normalise(r) == normalise(ex.answer) for r, ex in zip(replies, examples)]))
