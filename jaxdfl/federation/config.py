"""The config sections of realistic federations: ``availability``, ``aggregation``, ``attack`` and
``server_optimizer`` (:mod:`jaxdfl.federation`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxdfl.schema import require


@dataclass(frozen=True)
class AvailabilityConfig:
    """Which devices are online each round. An offline device neither trains nor sends, and under a
    device-to-device topology it hears nothing either; under a server it downloads the global model when it
    is back. A server samples its clients from the devices online (fewer than ``clients_per_round`` when too
    few are).

    Set one of: ``rate`` (every device online with this probability, drawn anew every round), ``rates`` (one
    probability per device) or ``trace`` (a file of 0/1, devices × rounds: ``.npy`` or ``.csv``; a run longer
    than the trace wraps around).
    """

    rate: float = 1.0
    rates: tuple[float, ...] = ()
    trace: str = ""

    def __post_init__(self):
        require(0 < self.rate <= 1, "rate", f"must be in (0, 1], got {self.rate}")
        require(all(0 <= p <= 1 for p in self.rates), "rates", "every probability must be in [0, 1]")
        given = [key for key, on in (("rate", self.rate < 1), ("rates", self.rates), ("trace", self.trace)) if on]
        require(len(given) <= 1, given[-1] if given else "rate", f"set only one of rate, rates, trace; got {given}")

    @property
    def always(self) -> bool:
        """Every device is online every round (the section is off)."""
        return self.rate == 1 and not self.rates and not self.trace


@dataclass(frozen=True)
class StragglerConfig:
    """Devices of unequal speed: each round device i can do ``ceil(E · u_i)`` of the E local steps, u_i drawn
    uniform in ``[1 − spread, 1]`` every round (at least one step). ``partial``: what a device did by the
    deadline is used (a straggler sends fewer steps' worth); ``drop``: FedAvg's deadline, a device that did not
    finish its E steps is dropped for the round (counted in ``messages_lost_late``); ``buffered``: FedBuff
    (Nguyen et al. 2022; needs a server), no deadline: a device does all E steps from the global model it
    downloaded, taking ``ceil(E / ceil(E · u_i))`` rounds at the pace drawn when it starts, and its update
    arrives that much later; the server adds arriving updates, each down-weighted by ``(1 + τ)^−a``
    (``staleness_exponent`` a, τ the server steps since its sender downloaded) to a buffer and steps the global
    model once the buffer holds ``buffer_size`` updates (:mod:`jaxdfl.federation.buffered`)."""

    spread: float = 0.0
    rule: Literal["partial", "drop", "buffered"] = "partial"
    buffer_size: int = 10  # buffered: updates the server waits for before it steps (FedBuff's K)
    staleness_exponent: float = 0.5  # buffered: a in (1 + τ)^−a (0: stale updates count in full)

    def __post_init__(self):
        require(0 <= self.spread < 1, "spread", f"must be in [0, 1), got {self.spread}")
        require(self.buffer_size >= 1, "buffer_size", f"must be >= 1, got {self.buffer_size}")
        require(self.staleness_exponent >= 0, "staleness_exponent", f"must be >= 0, got {self.staleness_exponent}")


@dataclass(frozen=True)
class AggregationConfig:
    """How a receiver (the server, or each device of a device-to-device graph) combines what it hears.

    ``mean``: the weighted average of the mixing matrix (FedAvg, gossip). Robust rules, over the senders a
    receiver hears (itself included): ``median`` (coordinate-wise), ``trimmed_mean`` (coordinate-wise, the
    ``trim`` share of the largest and of the smallest values dropped), ``krum`` / ``multi_krum`` (the sender,
    or the ``krum_select`` senders, whose ``n − byzantine − 2`` nearest others are closest; Blanchard et al.
    2017), ``norm_clip`` (each sender's update clipped to norm ``clip_norm``, then the weighted average).
    """

    rule: Literal["mean", "median", "trimmed_mean", "krum", "multi_krum", "norm_clip"] = "mean"
    trim: float = 0.2  # trimmed_mean: share dropped at each end
    byzantine: int = 1  # krum, multi_krum: f, the senders assumed Byzantine in each neighbourhood
    krum_select: int = 0  # multi_krum: senders averaged (0: n − f)
    clip_norm: float = 1.0  # norm_clip: the largest update norm kept

    def __post_init__(self):
        require(0 <= self.trim < 0.5, "trim", f"must be in [0, 0.5), got {self.trim}")
        require(self.byzantine >= 0, "byzantine", f"must be >= 0, got {self.byzantine}")
        require(self.krum_select >= 0, "krum_select", f"must be >= 0, got {self.krum_select}")
        require(self.clip_norm > 0, "clip_norm", f"must be > 0, got {self.clip_norm}")


@dataclass(frozen=True)
class AttackConfig:
    """Byzantine devices: ``share`` of the devices (a fixed random set per seed) attack every round.

    ``sign_flip`` sends its update reversed and scaled by ``scale`` (default 1), ``scale`` sends it
    multiplied by ``scale`` (default 10), ``noise`` sends Gaussian noise of std ``noise_std`` as its update,
    ``label_flip`` trains honestly on labels reversed (class c → C − 1 − c). An update is what the device
    sends minus what it started the round from (or what it sends, for methods that send deltas).
    """

    kind: Literal["none", "sign_flip", "scale", "noise", "label_flip"] = "none"
    share: float = 0.0
    scale: float | None = None
    noise_std: float = 1.0

    def __post_init__(self):
        require(0 <= self.share < 1, "share", f"must be in [0, 1), got {self.share}")
        require(self.kind == "none" or self.share > 0, "share", f"attack.kind={self.kind!r} needs a share > 0")
        require(self.scale is None or self.scale > 0, "scale", f"must be > 0, got {self.scale}")
        require(self.noise_std > 0, "noise_std", f"must be > 0, got {self.noise_std}")

    @property
    def factor(self) -> float:
        """The multiplier of the update: −scale for sign_flip, scale for scale."""
        default = {"sign_flip": 1.0, "scale": 10.0}.get(self.kind, 1.0)
        scale = default if self.scale is None else self.scale
        return -scale if self.kind == "sign_flip" else scale


@dataclass(frozen=True)
class ScaffoldConfig:
    """SCAFFOLD (Karimireddy et al. 2020, option II): control variates correct each client's drift. Needs a
    server; doubles what a client sends (its update and its variate's change)."""

    enabled: bool = False


@dataclass(frozen=True)
class ServerOptimizerConfig:
    """The server's optimizer on the pseudo-gradient (global − average of the clients; Reddi et al. 2021,
    "Adaptive Federated Optimization"), through optax. ``none``: the average becomes the global model
    (FedAvg). ``fedavgm``: SGD with momentum; ``fedadam``, ``fedyogi``: Adam and Yogi with ``eps`` (τ)."""

    name: Literal["none", "fedavgm", "fedadam", "fedyogi"] = "none"
    learning_rate: float = 1.0
    momentum: float = 0.9  # fedavgm
    b1: float = 0.9  # fedadam, fedyogi
    b2: float = 0.99
    eps: float = 1e-3  # τ, the adaptivity

    def __post_init__(self):
        require(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        for key in ("momentum", "b1", "b2"):
            require(0 <= getattr(self, key) < 1, key, f"must be in [0, 1), got {getattr(self, key)}")
        require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")


@dataclass(frozen=True)
class SecureAggregationConfig:
    """Secure aggregation (Bonawitz et al. 2017), simulated: clients send fixed-point contributions hidden by
    pairwise masks that cancel in the server's sum; the masks of clients that drop out are recovered. The
    aggregate equals the plain one to within the fixed point's resolution (``frac_bits`` fractional bits;
    the sum must stay below 2^(31 − frac_bits) in magnitude). Needs a server and the plain mean."""

    enabled: bool = False
    frac_bits: int = 24

    def __post_init__(self):
        require(8 <= self.frac_bits <= 28, "frac_bits", f"must be in [8, 28], got {self.frac_bits}")


@dataclass(frozen=True)
class PrivacyConfig:
    """Client-level differential privacy. ``central`` (DP-FedAvg, McMahan et al. 2018; needs a server): each
    client's update is clipped to norm ``clip_norm`` and the server adds Gaussian noise of std
    ``noise_multiplier · clip_norm · max_j a_j`` to the weighted sum (a_j the clients' aggregation weights).
    ``local``: each device clips its update and adds noise of std ``noise_multiplier · clip_norm`` before
    sending (any topology). ε(``delta``) is accounted with Google's dp-accounting (RDP) for the run's client
    sampling and logged every round (docs/methods.md)."""

    mechanism: Literal["none", "central", "local"] = "none"
    # fixed: the server's K of N without replacement (topology.clients_per_round); poisson: every client
    # independently with probability sample_rate, averaged over the expected count (fixed denominator)
    sampling: Literal["fixed", "poisson"] = "fixed"
    sample_rate: float = 0.0
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5

    def __post_init__(self):
        require(self.clip_norm > 0, "clip_norm", f"must be > 0, got {self.clip_norm}")
        require(self.noise_multiplier >= 0, "noise_multiplier", f"must be >= 0, got {self.noise_multiplier}")
        require(0 < self.delta < 1, "delta", f"must be in (0, 1), got {self.delta}")
        require(self.sampling == "fixed" or 0 < self.sample_rate <= 1, "sample_rate",
                f"sampling: poisson needs a sample_rate in (0, 1], got {self.sample_rate}")
