"""Realistic federations: devices that go offline, Byzantine devices and robust aggregation, and server
optimizers. Each part is a config section (:mod:`jaxdfl.federation.config`) applied inside the one round
program (:func:`jaxdfl.sim.round.make_round_step`); nothing loops over devices in Python."""

from jaxdfl.federation.aggregators import (clipped_mean, coordinate_median, krum_scores, make_rule, multi_krum,
                                           robust_mix, trimmed_mean, weighted_mean)
from jaxdfl.federation.attacks import byzantine_devices, flip_labels, make_poison
from jaxdfl.federation.availability import availability_plan, load_trace, poisson_plan, sample_online, steps_plan
from jaxdfl.federation.config import (AggregationConfig, AttackConfig, AvailabilityConfig, PrivacyConfig,
                                      ScaffoldConfig, SecureAggregationConfig, ServerOptimizerConfig,
                                      StragglerConfig)
from jaxdfl.federation.server import make_server_optimizer, server_step

__all__ = ["AggregationConfig", "AttackConfig", "AvailabilityConfig", "PrivacyConfig", "ScaffoldConfig",
           "SecureAggregationConfig", "ServerOptimizerConfig", "StragglerConfig", "availability_plan",
           "byzantine_devices", "clipped_mean", "coordinate_median", "flip_labels", "krum_scores", "load_trace",
           "make_poison", "make_rule", "make_server_optimizer", "multi_krum", "poisson_plan", "robust_mix",
           "sample_online", "server_step", "steps_plan", "trimmed_mean", "weighted_mean"]
