"""From a :class:`~jaxdfl.config.Config` to a :class:`Simulation`: the model, data, method, topology and the
jitted programs, with every array already placed on the accelerator mesh."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl import data as data_lib
from jaxdfl.control.server import ServerController, build_controller, initial_queue
from jaxdfl.core import Method, RoundControl, has_lora_factors, layer_density, num_params, trained_params
from jaxdfl.errors import ConfigError, warn
from jaxdfl.federation.buffered import buffer_sharding, initial_buffer, with_global
from jaxdfl.federation import (availability_plan, byzantine_devices, make_server_optimizer, poisson_plan,
                               steps_plan)
from jaxdfl.federation.settings import federation_settings
from jaxdfl.models import Model, adapted_layers, bundled_weights_path, from_pretrained, load_weights, tiny_vit
from jaxdfl.models.loading import BUNDLED_TINY_VIT
from jaxdfl.models.model import tiny_vit_model
from jaxdfl.network.d2d import LinkBudget, trajectory
from jaxdfl.sim.evaluate import TestSets, make_evaluate, task_accuracies
from jaxdfl.sim.layout import SPARSE_BELOW, evaluation_sample, padded_devices, sparse_mixing  # noqa: F401
from jaxdfl.sim.mesh import make_mesh, replicated, sharded
from jaxdfl.sim.objective import Objective, choice_likelihood, classification
from jaxdfl.sim.optimizer import make_optimizer
from jaxdfl.sim.padding import pad_devices, pad_mixing, pad_rows
from jaxdfl.network.channels import Channel
from jaxdfl.sim.round import DeviceData, make_round_step, run_rounds
from jaxdfl.sim.schedule import round_inputs
from jaxdfl.sim.state import RoundInputs, SimState, Variates
from jaxdfl.topology import Topology, agnes_clusters, build_topology

if TYPE_CHECKING:  # the config imports jaxdfl.diff, which builds on this module
    from jaxdfl.config import Config


class Simulation(NamedTuple):
    """Everything a run needs, built once from a config. Arrays are already on the mesh.

    Programs: ``init_fn(key) -> SimState``; ``run_rounds(state, inputs) -> (state, metrics)`` runs the rounds
    of :meth:`inputs` (stacked ``[R, ...]``) as one jitted scan, donating ``state``; ``round_step(state,
    device, inputs)`` is the same round unjitted and unstacked (to compose or differentiate);
    ``evaluate_fn(state, w, stored=0.0, routing="mixture") -> [M, T]`` (``[N, T]`` for the :attr:`evaluated`
    devices when ``eval_devices`` samples them; ``[1, T]`` under a server: the global model; ``routing``: see
    :func:`~jaxdfl.sim.evaluate.make_evaluate`);
    ``base_accuracy_fn() -> [T]``, the frozen base alone.
    """

    config: Config
    model: Model
    objective: Objective
    method: Method
    data: data_lib.FederatedData  # host copy (numpy)
    topology: Topology
    mesh: jax.sharding.Mesh
    device: DeviceData  # base weights (replicated) and training sets (sharded over the device axis)
    test: TestSets  # every task's test set, replicated
    controller: ServerController | None  # TSFA/OSFA, if configured; its rank is the one in use
    positions: Callable[[int], np.ndarray | None]  # device positions per round (d2d network), else None
    init_fn: Callable[[jax.Array], SimState]
    make_round: Callable[..., Callable]  # make_round_step with this config's settings; override any (channel=...)
    round_step: Callable
    run_rounds: Callable
    evaluate_fn: Callable
    base_accuracy_fn: Callable
    sparse_mixing: bool = False  # rounds mix over the topology's neighbour lists (topology.mixing_form)
    evaluated: np.ndarray | None = None  # the devices evaluate_fn scores ([N]; None: every device)
    evaluate: Callable | None = None  # make_evaluate's function, unjitted (replicas vmap it)
    padded: int = 0  # M' > M: the device axis holds inert devices after the real ones (jaxdfl.sim.padding)
    online: Callable[[int], np.ndarray] | None = None  # availability: the devices online in a round ([M] bool)
    steps: Callable[[int], np.ndarray] | None = None  # stragglers: each device's local steps in a round ([M])

    def inputs(self, start: int, stop: int, dense: bool = False) -> RoundInputs:
        """The inputs of rounds ``start..stop-1``, stacked ``[R, ...]``, as the topology and network plan them;
        W in the form the round program uses (``dense``: always the ``[M, M]`` matrix)."""
        key = jax.random.fold_in(jax.random.key(self.config.seed), 1)
        inputs = round_inputs(self.topology, self.positions, key, start, stop, self.sparse_mixing and not dense,
                              self.online, self.steps)
        if not self.padded:
            return inputs
        pad = lambda x, fill: None if x is None else pad_devices(np.asarray(x), self.padded, fill)  # noqa: E731
        return inputs._replace(w=pad_mixing(inputs.w, self.padded), available=pad(inputs.available, True),
                               steps=pad(inputs.steps, self.config.local_steps))

    def mixing(self, round_: int):
        """Round ``round_``'s W in the form the round program uses."""
        w = self.topology.neighbours(round_) if self.sparse_mixing else self.topology.mixing(round_)
        return pad_mixing(w, self.padded) if self.padded else w

    def round_fn(self, state: SimState, w, key, active=None, control: RoundControl | dict | None = None,
                 positions=None):
        """One round from explicit pieces (jaxdfl 0.1's interface, kept): ``w`` ``[M, M]``, a key, optional
        ``active`` ``[K]``, :class:`~jaxdfl.core.RoundControl` (or a dict of its fields) and positions. It is
        :attr:`run_rounds` on a program of one round; metrics come back unstacked."""
        control = RoundControl(**control) if isinstance(control, dict) else control or RoundControl()
        one = lambda x: None if x is None else jnp.asarray(x)[None]  # noqa: E731
        inputs = RoundInputs(one(key), jnp.zeros(1, jnp.int32), one(w), one(active),
                             RoundControl(one(control.ratio), one(control.exchange), one(control.stored)),
                             one(positions))
        state, metrics = self.run_rounds(state, inputs)
        return state, jax.tree.map(lambda m: m[0], metrics)

    def trainable_params(self, state: SimState) -> float:
        """Trained parameters per device (the mean over devices; masked entries only, once masks are fixed)."""
        counts = jax.vmap(functools.partial(trained_params, self.method))(state.adapter)
        return float(jnp.mean(counts[:self.config.num_devices]))  # the real devices (not the inert padding)

    @property
    def base(self) -> Any:
        return self.device.base

    @property
    def base_params(self) -> int:
        return num_params(self.device.base)

    @property
    def layers(self) -> dict[str, tuple[int, int]]:
        """Adapted linear maps → ``(in, out)``."""
        return adapted_layers(self.model, self.config.model.adapt)


