"""Wireless network models: Paper B's FDMA uplink (Paper A's D2D network lands here too)."""

from jaxdfl.network.fdma import (client_distances, draw_snr, fdma_bandwidth, fdma_delays, mean_snr,
                                 spectral_efficiency)

__all__ = ["client_distances", "draw_snr", "fdma_bandwidth", "fdma_delays", "mean_snr", "spectral_efficiency"]
