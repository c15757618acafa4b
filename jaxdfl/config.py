"""Experiment configuration: YAML → frozen, validated dataclasses (:mod:`jaxdfl.schema`), one per section.

The ``method`` section is the config class of the method ``method.name`` names, which lives beside that
method's factory (:data:`jaxdfl.adapters.METHODS`). Overrides use dotted paths, ``["method.rank=8"]``; the
value is parsed as YAML (``8`` → int, ``[q, v]`` → list, ``null`` → None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from jaxdfl.adapters import METHODS, LoraConfig, MethodConfig
from jaxdfl.bundled import bundled_configs_dir, list_bundled, resolve_path
from jaxdfl.control.config import ControlConfig
from jaxdfl.diff.config import StudyConfig
from jaxdfl.errors import ConfigError
from jaxdfl.federation.config import (AggregationConfig, AttackConfig, AvailabilityConfig, PrivacyConfig,
                                      ScaffoldConfig, SecureAggregationConfig, ServerOptimizerConfig,
                                      StragglerConfig)
from jaxdfl.schema import build, check_path, load_yaml, plain, require
from jaxdfl.topology.config import TopologyConfig


@dataclass(frozen=True)
class ModelConfig:
    """The frozen base model and where adapters attach.

    ``tiny_vit``: a digits ViT (``checkpoint``: ``bundled``, width 64; ``bundled_wide``, width 128; ``random``;
    or a ``.safetensors`` file written by jaxdfl). ``pretrained``: :func:`jaxdfl.models.from_pretrained` on
    ``checkpoint``: a known name (``smollm2-135m-instruct``), a local Hugging Face directory (Llama, Qwen2, ViT)
    or a ``.gguf`` file.
    """

    name: Literal["tiny_vit", "pretrained"] = "tiny_vit"
    checkpoint: str = "bundled"
    adapt: tuple[str, ...] = ("q", "k", "v", "o", "up", "down", "head")  # linear maps that get adapters
    dtype: Literal["float32", "bfloat16"] = "float32"  # of the frozen base weights (pretrained)
    # Size of a "random" model (null = the bundled model's size); a loaded checkpoint carries its own.
    dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_dim: int | None = None

    def __post_init__(self):
        allowed = ("embed", "q", "k", "v", "o", "gate", "up", "down", "head")
        bad = [a for a in self.adapt if a not in allowed]
        require(not bad and len(self.adapt) > 0, "adapt", f"got {list(self.adapt)}; choose from {list(allowed)}")
        require(self.name == "tiny_vit" or self.checkpoint not in ("bundled", "bundled_wide", "random"), "checkpoint",
                 "name: pretrained needs a checkpoint: a known name (smollm2-135m-instruct), a Hugging Face "
                 "directory or a .gguf file")
        for key in ("dim", "depth", "heads", "mlp_dim"):
            value = getattr(self, key)
            require(value is None or self.checkpoint == "random", key,
                     "sets the size of a random model only (checkpoint: random); a checkpoint has its own size")
            require(value is None or value >= 1, key, f"must be >= 1, got {value}")
        if self.dim is not None and self.heads is not None:
            require(self.dim % self.heads == 0, "heads", f"must divide dim={self.dim}, got {self.heads}")


@dataclass(frozen=True)
class DataConfig:
    """The tasks and how their training data is split over devices.

    Task names are checked against the dataset when the data is built (:func:`jaxdfl.data.check`).
    ``digits_multitask``: the digits suite (images; ``tasks`` from its transforms). ``text_tasks``: text task
    families jaxdfl generates (``reading``, ``arithmetic``, ``code``, ``commonsense``). ``text_files``: local
    copies of public benchmarks (``tasks`` from boolq, piqa, siqa, arc, hellaswag, gsm8k), one training file and
    one test file per task. Text needs a decoder model (``model.name: pretrained``). ``cifar100``: a local copy
    of CIFAR-100 under ``root`` (``tasks: [cifar100]``), for a pretrained ViT.
    """

    name: Literal["digits_multitask", "text_tasks", "text_files", "cifar100"] = "digits_multitask"
    tasks: tuple[str, ...] = ("shift", "rot90", "invert", "mirror")
    partition: Literal["task_per_device", "iid", "shards", "dirichlet"] = "task_per_device"
    num_shards: int = 2  # label shards per device ("shards")
    dirichlet_alpha: float = 0.5  # concentration ("dirichlet"); small = more skewed
    test_fraction: float = 0.25  # of each task's images held out for evaluation (digits)
    train_per_task: int = 64  # text: training examples per task (text_files: at most)
    test_per_task: int = 32  # text: test examples per task (text_files: at most)
    max_tokens: int = 256  # text: longest prompt + reply, in tokens
    train_files: tuple[str, ...] = ()  # text_files: one per task, in the order of tasks
    test_files: tuple[str, ...] = ()
    root: str = ""  # cifar100: the cifar-100-python folder (or the folder holding it)
    # K > 0: every device holds K examples drawn from its part of the partition, parts shared by devices
    # when there are more devices than examples / K (devices hold indices into one stored pool)
    examples_per_device: int = 0

    def __post_init__(self):
        require(len(self.tasks) > 0, "tasks", "needs at least one task")
        require(len(set(self.tasks)) == len(self.tasks), "tasks", "a task is listed twice")
        require(self.examples_per_device >= 0, "examples_per_device", f"must be >= 0, got {self.examples_per_device}")
        if self.name == "text_files":
            for key in ("train_files", "test_files"):
                require(len(getattr(self, key)) == len(self.tasks), key,
                         f"needs one file per task ({len(self.tasks)}), got {len(getattr(self, key))}")
        require(self.num_shards >= 1, "num_shards", f"must be >= 1, got {self.num_shards}")
        require(self.dirichlet_alpha > 0, "dirichlet_alpha", f"must be > 0, got {self.dirichlet_alpha}")
        require(0 < self.test_fraction < 1, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        for key in ("train_per_task", "test_per_task", "max_tokens"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")

    @property
    def is_text(self) -> bool:
        return self.name in ("text_tasks", "text_files")


@dataclass(frozen=True)
class NetworkConfig:
    """Paper A's device-to-device wireless network (A §III): positions, Rayleigh fading, OFDMA,
    minimum power to meet the delay bound, and outages where the power budget does not fit."""

    name: Literal["none", "d2d"] = "none"  # d2d: every device-to-device message goes over the air
    radius: float = 500.0  # devices uniform in a disk of this radius (m)
    move_std: float = 0.0  # random-walk step per round and coordinate (m); 0 = devices stay put
    bandwidth: float = 1e6  # W: each device's band (Hz), split equally over the links it serves
    delay_bound: float = 1.0  # Γ: a round's transmissions must finish within this (s)
    power_max: float = 0.1  # p_max: a device's total transmit power (W)
    noise: float = 1e-13  # σ²: noise power (W)
    path_loss_exp: float = 3.5  # α in h = ρ·d^(−α)
    min_distance: float = 1.0  # distances below this count as this (m)
    bits_per_param: float = 32.0  # bits per sent value
    # an .npz file (jaxdfl learn writes design.npz) whose "power" [devices] replaces each device's power_max
    # and whose "positions" [devices, 2] replace the drawn positions (the random walk starts there)
    design: str = ""

    def __post_init__(self):
        for key in ("radius", "bandwidth", "delay_bound", "power_max", "noise", "path_loss_exp", "min_distance",
                    "bits_per_param"):
            require(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        require(self.move_std >= 0, "move_std", f"must be >= 0, got {self.move_std}")


@dataclass(frozen=True)
class OptimizerConfig:
    """The local optimizer (optax) every device runs."""

    name: Literal["sgd", "adam", "adamw"] = "adam"
    learning_rate: float = 3e-3
    momentum: float = 0.0  # "sgd" only
    weight_decay: float = 0.0  # "adamw" only
    reset_state: bool = False  # re-initialise the optimizer state at the start of every round
    prox_mu: float = 0.0  # FedProx: weight μ of the proximal term μ/2 ‖θ − θ_round start‖²; 0 = off

    def __post_init__(self):
        require(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        require(self.prox_mu >= 0, "prox_mu", f"must be >= 0, got {self.prox_mu}")
        require(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class Config:
    """One simulation. See the README's config reference for every key."""

    VARIANTS: ClassVar[dict] = {"method": METHODS}

    seed: int = 0
    # run this many independent seeds (seed, seed + 1, ...) as one more vmapped axis of one program
    replicas: int = 1
    rounds: int = 30
    num_devices: int = 8
    local_steps: int = 5
    batch_size: int = 32
    eval_every: int = 5
    eval_devices: int = 0  # evaluate a fixed random sample of this many devices (0 = every device)
    checkpoint_every: int = 10  # 0 = only at the end
    # train and evaluate this many simulated devices at a time (0 = all at once): bounds memory for large models
    device_chunk: int = 0
    # "all": every device's model on every task; "oracle": each task answered only by the devices that
    # trained on it (Paper A's hard-routing MoE; needs data.partition task_per_device)
    routing: Literal["all", "oracle"] = "all"
    # a device's loss or adapter turns NaN/inf: end the run (exit 3, last finite checkpoint kept), drop that
    # device from mixing for good, or go on as if nothing happened (logged)
    on_nonfinite: Literal["stop", "drop_device", "continue"] = "stop"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=LoraConfig)  # a section per method, chosen by method.name
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    availability: AvailabilityConfig = field(default_factory=AvailabilityConfig)
    stragglers: StragglerConfig = field(default_factory=StragglerConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    server_optimizer: ServerOptimizerConfig = field(default_factory=ServerOptimizerConfig)
    scaffold: ScaffoldConfig = field(default_factory=ScaffoldConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secure_aggregation: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)
    study: StudyConfig = field(default_factory=StudyConfig)  # jaxdfl learn only

    def __post_init__(self):
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        for key in ("replicas", "rounds", "num_devices", "local_steps", "batch_size", "eval_every"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.checkpoint_every >= 0, "checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        for key in ("device_chunk", "eval_devices"):
            require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        if self.topology.name == "server":
            k = self.topology.clients_per_round
            require(k <= self.num_devices, "topology.clients_per_round",
                     f"{k} clients cannot be sampled from num_devices={self.num_devices}")
        for key, needs_tasks in (("routing", self.routing == "oracle"),
                                 ("topology.name", self.topology.name == "by_task")):
            require(not needs_tasks or self.data.partition == "task_per_device", key,
                     f"needs data.partition: task_per_device, got {self.data.partition!r}")
        deltas = type(self.method).sends_deltas
        if self.topology.server_weights == "unbiased":
            require(deltas, "topology.server_weights",
                    f"'unbiased' weights do not sum to one, so they suit methods that send deltas "
                    f"({_names(True)}), not method.name={self.method.name!r}")
        if self.control.name != "none":
            require(self.topology.name == "server" and deltas, "control.name",
                    f"{self.control.name!r} controls server FL with a sparsifying method: it needs "
                    f"topology.name=server and method.name in {_names(True)}")
        if self.network.name == "d2d":
            require(self.topology.name != "server", "network.name",
                    "'d2d' carries device-to-device messages; topology.name=server uses Paper B's FDMA uplink "
                    "(control.name: tsfa or osfa) instead")
        if self.topology.name == "clusters":
            require(self.network.name == "d2d", "topology.name",
                    "'clusters' forms clusters under the power/delay budget of network.name: d2d; set it")
        if self.server_optimizer.name != "none":
            require(self.topology.name == "server", "server_optimizer.name",
                    f"{self.server_optimizer.name!r} steps a server's global model: it needs topology.name=server")
        if self.scaffold.enabled:
            require(self.topology.name == "server", "scaffold.enabled",
                    "SCAFFOLD's control variates live on a server: it needs topology.name=server")
        if self.privacy.mechanism == "central":
            require(self.topology.name == "server", "privacy.mechanism",
                    "'central' noises a server's aggregate: it needs topology.name=server ('local' works anywhere)")
            require(self.privacy.sampling == "fixed" or self.topology.clients_per_round == 0,
                    "privacy.sampling", "'poisson' draws the clients itself: leave topology.clients_per_round at 0")
            require(self.aggregation.rule == "mean", "privacy.mechanism",
                    f"'central' is its own clipped, noised aggregate; aggregation.rule={self.aggregation.rule!r} "
                    "would replace it (use aggregation.rule: mean)")
        if self.secure_aggregation.enabled:
            require(self.topology.name == "server" and self.aggregation.rule == "mean"
                    and self.privacy.mechanism != "central", "secure_aggregation.enabled",
                    "the server sees only the masked sum: it needs topology.name=server, aggregation.rule: mean and "
                    "no privacy.mechanism: central (which clips each update at the server; use 'local')")
        if self.stragglers.rule == "buffered":
            require(self.topology.name == "server", "stragglers.rule",
                    "'buffered' (FedBuff) buffers updates at a server: it needs topology.name=server")
            others = {"topology.clients_per_round": self.topology.clients_per_round not in (0, self.num_devices),
                      "availability": not self.availability.always, "aggregation.rule": self.aggregation.rule != "mean",
                      "privacy.mechanism": self.privacy.mechanism != "none", "scaffold.enabled": self.scaffold.enabled,
                      "secure_aggregation.enabled": self.secure_aggregation.enabled,
                      "control.name": self.control.name != "none"}
            clash = [key for key, on in others.items() if on]
            require(not clash, "stragglers.rule",
                    f"'buffered' decides itself which clients upload each round (those whose job ends) and "
                    f"aggregates their updates by staleness; it does not combine with {', '.join(clash)} (leave "
                    "them at their defaults)")
        if self.attack.kind == "label_flip":
            require(not self.data.is_text, "attack.kind",
                    "'label_flip' reverses class labels of an image task; text tasks have no class order")
        if self.topology.name == "kregular":
            d = self.topology.degree
            require(d < self.num_devices and (d * self.num_devices) % 2 == 0, "topology.degree",
                     f"a {d}-regular graph on {self.num_devices} devices needs degree < num_devices "
                     "and degree*num_devices even")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), suitable for YAML."""
        return plain(self)


def _names(sends_deltas: bool) -> str:
    return ", ".join(n for n, cls in METHODS.items() if cls.sends_deltas == sends_deltas)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Return a copy of the nested mapping ``data`` with each ``a.b=value`` override applied."""
    data = plain(dict(data or {}))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        check_path(Config, dotted)
        try:
            value = load_yaml(raw, f"--set {dotted}")
        except ConfigError:
            value = raw
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section in the config")
        node[leaf] = value
    return data


def load_config(source: str | Path | dict | Config | None = None, overrides=()) -> Config:
    """Build a validated :class:`Config`.

    Args:
      source: a YAML path, a bundled config name, a mapping, a Config, or None for the quick start.
      overrides: ``["a.b=value", ...]`` applied on top.
    """
    if isinstance(source, Config):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = source
    else:
        path = resolve_path(source if source is not None else "quickstart")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read it ({err})") from None
        data = load_yaml(text, str(path)) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys (seed:, rounds:, method:, ...), "
                              f"got a {type(data).__name__}")
    return build(Config, apply_overrides(data, list(overrides)))


__all__ = ["AggregationConfig", "AttackConfig", "AvailabilityConfig", "Config", "ControlConfig", "DataConfig",
           "MethodConfig", "ModelConfig", "NetworkConfig", "OptimizerConfig", "PrivacyConfig",
           "ScaffoldConfig", "SecureAggregationConfig", "ServerOptimizerConfig", "StragglerConfig",
           "TopologyConfig", "apply_overrides", "bundled_configs_dir", "list_bundled", "load_config", "resolve_path"]
