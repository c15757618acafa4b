"""From the config's realistic-federation sections to :func:`jaxdfl.sim.round.make_round_step`'s arguments,
checked against what the method sends."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax

from jaxdfl.core import Method, RoundControl
from jaxdfl.errors import ConfigError
from jaxdfl.federation.aggregators import make_rule
from jaxdfl.federation.attacks import make_poison
from jaxdfl.federation.server import make_server_optimizer

if TYPE_CHECKING:
    from jaxdfl.config import Config
    from jaxdfl.data import FederatedData


def federation_settings(cfg: Config, method: Method, adapter, data: FederatedData) -> dict:
    """:func:`make_round_step`'s realistic-federation arguments from the ``aggregation``, ``attack``,
    ``server_optimizer`` and ``optimizer.prox_mu`` settings. A robust rule or a poisoned message needs to
    know what an update is: the message minus the round-start params (a method that sends its params), or the
    message itself (a method that sends deltas); a method that sends anything else cannot have either."""
    rule = None if cfg.aggregation.rule == "mean" else make_rule(cfg.aggregation)
    poison = make_poison(cfg.attack)
    deltas = type(cfg.method).sends_deltas
    private = cfg.privacy.mechanism != "none"
    dp = (cfg.privacy.clip_norm, cfg.privacy.noise_multiplier)
    poisson = cfg.privacy.sampling == "poisson"
    buffered = cfg.stragglers.rule == "buffered"
    measured = (rule is not None or poison is not None or private or buffered) and not deltas
    dense = [key for key, on in (("secure_aggregation.enabled", cfg.secure_aggregation.enabled),
                                 ("stragglers.rule", buffered)) if on]
    if measured or dense:
        def sent(adapter):
            keys = jax.random.split(jax.random.key(0), jax.tree.leaves(adapter)[0].shape[0])
            encode = jax.vmap(method.encode, in_axes=(0, 0, 0, None))
            message = encode(adapter, adapter.params, keys, RoundControl())[0]
            return message.values, message.mask

        values, mask = jax.eval_shape(sent, adapter)
    if measured:
        if cfg.privacy.mechanism == "central" and mask is not None:
            raise ConfigError(f"privacy.mechanism: 'central' clips whole updates; method.name={cfg.method.name!r} "
                              "sends masked messages (use 'local')")
        same = jax.tree.structure(values) == jax.tree.structure(adapter.params) and all(
            a.shape == b.shape for a, b in zip(jax.tree.leaves(values), jax.tree.leaves(adapter.params)))
        if not same:
            what = ("privacy.mechanism" if private else "aggregation.rule" if rule is not None else
                    "stragglers.rule" if buffered else "attack.kind")
            raise ConfigError(f"{what}: method.name={cfg.method.name!r} sends neither its params nor a delta, so "
                              "its updates cannot be measured; use aggregation.rule: mean and no model-poisoning "
                              "attack with it")
    if dense and mask is not None:
        raise ConfigError(f"{dense[0]}: method.name={cfg.method.name!r} sends masked messages; secure aggregation "
                          "(the server must see the masks to normalise) and buffered updates need dense ones")
    classes = int(data.pool_y.max()) + 1 if cfg.attack.kind == "label_flip" else 0
    return {"rule": rule, "centre_at_start": not deltas, "poison": poison, "label_classes": classes,
            "server_optimizer": make_server_optimizer(cfg.server_optimizer),
            "prox_mu": cfg.optimizer.prox_mu,
            "dp_central": (*dp, 1.0 / (cfg.privacy.sample_rate * cfg.num_devices) if poisson else 0.0)
            if cfg.privacy.mechanism == "central" else None,
            "dp_local": dp if cfg.privacy.mechanism == "local" else None,
            "secure_bits": cfg.secure_aggregation.frac_bits if cfg.secure_aggregation.enabled else 0,
            "drop_late": cfg.stragglers.rule == "drop",
            "scaffold_lr": cfg.optimizer.learning_rate if cfg.scaffold.enabled else 0.0,
            "buffer": (cfg.stragglers.buffer_size, cfg.stragglers.staleness_exponent) if buffered else None}
