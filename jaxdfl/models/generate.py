"""Greedy decoding with a decoder, and exact-match evaluation of generated answers.

Decoding runs as one jitted program over a right-padded token buffer ``[batch, prompt + new]`` with a
key/value cache: one pass over the prompt buffer, then one token per row and step, each row writing its argmax
token right after its own last token (rows have different prompt lengths).
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
    hook = None if hook_fn is None else (lambda name, h: hook_fn(hook_args, name, h))
    b, width = tokens.shape
    rows = jnp.arange(b)
    cache = decoder.empty_cache(spec, b, width, params["embed"]["table"].dtype)
    prompt = width - max_new_tokens
    # prefill: the whole prompt buffer at once (padding past a row's length is overwritten as it decodes)
    positions = jnp.broadcast_to(jnp.arange(prompt), (b, prompt))
    h, cache = decoder.hidden_states_cached(params, tokens[:, :prompt], positions, cache, spec, hook)
    first = decoder.logits_from_hidden(params, h[rows, lengths - 1], spec, hook).argmax(-1).astype(tokens.dtype)

    def step(i, carry):
        tokens, cache, last = carry
        at = lengths + i  # where `last` goes
        tokens = tokens.at[rows, at].set(last)
        h, cache = decoder.hidden_states_cached(params, last[:, None], at[:, None], cache, spec, hook)
        nxt = decoder.logits_from_hidden(params, h[:, 0], spec, hook).argmax(-1).astype(tokens.dtype)
        return tokens, cache, nxt

    tokens, _, last = jax.lax.fori_loop(0, max_new_tokens - 1, step, (tokens, cache, first))
    return tokens.at[rows, lengths + max_new_tokens - 1].set(last)


def greedy(params, spec: decoder.DecoderSpec, prompts: Sequence[Sequence[int]], max_new_tokens: int,
           hook_fn=None, hook_args=None, prompt_width: int | None = None) -> list[list[int]]:
    """The greedy continuation (``max_new_tokens`` ids) of every prompt (lists of token ids).

    An adapter attaches through ``hook_fn(hook_args, name, h) -> dy | None``: ``hook_fn`` is static (define
    it once, not per call, or every call compiles anew) and ``hook_args`` a pytree of arrays (the adapter).
    ``prompt_width`` pads the buffer to a fixed size, so that calls with different prompts share one program."""
    lengths = np.array([len(p) for p in prompts], np.int32)
    if prompt_width is not None and lengths.max() > prompt_width:
        raise ValueError(f"a prompt of {lengths.max()} tokens does not fit prompt_width={prompt_width}")
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
