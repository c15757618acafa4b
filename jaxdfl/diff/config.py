"""The ``study`` config section (``jaxdfl learn``): what to learn, how, and how to judge it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxdfl.diff.design import LEARNABLE
from jaxdfl.schema import require


@dataclass(frozen=True)
class StudyConfig:
    """A differentiable study: gradient descent on a design through whole rollouts (:mod:`jaxdfl.diff`), then
    full runs from scratch with the learned design frozen, judged by test accuracy."""

    learn: tuple[str, ...] = ("mixing",)  # mixing, power, bandwidth, positions
    rounds: int = 10  # rounds per rollout
    steps: int = 30  # outer optimizer steps
    optimizer: Literal["adam", "sgd"] = "adam"  # optax, on the design
    learning_rate: float = 0.1
    target: Literal["own", "all"] = "own"  # validation loss on each device's own held-out examples, or on all
    mixing: Literal["softmax", "sinkhorn"] = "softmax"  # row-stochastic, or doubly stochastic
    candidates: Literal["complete", "topology"] = "complete"  # links mixing may use
    validation: float = 0.2  # share of each device's training examples held out to score designs
    keys: Literal["fixed", "resample"] = "resample"  # the rollout's randomness: one key, or a new one per step
    energy_weight: float = 0.0  # penalty per joule over a rollout
    uplink_weight: float = 0.0  # per bit
    link_weight: float = 0.0  # per unit of mean row entropy of W, per round (fewer effective links)
    outage_weight: float = 0.0  # per expected lost link
    prune: float = 0.01  # a learned mixing weight below this is dropped (and its row renormalised) for retraining
    degree: int = 0  # > 0: for retraining keep only each device's this many heaviest neighbours
    retrain_seeds: tuple[int, ...] = (0, 1, 2)  # full runs with the design frozen, one per seed

    def __post_init__(self):
        bad = [k for k in self.learn if k not in LEARNABLE]
        require(not bad and len(self.learn) > 0, "learn", f"got {list(self.learn)}; choose from {list(LEARNABLE)}")
        for key in ("rounds", "steps"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        require(0 < self.validation < 1, "validation", f"must be in (0, 1), got {self.validation}")
        for key in ("energy_weight", "uplink_weight", "link_weight", "outage_weight"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        require(0 <= self.prune < 1, "prune", f"must be in [0, 1), got {self.prune}")
        require(self.degree >= 0, "degree", f"must be >= 0, got {self.degree}")

    @property
    def weights(self) -> dict[str, float]:
        return {"energy_j": self.energy_weight, "uplink_bits": self.uplink_weight,
                "link_entropy": self.link_weight, "outages": self.outage_weight}
