"""What the engine trains and scores: a model's loss, its per-class scores, and the pass statistics read.

Two kinds, behind one interface, so local training, evaluation and the so_lora statistics never ask which
model they run:

* :func:`classification`: a classifier ``apply(base, x, hook) -> [batch, classes]``; cross-entropy loss.
* :func:`choice_likelihood`: a decoder LM on packed multiple-choice text (``x`` ``[batch, 4, L]``, a prompt and
  all its candidate replies in one sequence, see :mod:`jaxdfl.data.text_encoding`). The loss is the negative
  log-likelihood of the correct reply's tokens (supervised fine-tuning on the answer); a choice's score is
  the summed log-probability of its reply tokens, so ``argmax`` is multiple-choice log-likelihood evaluation.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdfl.data.text_encoding import POSITIONS, PREDICTORS, SEGMENTS, TOKENS
from jaxdfl.models import decoder


class Objective(NamedTuple):
    """Pure functions of ``(base, x, ..., hook)``; ``hook`` is the adapter hook of one device.

    Attributes:
      loss: ``(base, x, y, hook) -> scalar`` on a batch ``x`` ``[batch, ...]``, ``y`` ``[batch]``.
      scores: ``(base, x, hook) -> [batch, classes]``; the prediction is its argmax.
      forward: ``(base, x, hook) -> Array``, one plain pass over ``x`` whose hook calls see ``[batch, ..., in]``
        inputs (what a method's ``calibrate`` reads).
    """

    loss: Callable
    scores: Callable
    forward: Callable


def classification(apply: Callable) -> Objective:
    def scores(base, x, hook):
        return apply(base, x, hook=hook)

    def loss(base, x, y, hook):
        return optax.softmax_cross_entropy_with_integer_labels(scores(base, x, hook), y).mean()

    return Objective(loss, scores, scores)


def choice_logprobs(spec: decoder.DecoderSpec, num_choices: int, reply_tokens: int, base, x: jax.Array,
                    hook) -> tuple[jax.Array, jax.Array]:
    """Summed log-probability of every choice's reply and its number of tokens, both ``[batch, num_choices]``.

    ``x`` ``[batch, 4, L]`` packed examples; the replies sit in one run of at most ``reply_tokens`` tokens
    after the prompt. Only those positions' predictors go through the vocabulary head (a fifth of SmolLM2's
    FLOPs per token)."""
    tokens, segments = x[:, TOKENS], x[:, SEGMENTS]
    h = decoder.hidden_states(base, tokens, spec, hook, x[:, POSITIONS], segments)  # [batch, L, hidden]
    first = jnp.argmax(segments > 0, axis=-1)  # the first reply token
    at = first[:, None] + jnp.arange(reply_tokens)  # [batch, reply_tokens]
    seg = jnp.where(at < tokens.shape[1], jnp.take_along_axis(segments, at, axis=1, mode="clip"), 0)
    at = jnp.minimum(at, tokens.shape[1] - 1)
    h_pred = jnp.take_along_axis(h, jnp.take_along_axis(x[:, PREDICTORS], at, axis=1)[..., None], axis=1)
    logp = jax.nn.log_softmax(decoder.logits_from_hidden(base, h_pred, spec, hook).astype(jnp.float32), -1)
    picked = jnp.take_along_axis(logp, jnp.take_along_axis(tokens, at, axis=1)[..., None], -1)[..., 0]
    owner = jax.nn.one_hot(seg - 1, num_choices, dtype=jnp.float32)  # [batch, reply_tokens, choices]; 0 off-reply
    return jnp.einsum("bt,btc->bc", picked, owner), owner.sum(1)


def choice_likelihood(spec: decoder.DecoderSpec, num_choices: int, reply_tokens: int) -> Objective:
    """Multiple-choice text on a decoder (see the module docstring); ``num_choices`` and ``reply_tokens`` are
    the static sizes :func:`jaxdfl.data.text_encoding.encode` reports."""

    def loss(base, x, y, hook):
        logp, count = choice_logprobs(spec, num_choices, reply_tokens, base, x, hook)
        correct = jax.nn.one_hot(y, num_choices)
        return -jnp.sum(logp * correct) / jnp.maximum(jnp.sum(count * correct), 1)

    def scores(base, x, hook):
        logp, count = choice_logprobs(spec, num_choices, reply_tokens, base, x, hook)
        return jnp.where(count > 0, logp, -jnp.inf)  # absent choices never win

    def forward(base, x, hook):
        return decoder.hidden_states(base, x[:, TOKENS], spec, hook, x[:, POSITIONS], x[:, SEGMENTS])

    return Objective(loss, scores, forward)
