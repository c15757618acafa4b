"""The ``control`` config section, beside the controller it builds (:mod:`jaxdfl.control.server`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxdfl.schema import require


@dataclass(frozen=True)
class ControlConfig:
    """Per-round control of server FL over an FDMA uplink (Paper B §II-C, §IV).

    ``tsfa`` picks the LoRA rank offline (Alg. 2), keeping method.alpha/method.rank as the LoRA scale, then
    sets the ratio O^t and bandwidth shares every round by Lyapunov control; ``osfa`` does only the online
    part at method.rank.
    """

    name: Literal["none", "tsfa", "osfa"] = "none"
    delay_target: float = 0.05  # D_th, seconds: the time-average uplink delay budget
    lyapunov_v: float = 1e-3  # V: weight of the convergence bound against the delay queue
    ratio_min: float = 0.05  # O_min
    bandwidth: float = 1e7  # B, Hz
    bits_per_param: float = 32.0  # v
    radius: float = 50.0  # clients uniform in a disk of this radius (m) around the server
    power: float = 1.0  # transmit power P
    noise: float = 1e-8  # noise power σ²
    path_loss_exp: float = 2.0  # γ in h = s·q^(−γ)
    # constants of the convergence bound (B Theorem 1); η and E come from optimizer.learning_rate, local_steps
    smoothness: float = 1.0  # S
    lora_error: float = 0.05  # H
    singular_value_bound: float = 1.0  # W
    heterogeneity: float = 0.001  # φ
    gradient_bound: float = 1.0  # G
    rank_max: int = 64  # r_max

    def __post_init__(self):
        for key in ("delay_target", "lyapunov_v", "bandwidth", "bits_per_param", "radius", "power", "noise",
                    "smoothness", "singular_value_bound", "gradient_bound"):
            require(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        require(0 < self.ratio_min <= 1, "ratio_min", f"must be in (0, 1], got {self.ratio_min}")
        require(self.rank_max >= 1, "rank_max", f"must be >= 1, got {self.rank_max}")
