"""What the engine trains and scores: a model's loss, its per-class scores, and the pass statistics read.

Two kinds, behind one interface, so local training, evaluation and the so_lora statistics never ask which
model they run:

* :func:`classification`: a classifier ``apply(base, x, hook) -> [batch, classes]``; cross-entropy loss.
* :func:`choice_likelihood`: a decoder LM on packed multiple-choice text (``x`` ``[batch, choices, 2, L]``,
  see :mod:`jaxdfl.data.text_encoding`); the loss is the negative log-likelihood of the correct reply's
  tokens (supervised fine-tuning on the answer), and a choice's score is the summed log-probability of its
  reply tokens, so ``argmax`` is multiple-choice log-likelihood evaluation.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdfl.models import decoder


class Objective(NamedTuple):
    """Pure functions of ``(base, x, ..., hook)``; ``hook`` is the adapter hook of one device.

    Attributes:
      loss: ``(base, x, y, hook) -> scalar`` on a batch ``x`` ``[batch, ...]``, ``y`` ``[batch]``.
      scores: ``(base, x, hook) -> [batch, classes]``; the prediction is its argmax.
      forward: ``(base, x, hook) -> Array``, one plain pass over ``x`` whose hook calls see ``[batch, ..., in]``
        inputs (what :func:`jaxdfl.sim.engine.make_capture` reads).
    """

    loss: Callable
    scores: Callable
    forward: Callable


def classification(apply: Callable) -> Objective:
    def loss(base, x, y, hook):
        return optax.softmax_cross_entropy_with_integer_labels(apply(base, x, hook=hook), y).mean()

    return Objective(loss, lambda base, x, hook: apply(base, x, hook=hook), lambda base, x, hook: apply(base, x, hook=hook))


def reply_logprobs(spec: decoder.DecoderSpec, reply_len: int, base, seqs: jax.Array, hook) -> tuple[jax.Array, jax.Array]:
    """Summed log-probability of each sequence's reply and its number of reply tokens, both ``[batch]``.

    ``seqs`` ``[batch, 2, L]``: row 0 the tokens, row 1 marks the reply (a contiguous run of at most
    ``reply_len`` tokens after the prompt). Only the ``reply_len`` positions that predict the reply go
    through the vocabulary head, which is a fifth of the model's FLOPs per token for SmolLM2."""
    tokens, mask = seqs[:, 0], seqs[:, 1]
    h = decoder.hidden_states(base, tokens, spec, hook)  # [batch, L, hidden]
    start = jnp.argmax(mask, axis=-1)  # first reply token
    offsets = jnp.arange(reply_len)
    targets_at = jnp.clip(start[:, None] + offsets, 0, tokens.shape[1] - 1)  # [batch, reply_len]
    valid = jnp.take_along_axis(mask, targets_at, axis=1) * (offsets < mask.sum(-1, keepdims=True))
    h_before = jnp.take_along_axis(h, (targets_at - 1)[..., None], axis=1)  # the states that predict them
    logp = jax.nn.log_softmax(decoder.logits_from_hidden(base, h_before, spec, hook).astype(jnp.float32), -1)
    picked = jnp.take_along_axis(logp, jnp.take_along_axis(tokens, targets_at, axis=1)[..., None], -1)[..., 0]
    return jnp.sum(picked * valid, -1), valid.sum(-1)


def choice_likelihood(spec: decoder.DecoderSpec, reply_len: int) -> Objective:
    """Multiple-choice text on a decoder (see the module docstring); ``reply_len`` is the longest reply
    in tokens (static: it sizes the head's gather)."""

    def loss(base, x, y, hook):
        correct = jnp.take_along_axis(x, y[:, None, None, None], axis=1)[:, 0]  # [batch, 2, L]
        logp, count = reply_logprobs(spec, reply_len, base, correct, hook)
        return -logp.sum() / jnp.maximum(count.sum(), 1)

    def scores(base, x, hook):
        b, c = x.shape[:2]
        logp, count = reply_logprobs(spec, reply_len, base, x.reshape(b * c, *x.shape[2:]), hook)
        return jnp.where(count > 0, logp, -jnp.inf).reshape(b, c)  # padding choices never win

    def forward(base, x, hook):  # the prompt with its first choice: what the device's data looks like
        return decoder.hidden_states(base, x[:, 0, 0], spec, hook)

    return Objective(loss, scores, forward)
