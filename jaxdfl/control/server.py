"""The per-round controller of server FL over FDMA (Paper B Alg. 3), built from the config's ``control``
section. Its decisions are jnp and run inside the scanned round program; its state (the virtual delay queue)
is carried in :attr:`jaxdfl.sim.state.SimState.controller` and checkpointed with it."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxdfl.control.tsfa import (BoundConstants, convergence_bound, initial_ratio, offline_rank, online_ratio,
                                 queue_update)
from jaxdfl.network.fdma import client_distances, draw_snr, mean_snr


class ServerController(NamedTuple):
    """TSFA or OSFA for one run.

    Attributes:
      rank: the LoRA rank in use (TSFA: chosen offline, Alg. 2; OSFA: the configured one).
      initial_ratio: O⁰ of Lemma 2 at that rank.
      constants: the convergence bound's constants (B Theorem 1).
      mean_snr: ``[N]`` every client's mean SNR, the channel the offline stage plans with.
      decide: ``(queue, round, active) -> (ratio, record, queue)``, jittable: the round's ratio O^t for the
        clients' ``encode``, what to log (``ratio``, ``delay_s``, ``queue``, ``gamma``, ``bandwidth_min/max``)
        and the queue after the round. ``active`` ``[K]`` are the sampled clients (None: all).
    """

    rank: int
    initial_ratio: float
    constants: BoundConstants
    mean_snr: jax.Array
    decide: Callable


def bound_constants(cfg) -> BoundConstants:
    """The bound's constants from the ``control`` section, η and E from the optimizer and local steps."""
    c = cfg.control
    return BoundConstants(S=c.smoothness, H=c.lora_error, W=c.singular_value_bound, phi=c.heterogeneity,
                          G=c.gradient_bound, eta=cfg.optimizer.learning_rate, E=float(cfg.local_steps),
                          r_max=float(c.rank_max), N=float(cfg.num_devices))


def build_controller(cfg, layers: dict[str, tuple[int, int]]) -> ServerController:
    """TSFA or OSFA for ``cfg`` (``layers``: adapted linear maps → (in, out), for Σ_l (d_l + ℓ_l))."""
    c = cfg.control
    consts = bound_constants(cfg)
    dims = float(sum(i + o for i, o in layers.values()))
    link = dict(dims=dims, bits_per_param=c.bits_per_param, bandwidth=c.bandwidth)
    sampled = cfg.topology.clients_per_round or cfg.num_devices
    distances = client_distances(jax.random.fold_in(jax.random.key(cfg.seed), 3), cfg.num_devices, c.radius)
    channel = dict(power=c.power, noise=c.noise, path_loss_exp=c.path_loss_exp)
    snr_bar = mean_snr(distances, **channel)
    offline = dict(sampled=float(sampled), delay_target=c.delay_target, ratio_min=c.ratio_min, **link)
    if c.name == "tsfa":
        rank, ratio0 = offline_rank(consts, snr_bar, **offline)
    else:
        rank = cfg.method.rank
        ratio0 = initial_ratio(float(cfg.method.rank), consts, snr_bar, **offline)
    rank = int(rank)
    round_key = jax.random.fold_in(jax.random.key(cfg.seed), 4)

    def decide(queue, round_, active):
        picked = distances if active is None else distances[active]
        snr = draw_snr(jax.random.fold_in(round_key, round_), picked, **channel)
        ratio, shares, delay = online_ratio(queue, c.lyapunov_v, float(rank), snr, consts, ratio_min=c.ratio_min,
                                            **link)
        new_queue = queue_update(queue, delay, c.delay_target)
        record = {"ratio": ratio, "delay_s": delay, "queue": new_queue,
                  "gamma": convergence_bound(float(rank), ratio, float(sampled), consts),
                  "bandwidth_min": shares.min(), "bandwidth_max": shares.max()}
        return ratio, record, new_queue

    return ServerController(rank, float(ratio0), consts, snr_bar, decide)


def initial_queue() -> jax.Array:
    """Q⁰ = 0 (B(21))."""
    return jnp.zeros((), jnp.float32)


__all__ = ["ServerController", "bound_constants", "build_controller", "initial_queue"]
