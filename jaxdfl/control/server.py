"""The per-round controller of server FL over FDMA (Paper B Alg. 3): host-side state (the virtual queue),
jitted decisions. Built from the config's ``control`` section."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxdfl.control.tsfa import (BoundConstants, convergence_bound, initial_ratio, offline_rank, online_ratio,
                                 queue_update)
from jaxdfl.network.fdma import client_distances, draw_snr, mean_snr


class ServerController(NamedTuple):
    """``step(queue, round, active) -> (control, record, queue)``: the round's ratio for the clients'
    ``encode`` and what to log (``ratio``, ``delay_s``, ``queue``, ``gamma``, ``bandwidth_min/max``)."""

    rank: int  # the LoRA rank in use (TSFA: chosen offline)
    initial_ratio: float  # O⁰ of Lemma 2 at that rank
    step: Callable[[float, int, Any], tuple[dict, dict, float]]


def _constants(cfg) -> BoundConstants:
    c = cfg.control
    return BoundConstants(S=c.smoothness, H=c.lora_error, W=c.singular_value_bound, phi=c.heterogeneity,
                          G=c.gradient_bound, eta=cfg.optimizer.learning_rate, E=float(cfg.local_steps),
                          r_max=float(c.rank_max), N=float(cfg.num_devices))


def build_controller(cfg, layers: dict[str, tuple[int, int]]) -> ServerController:
    """TSFA or OSFA for ``cfg`` (``layers``: adapted linear maps → (in, out), for Σ_l (d_l + ℓ_l))."""
    c = cfg.control
    consts = _constants(cfg)
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

    @jax.jit
    def decide(queue, round_, active):
        picked = distances if active is None else distances[active]
        snr = draw_snr(jax.random.fold_in(round_key, round_), picked, **channel)
        ratio, shares, delay = online_ratio(queue, c.lyapunov_v, float(rank), snr, consts, ratio_min=c.ratio_min, **link)
        gamma = convergence_bound(float(rank), ratio, float(sampled), consts)
        return ratio, delay, gamma, shares.min(), shares.max(), queue_update(queue, delay, c.delay_target)

    def step(queue: float, round_: int, active):
        ratio, delay, gamma, b_min, b_max, new_queue = decide(jnp.float32(queue), round_, active)
        record = {"ratio": float(ratio), "delay_s": float(delay), "queue": float(new_queue), "gamma": float(gamma),
                  "bandwidth_min": float(b_min), "bandwidth_max": float(b_max)}
        return {"ratio": ratio}, record, float(new_queue)

    return ServerController(rank, float(ratio0), step)


def effective_config(cfg, controller: ServerController):
    """The config the simulation runs: under TSFA, method.rank is the offline choice and method.alpha keeps
    the configured scale alpha/rank."""
    if cfg.control.name != "tsfa" or controller.rank == cfg.method.rank:
        return cfg
    scale = cfg.method.alpha / cfg.method.rank
    method = dataclasses.replace(cfg.method, rank=controller.rank, alpha=scale * controller.rank)
    return dataclasses.replace(cfg, method=method)


__all__ = ["ServerController", "build_controller", "effective_config"]