def load_model(model_cfg, seed: int = 0) -> tuple[Model, dict]:
    """The base model and its frozen weights, as the ``model`` section says: ``bundled`` or ``bundled_wide``
    (the digits tiny ViTs that ship with jaxdfl, width 64 and 128), ``random`` (a seeded init, of
    ``dim/depth/heads/mlp_dim`` when given), a ``.safetensors`` file written by jaxdfl, or under ``name:
    pretrained`` anything :func:`from_pretrained` reads."""
    if model_cfg.name == "pretrained":
        return from_pretrained(model_cfg.checkpoint, model_cfg.dtype)
    if model_cfg.checkpoint == "random":
        sizes = {k: getattr(model_cfg, k) for k in ("dim", "depth", "heads", "mlp_dim")}
        spec = tiny_vit.TinyViTSpec(**{k: v for k, v in sizes.items() if v is not None})
        return tiny_vit_model(spec), tiny_vit.init_params(jax.random.key(seed), spec)
    bundled = model_cfg.checkpoint in BUNDLED_TINY_VIT
    path = bundled_weights_path(model_cfg.checkpoint) if bundled else Path(model_cfg.checkpoint)
    if not path.is_file():
        raise ConfigError(f"model.checkpoint: no file at {path}")
    return load_weights(path)


