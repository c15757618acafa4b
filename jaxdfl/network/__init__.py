"""Wireless network models: Paper B's FDMA uplink to a server and Paper A's device-to-device OFDMA links.

A(n) is equation n of Paper A (sparse-and-orthogonal LoRA for decentralized multi-task fine-tuning), B(n) of
Paper B (SOFT and TSFA for wireless federated LoRA).
"""

from jaxdfl.network.d2d import (LinkBudget, LinkReport, broadcast_cost, channel_gains, compute_cost, deliver,
                                delivery_probability, disk_positions, distances, expected_deliver, link_delay,
                                min_power, ofdma_rate, random_walk, serve_links, trajectory)
from jaxdfl.network.fdma import (client_distances, draw_snr, fdma_bandwidth, fdma_delays, mean_snr,
                                 spectral_efficiency)

__all__ = ["LinkBudget", "LinkReport", "broadcast_cost", "channel_gains", "client_distances", "compute_cost",
           "deliver", "delivery_probability", "disk_positions", "distances", "draw_snr", "expected_deliver",
           "fdma_bandwidth", "fdma_delays", "link_delay", "mean_snr", "min_power", "ofdma_rate", "random_walk",
           "serve_links", "spectral_efficiency", "trajectory"]