def make_objective(model: Model, data: data_lib.FederatedData, data_name: str) -> Objective:
    """Multiple-choice likelihood for text on a decoder, cross-entropy for images on a classifier."""
    if model.is_decoder != (data.num_choices > 0):
        need = "an image classifier (model.name: tiny_vit, or a ViT)" if model.is_decoder else "a decoder LM"
        raise ConfigError(f"data.name: {data_name} needs {need}; the model is {model.name!r}")
    if model.is_decoder:
        return choice_likelihood(model.spec, data.num_choices, data.reply_tokens)
    return classification(model.apply)


def at_rank(method_cfg, rank: int):
    """``method_cfg`` at another LoRA rank, keeping its scale alpha/rank (TSFA's offline choice)."""
    if rank == method_cfg.rank:
        return method_cfg
    return dataclasses.replace(method_cfg, rank=rank, alpha=method_cfg.alpha / method_cfg.rank * rank)


def cluster_labels(cfg: Config, method: Method, adapter, positions: np.ndarray) -> np.ndarray:
    """AGNES clusters (Paper A §IV-C) from every device's layer densities and message size at init (neither
    depends on the init key)."""
    density = jax.vmap(functools.partial(layer_density, method))(adapter)
    density = np.stack([np.asarray(d) for d in density.values()], axis=1)  # [M, layers]
    net = cfg.network
    bits = np.asarray(jax.vmap(functools.partial(trained_params, method))(adapter)) * net.bits_per_param
    return agnes_clusters(density, positions, s_max=cfg.topology.s_max, p_max=net.power_max,
                          delay_bound=net.delay_bound, bandwidth=net.bandwidth, bits=bits, noise=net.noise,
                          path_loss_exp=net.path_loss_exp, min_distance=net.min_distance)


def network_design(path: str, m: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(power [M, 1], positions [M, 2])`` from a design file (``network.design``), each None if absent."""
    if not path:
        return None, None
    try:
        with np.load(path) as f:
            power = np.asarray(f["power"], np.float32).reshape(m, 1) if "power" in f else None
            start = np.asarray(f["positions"], np.float32).reshape(m, 2) if "positions" in f else None
    except (OSError, ValueError) as err:
        raise ConfigError(f"network.design: cannot read {path} for {m} devices ({err})") from None
    return power, start


def check_method_fits(method_cfg, layers: dict[str, tuple[int, int]], num_devices: int) -> None:
    """One warning line for method settings the model makes pointless: a rank above a layer's smaller side
    (the adapter outgrows the layer it adapts), an implicit-MoE top-k above what the experts hold."""
    rank = getattr(method_cfg, "rank", None)
    if rank is None:
        return
    name, (fan_in, fan_out) = min(layers.items(), key=lambda item: min(item[1]))
    if rank > min(fan_in, fan_out):
        warn(f"method.rank={rank} is above the smaller side of layer {name} ({fan_in} in, {fan_out} out): that "
             f"adapter has more parameters than the layer it adapts")
    top_k = getattr(method_cfg, "moe_top_k", None)
    if top_k and top_k >= num_devices * rank:
        warn(f"method.moe_top_k={top_k} keeps every entry of at most {num_devices} experts of rank {rank}: the "
             "same as moe_top_k: 0 (sum every expert)")


def build_simulation(cfg: Config, status: Callable[[str], None] = lambda message: None,
                     loaded: tuple[Model, dict] | None = None) -> Simulation:
    """Load the model and data, build the method, topology and the jitted programs for ``cfg``; ``status``
    hears what is being done (for a command line that should never be silent). ``loaded``: the model and
    its weights, already loaded (replicas share them)."""
    data_lib.check(cfg.data)
    if loaded is None:
        status(f"jaxdfl: loading the model ({cfg.model.name}: {cfg.model.checkpoint})…")
    model, base = loaded or load_model(cfg.model, cfg.seed)
    layers = adapted_layers(model, cfg.model.adapt)
    controller = build_controller(cfg, layers) if cfg.control.name != "none" else None
    method_cfg = cfg.method if controller is None else at_rank(cfg.method, controller.rank)
    check_method_fits(method_cfg, layers, cfg.num_devices)
    method = method_cfg.make(cfg.batch_size)
    optimizer = make_optimizer(cfg.optimizer)
    status(f"jaxdfl: building the data ({cfg.data.name}, {len(cfg.data.tasks)} tasks, {cfg.num_devices} devices)…")
    data = data_lib.build(cfg.data, cfg.num_devices, cfg.seed, tokenizer=model.tokenizer)
    objective = make_objective(model, data, cfg.data.name)
    m = padded_devices(cfg, method)  # the real devices, then inert ones up to a multiple of the chips
    padded = m if m > cfg.num_devices else 0
    mesh = make_mesh(m)
    on_devices, everywhere = sharded(mesh), replicated(mesh)
    byzantine = None
    if cfg.attack.kind != "none":  # a fixed set per seed; inert padding devices (jaxdfl.sim.padding) are honest
        byzantine = np.zeros(m, bool)
        byzantine[:cfg.num_devices] = byzantine_devices(cfg.attack.share, cfg.num_devices, cfg.seed)
    device = DeviceData(*jax.device_put((base, data.pool_x, data.pool_y), everywhere),
                        *jax.device_put(pad_rows(data.index, data.n, m) if padded else (data.index, data.n),
                                        on_devices), jax.device_put(byzantine, on_devices))
    test = TestSets(*jax.device_put((data.test_x, data.test_y, data.test_n), everywhere))
    state_sharding = SimState(on_devices, on_devices, everywhere,
                              on_devices if cfg.on_nonfinite == "drop_device" else None, everywhere, everywhere)

    stats = method_cfg.per_device(m)  # per-device settings (heterogeneous ranks), or None
    if stats is not None:
        stats = jax.device_put(stats, on_devices)
    if method.calibrate is not None:  # what the method reads of the base on each device's data, once
        def calibrate(base, x, index, n):
            return method.calibrate(objective.forward, base, layers, x[index], n)

        stats = jax.jit(jax.vmap(calibrate, in_axes=(None, None, 0, 0)), out_shardings=on_devices)(
            device.base, device.x, device.index, device.n)

    def init_fn(key, stats):  # stats are an argument, not a constant XLA would try to fold
        k_adapter = jax.random.split(key, m)  # the real devices' keys do not depend on m (threefry is
        if not method_cfg.per_device_init:  # partitionable: a split's first keys are those of a shorter split)
            k_adapter = jnp.broadcast_to(jax.random.fold_in(key, 0), (m,))
        adapter = jax.vmap(lambda k, s: method.init(k, layers, s))(k_adapter, stats)
        queue = () if controller is None else initial_queue()
        alive = jnp.ones(m, bool) if cfg.on_nonfinite == "drop_device" else None
        return SimState(adapter, jax.vmap(optimizer.init)(adapter.params), queue, alive)

    server_optimizer = make_server_optimizer(cfg.server_optimizer)
    buffered = cfg.stragglers.rule == "buffered"
    if server_optimizer is not None or cfg.scaffold.enabled or buffered:
        init_clients = init_fn

        def init_fn(key, stats):  # the server's optimizer state and SCAFFOLD's variates start at zero
            state = init_clients(key, stats)
            one = jax.tree.map(lambda p: p[0], state.adapter.params)
            if buffered:  # FedBuff: device 0's init is the global model, and every device downloads it
                params = jax.tree.map(lambda p, g: jnp.broadcast_to(g, p.shape), state.adapter.params, one)
                state = state._replace(adapter=state.adapter._replace(params=params),
                                       buffer=initial_buffer(one, m))
            if server_optimizer is not None:
                state = state._replace(server=server_optimizer.init(one))
            if cfg.scaffold.enabled:
                zeros = jax.tree.map(jnp.zeros_like, (state.adapter.params, one))
                state = state._replace(variates=Variates(*zeros))
            return state

        if cfg.scaffold.enabled:
            state_sharding = state_sharding._replace(variates=Variates(on_devices, everywhere))
        if buffered:
            state_sharding = state_sharding._replace(buffer=buffer_sharding(on_devices, everywhere))

    init_fn = functools.partial(jax.jit(init_fn, out_shardings=state_sharding), stats=stats)
    channel, positions, labels = None, (lambda round_: None), None
    if cfg.network.name == "d2d":
        net = cfg.network
        power, start = network_design(net.design, cfg.num_devices)
        channel = Channel(LinkBudget(net.bandwidth, net.delay_bound, net.power_max if power is None else power,
                                     net.noise, net.path_loss_exp), net.min_distance)
        positions = trajectory(cfg.num_devices, net.radius, net.move_std, cfg.seed, start)
    if cfg.topology.name == "clusters":  # densities and message sizes are known at init, before training
        labels = cluster_labels(cfg, method, init_fn(jax.random.key(cfg.seed)).adapter, positions(0))
    online = availability_plan(cfg.availability, cfg.num_devices, cfg.seed)
    poisson = poisson_plan(cfg.privacy, cfg.num_devices, cfg.seed, online)
    topology = build_topology(cfg.topology, cfg.num_devices, data.n, cfg.seed, data.task_of_device, labels, online,
                              poisson)
    online = poisson or online  # a client not drawn trains and sends nothing, like one offline

    sparse = sparse_mixing(cfg, topology, method, channel)
    server = cfg.topology.name == "server"
    shapes = jax.eval_shape(init_fn, jax.random.key(0)).adapter
    factors = has_lora_factors(shapes.params)  # B(12) needs B and A
    federation = federation_settings(cfg, method, shapes, data)
    make_round = functools.partial(make_round_step, objective, method, optimizer, local_steps=cfg.local_steps,
                                   batch_size=cfg.batch_size, reset_state=cfg.optimizer.reset_state,
                                   covariance=server and factors, collision=not server, channel=channel,
                                   controller=controller, device_chunk=cfg.device_chunk,
                                   drop_nonfinite=cfg.on_nonfinite == "drop_device",
                                   shifts=topology.shifts if sparse and not padded else None, mesh=mesh,
                                   real=cfg.num_devices if padded else None, server=server, **federation)
    round_step = make_round()
    scanned = jax.jit(functools.partial(run_rounds, round_step), out_shardings=(state_sharding, everywhere),
                      donate_argnums=0)
    evaluate = make_evaluate(objective, method, cfg.device_chunk, jnp.asarray(data.task_of_device))
    # Under a server every device holds the same global model after merging: evaluate one copy of it.
    evaluated = None if server else evaluation_sample(cfg, bool(padded))

    def served(state):  # FedBuff's devices hold stale copies: the global model is the buffer's
        return with_global(state.adapter, state.buffer) if buffered else state.adapter

    evaluate_fn = jax.jit(lambda state, w, stored=0.0, routing="mixture", *, device, test: evaluate(
        served(state), device.base, test, w, stored, np.zeros(1, np.int32) if server else evaluated,
        routing),
        static_argnames="routing", out_shardings=everywhere)
    # the frozen base alone: what every device answers before training (every method starts from a zero
    # delta), at 1/M of the cost of evaluate_fn
    base_accuracy_fn = jax.jit(functools.partial(task_accuracies, objective, hook=None), out_shardings=everywhere)
    return Simulation(cfg, model, objective, method, data, topology, mesh, device, test, controller, positions,
                      init_fn, make_round, round_step,
                      lambda state, inputs: scanned(state, device, inputs),
                      functools.partial(evaluate_fn, device=device, test=test),
                      functools.partial(base_accuracy_fn, device.base, test=test), sparse, evaluated, evaluate, padded,
                      online, steps_plan(cfg.stragglers, cfg.num_devices, cfg.local_steps, cfg.seed))
