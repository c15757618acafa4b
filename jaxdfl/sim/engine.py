"""The round program: vmapped local training → encode → mixing → merge, one jitted XLA program per round.

:func:`build_simulation` turns a :class:`~jaxdfl.config.Config` into a :class:`Simulation` whose pieces are
pure functions (``round_fn``, ``evaluate_fn``, ``init_fn``) plus the data and base weights already placed on
the mesh. The mixing matrix is an *input* of ``round_fn``: it can change every round, and gradients can flow
through it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdfl import data as data_lib
from jaxdfl.adapters import ExpertView, Method, make_method, num_params
from jaxdfl.adapters.so_lora import DeviceStats
from jaxdfl.config import Config
from jaxdfl.errors import ConfigError
from jaxdfl.control.server import ServerController, build_controller, effective_config
from jaxdfl.metrics import collision_rate, lora_covariance
from jaxdfl.models import Model, adapted_layers, load_model
from jaxdfl.network.d2d import LinkBudget, broadcast_cost, channel_gains, deliver, distances, trajectory
from jaxdfl.sim.local import adapter_hook, make_local_train
from jaxdfl.sim.objective import Objective, choice_likelihood, classification
from jaxdfl.sim.mesh import make_mesh, replicated, sharded
from jaxdfl.sim.state import SimState
from jaxdfl.topology import Topology, agnes_clusters, build_topology, mix


def make_optimizer(opt_cfg) -> optax.GradientTransformation:
    if opt_cfg.name == "sgd":
        return optax.sgd(opt_cfg.learning_rate, momentum=opt_cfg.momentum or None)
    if opt_cfg.name == "adam":
        return optax.adam(opt_cfg.learning_rate)
    return optax.adamw(opt_cfg.learning_rate, weight_decay=opt_cfg.weight_decay)


def neighbourhood_collision(w: jax.Array, masks) -> jax.Array:
    """Mean over devices i of the share of positions where two or more of i's in-neighbours (W_ij > 0, i
    included) hold a mask entry: the empirical counterpart of A(19) for every aggregation set M_i.

    ``w`` ``[M, M]``; ``masks`` pytree of 0/1 ``[M, ...]``; all layers' positions pooled."""
    linked = (w != 0).astype(jnp.float32)
    counts = [jnp.einsum("ij,j...->i...", linked, m).reshape(w.shape[0], -1) for m in jax.tree.leaves(masks)]
    return jnp.mean(jnp.concatenate(counts, axis=1) >= 2)


def neighbourhood_collision_rate(w: jax.Array, masks) -> jax.Array:
    """A(19) for every device's aggregation set {j: W_ij > 0}, each device j active at a leaf's positions
    with probability s_j = its mask's density there; per device the layers are pooled by their sizes (the
    expected value of :func:`neighbourhood_collision`), then averaged over devices."""
    leaves = jax.tree.leaves(masks)
    s = jnp.stack([m.reshape(m.shape[0], -1).mean(1) for m in leaves], axis=1)  # [M, leaves]
    sizes = jnp.array([m[0].size for m in leaves], jnp.float32)
    linked = (w != 0).astype(jnp.float32)
    per_leaf = jax.vmap(lambda row: collision_rate(row[:, None] * s))(linked)  # [M, leaves]
    return jnp.mean(per_leaf @ sizes / sizes.sum())


def expert_views(method: Method, adapter, w: jax.Array, stored) -> ExpertView:
    """Every device's :class:`ExpertView`, leaves ``[M, ...]`` except ``experts`` (shared, unmapped): the
    devices it aggregates with under ``w`` (held) and, when the scalar flag ``stored`` is on, the stored
    experts of the devices it gives zero weight (the other clusters, after an exchange)."""
    held = (w != 0).astype(jnp.float32)
    return ExpertView(jax.vmap(method.expert)(adapter), held, (1.0 - held) * stored, jnp.arange(w.shape[0]))


def over_devices(fn: Callable, in_axes: tuple, chunk: int = 0) -> Callable:
    """``fn`` mapped over the device axis: ``jax.vmap`` with ``in_axes`` (each 0 or None, one per argument), or
    with ``chunk > 0`` a ``lax.map`` over groups of ``chunk`` devices, each group vmapped. Same results; the
    mapped computation's memory (activations kept for the backward pass, above all) is then that of
    ``chunk`` devices instead of all of them, at the price of running the groups one after another."""
    if chunk <= 0:
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        moving = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

        def one(moving_args):
            it = iter(moving_args)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))

        return jax.lax.map(one, moving, batch_size=chunk)

    return mapped


def split_view(view: ExpertView | None) -> tuple[ExpertView | None, Any]:
    """``(per-device part, shared experts)`` of an :class:`ExpertView`, to map the first and not the second."""
    return (None, None) if view is None else (view._replace(experts=None), view.experts)


class Channel(NamedTuple):
    """The device-to-device air interface of a round program (Paper A, SPEC §2.5)."""

    budget: LinkBudget
    min_distance: float


def make_round_step(objective: Objective, method: Method, optimizer, local_steps: int, batch_size: int,
                    reset_state: bool = False, covariance: bool = False, collision: bool = False,
                    channel: Channel | None = None, device_chunk: int = 0) -> Callable:
    """``round_step(state, base, x, y, n, w, key, active=None, control=None, positions=None)
    -> (state, metrics)``, all devices.

    Shapes: ``state`` leaves ``[M, ...]``; ``x`` ``[M, n_max, ...]``; ``y`` ``[M, n_max]``; ``n`` ``[M]``;
    ``w`` ``[M, M]`` the round's planned mixing matrix (SPEC §5); ``active`` ``[K]`` int indices of the
    devices that train and send this round (None: all). Only active devices train and ``encode``, so an
    inactive device's optimizer state and method memory carry over untouched, and the compute is K/M of a
    full round. Every device then ``merge``s what it receives. ``control`` (a dict of scalars, e.g. TSFA's
    ratio) reaches every device's ``encode`` and ``merge``. Under a cluster topology its ``stored`` flag says
    that every device holds the experts of the other clusters (the devices it gives zero weight), and its
    ``exchange`` flag makes this round an inter-cluster exchange.

    With a ``channel``, ``positions`` ``[M, 2]`` places the devices; this round's Rayleigh fading, minimum
    powers and outages (:func:`jaxdfl.network.d2d.deliver`) turn the planned W into the delivered one
    before mixing.

    ``metrics``: ``train_loss`` (mean over active devices), ``device_loss`` ``[K]``, ``uplink_params`` /
    ``uplink_bits`` (summed over devices that transmit: column j of the delivered W has an off-diagonal
    non-zero, plus the exchange), ``senders`` (how many transmit); with ``covariance=True``
    ``covariance_fro`` (B eq. 12 over the active devices' trained factors, weighted by row 0 of W, i.e. for
    server topologies); with ``collision=True`` ``collision_empirical`` (:func:`neighbourhood_collision` of the
    sent masks; a dense message holds every position) and ``collision_analytic``
    (:func:`neighbourhood_collision_rate`); with a channel the :class:`~jaxdfl.network.d2d.LinkReport` fields
    (``energy_j`` including the exchange) and ``exchange_delay_s`` (the exchange is not bound by Γ).
    A message's one-off setup part (:class:`~jaxdfl.adapters.base.Message`) is charged in full every time.
    ``device_chunk`` > 0 trains that many devices at a time (:func:`over_devices`).
    """
    local_train = make_local_train(objective.loss, method, optimizer, local_steps, batch_size, reset_state)

    def train(state, opt_state, base, x, y, n, key, own_view, experts):
        return local_train(state, opt_state, base, x, y, n, key,
                           None if own_view is None else own_view._replace(experts=experts))

    train_all = over_devices(train, (0, 0, None, 0, 0, 0, 0, 0, None), device_chunk)

    def round_step(state: SimState, base, x, y, n, w, key, active=None, control=None, positions=None):
        m = w.shape[0]
        control = control or {}
        if active is None:
            part, data = state, (x, y, n)
        else:
            part = jax.tree.map(lambda a: a[active], state)
            data = (x[active], y[active], n[active])
        k = jax.tree.leaves(part)[0].shape[0]
        k_train, k_encode, k_fade = jax.random.split(key, 3)
        view = None
        if method.local_experts:
            view = expert_views(method, state.adapter, w, control.get("stored", 0.0))
            if active is not None:
                view = view._replace(held=view.held[active], stored=view.stored[active], index=view.index[active])
        adapter, opt_state, loss = train_all(part.adapter, part.opt_state, base, *data, jax.random.split(k_train, k),
                                             *split_view(view))
        trained = adapter.params
        message, adapter = jax.vmap(method.encode, in_axes=(0, 0, 0, None))(
            adapter, part.adapter.params, jax.random.split(k_encode, k), control or None)
        if active is not None:  # scatter back; inactive devices send an all-zero message with zero weight
            adapter, opt_state = jax.tree.map(lambda full, sub: full.at[active].set(sub),
                                              (state.adapter, state.opt_state),
                                              (adapter, opt_state))
            message = jax.tree.map(lambda sub: jnp.zeros((m, *sub.shape[1:]), sub.dtype).at[active].set(sub), message)
        metrics = {}
        # an exchange round: every device also hands its expert to every device of the other clusters
        crossing = (w == 0) & jnp.asarray(control.get("exchange", False))  # [receiver, sender]
        if channel is not None:
            gain = channel_gains(k_fade, distances(positions, channel.min_distance), channel.budget.path_loss_exp)
            bits = message.bits - message.setup_bits  # the one-off setup is not bound by the round's Γ
            w, report = deliver(w, bits, gain, channel.budget)
            x_delay, x_energy = broadcast_cost(crossing.T, bits, gain, channel.budget)
            metrics |= report._replace(energy_j=report.energy_j + x_energy)._asdict()
            metrics["exchange_delay_s"] = x_delay
        adapter = jax.vmap(method.merge, in_axes=(0, 0, None))(adapter, mix(w, message), control or None)
        transmits = jnp.any((w * (1.0 - jnp.eye(m))) != 0, axis=0) | jnp.any(crossing, axis=0)
        charged = lambda total, setup: jnp.sum(jnp.where(transmits, total - setup, 0) + setup)  # noqa: E731
        metrics |= {
            "train_loss": loss.mean(),
            "device_loss": loss,
            "uplink_params": charged(message.count, message.setup_count),
            "uplink_bits": charged(message.bits, message.setup_bits),
            "senders": transmits.sum(),
        }
        if collision:
            masks = message.values if message.mask is None else message.mask
            masks = jax.tree.map(jnp.ones_like, masks) if message.mask is None else masks
            metrics["collision_empirical"] = neighbourhood_collision(w, masks)
            metrics["collision_analytic"] = neighbourhood_collision_rate(w, masks)
        if covariance:
            metrics["covariance_fro"] = lora_covariance(trained, w[0] if active is None else w[0, active])
        return SimState(adapter, opt_state), metrics

    return round_step


def task_accuracies(objective: Objective, base, hook, test_x, test_y, test_n) -> jax.Array:
    """``[T]``: the model ``base`` + ``hook`` on every task's test set (``test_x`` ``[T, m_max, ...]``, rows
    past ``test_n[t]`` ignored)."""

    def one_task(args):
        x, y, n = args
        correct = objective.scores(base, x, hook).argmax(-1) == y
        return jnp.where(jnp.arange(y.shape[0]) < n, correct, False).sum() / n

    return jax.lax.map(one_task, (test_x, test_y, test_n))


def make_evaluate(objective: Objective, method: Method, device_chunk: int = 0) -> Callable:
    """``evaluate(adapter, base, test_x, test_y, test_n, w, stored=0.0) -> accuracy [M, T]``: every device's
    model on every task's test set (:func:`task_accuracies`).

    Methods with an ``infer`` (implicit MoE) answer with every expert a device holds (:func:`expert_views`):
    the devices it aggregates with under ``w`` ``[M, M]`` (the planned mixing matrix), and, when the scalar
    ``stored`` is 1, the experts of the devices it gives zero weight (other clusters, after an exchange).
    Others use their own adapter; ``w`` is then unused."""

    def one_device(adapter, own_view, experts, base, test_x, test_y, test_n):
        view = None if own_view is None else own_view._replace(experts=experts)
        return task_accuracies(objective, base, adapter_hook(method, adapter, view), test_x, test_y, test_n)

    every_device = over_devices(one_device, (0, 0, None, None, None, None, None), device_chunk)

    def evaluate(adapter, base, test_x, test_y, test_n, w, stored=0.0):
        view = expert_views(method, adapter, w, stored) if method.infer is not None else None
        return every_device(adapter, *split_view(view), base, test_x, test_y, test_n)

    return evaluate


def make_capture(model_forward, layers: dict[str, tuple[int, int]], examples: int) -> Callable:
    """``capture(base, x, n) -> DeviceStats`` for one device: the inputs H⁰ of every adapted linear map in the
    frozen base model on the device's first ``examples`` examples (``x`` ``[n_max, ...]``, ``n`` real ones),
    taken through the model's hook. Rows of padding examples are zero."""

    def capture(base, x, n):
        x = x[:examples]
        valid = (jnp.arange(x.shape[0]) < n).astype(jnp.float32)
        seen = {}

        def hook(name, h):
            if name in layers:  # inputs carry the batch first: [batch, ..., in]
                rows = h * valid.reshape(-1, *([1] * (h.ndim - 1)))
                seen[name] = (rows.reshape(-1, h.shape[-1]), valid.sum() * (rows.size // h.shape[0] // h.shape[-1]))
            return None

        model_forward(base, x, hook)
        inputs = {name: rows for name, (rows, _) in seen.items()}
        weights = {name: base[name]["w"].T for name in layers}
        return DeviceStats(inputs, next(iter(seen.values()))[1], n.astype(jnp.float32), weights)

    return capture


class Simulation(NamedTuple):
    """Everything a run needs, built once from a config. Arrays are already on the mesh."""

    config: Config  # as run: under TSFA, method.rank is the offline choice
    model: Model
    objective: Objective  # what local training minimises and evaluation scores
    base: Any  # frozen base weights, replicated (stored once, shared by every simulated device)
    method: Method
    optimizer: optax.GradientTransformation
    data: data_lib.FederatedData  # host copy (numpy)
    device_data: tuple  # (x, y, n) sharded over the device axis
    test_data: tuple  # (test_x, test_y, test_n) replicated
    topology: Topology
    mesh: jax.sharding.Mesh
    layers: dict[str, tuple[int, int]]  # adapted linear maps → (in, out)
    init_fn: Callable[[jax.Array], SimState]
    # jitted round_step: (state, w, key, active=None, control=None, positions=None) -> (state, metrics)
    round_fn: Callable
    # jitted evaluate(state, w, stored=0.0) -> [M, T] ([1, T] under a server: the global model); w is the
    # planned mixing matrix (who holds whose expert, for implicit MoE), stored the topology's flag
    evaluate_fn: Callable
    base_accuracy_fn: Callable  # jitted () -> [T]: the base model alone on every task
    controller: ServerController | None = None  # per-round ratio/bandwidth control (TSFA, OSFA), if configured
    positions: Callable[[int], np.ndarray | None] = lambda round_: None  # device positions per round (d2d)

    def trainable_params(self, state: SimState) -> float:
        """Trained parameters per device (the mean over devices; masked entries only, once masks are fixed)."""
        return float(jnp.mean(per_device_trainable(self.method, state.adapter)))

    @property
    def base_params(self) -> int:
        return num_params(self.base)


def per_device_trainable(method: Method, adapter) -> jax.Array:
    """``[M]`` trained parameters of each device."""
    if method.trainable is None:
        m = jax.tree.leaves(adapter.params)[0].shape[0]
        return jnp.full(m, num_params(adapter.params) / m, jnp.float32)
    return jax.vmap(method.trainable)(adapter)


def cluster_labels(cfg: Config, method: Method, state: SimState, positions: np.ndarray) -> np.ndarray:
    """AGNES clusters (SPEC §2.6) from every device's layer densities and message size at init."""
    adapter = state.adapter
    m = cfg.num_devices
    density = np.ones((m, 1)) if method.density is None else np.asarray(jax.vmap(method.density)(adapter))
    net = cfg.network
    bits = np.asarray(per_device_trainable(method, adapter)) * net.bits_per_param
    return agnes_clusters(density, positions, s_max=cfg.topology.s_max, p_max=net.power_max,
                          delay_bound=net.delay_bound, bandwidth=net.bandwidth, bits=bits, noise=net.noise,
                          path_loss_exp=net.path_loss_exp, min_distance=net.min_distance)


def make_objective(model: Model, data: data_lib.FederatedData, data_name: str) -> Objective:
    """Multiple-choice likelihood for text on a decoder, cross-entropy for images on a classifier."""
    if model.is_decoder != (data.num_choices > 0):
        need = "an image classifier (model.name: tiny_vit, or a ViT)" if model.is_decoder else "a decoder LM"
        raise ConfigError(f"data.name: {data_name} needs {need}; the model is {model.name!r}")
    if model.is_decoder:
        return choice_likelihood(model.spec, data.num_choices, data.reply_tokens)
    return classification(model.apply)


def build_simulation(cfg: Config) -> Simulation:
    """Load the model and data, build the method, topology and the jitted round program for ``cfg``."""
    model, base = load_model(cfg.model, cfg.seed)
    layers = adapted_layers(model, cfg.model.adapt)
    controller = None
    if cfg.control.name != "none":
        controller = build_controller(cfg, layers)
        cfg = effective_config(cfg, controller)  # TSFA: the offline stage fixes the rank before training
    method = make_method(cfg.method, cfg.batch_size)
    optimizer = make_optimizer(cfg.optimizer)
    data = data_lib.build(cfg.data, cfg.num_devices, cfg.seed, tokenizer=model.tokenizer)
    objective = make_objective(model, data, cfg.data.name)
    mesh = make_mesh(cfg.num_devices)
    on_devices, everywhere = sharded(mesh), replicated(mesh)
    base = jax.device_put(base, everywhere)
    device_data = jax.device_put((data.x, data.y, data.n), on_devices)
    test_data = jax.device_put((data.test_x, data.test_y, data.test_n), everywhere)

    def init_fn(key, base, x, n):  # arrays are arguments, not constants XLA would try to fold
        k_adapter = jax.random.split(key, cfg.num_devices)
        if not cfg.method.per_device_init:
            k_adapter = jnp.broadcast_to(jax.random.fold_in(key, 0), (cfg.num_devices,))
        if method.needs_stats:
            capture = make_capture(objective.forward, layers, cfg.method.calib_examples)
            stats = jax.vmap(capture, in_axes=(None, 0, 0))(base, x, n)
            adapter = jax.vmap(lambda k, s: method.init(k, layers, s))(k_adapter, stats)
        else:
            adapter = jax.vmap(lambda k: method.init(k, layers))(k_adapter)
        return SimState(adapter, jax.vmap(optimizer.init)(adapter.params))

    init_fn = functools.partial(jax.jit(init_fn, out_shardings=on_devices), base=base, x=device_data[0],
                                n=device_data[2])
    channel, positions, labels = None, (lambda round_: None), None
    if cfg.network.name == "d2d":
        net = cfg.network
        channel = Channel(LinkBudget(net.bandwidth, net.delay_bound, net.power_max, net.noise, net.path_loss_exp),
                          net.min_distance)
        positions = trajectory(cfg.num_devices, net.radius, net.move_std, cfg.seed)
    if cfg.topology.name == "clusters":  # densities and message sizes are known at init, before training
        labels = cluster_labels(cfg, method, init_fn(jax.random.key(cfg.seed)), positions(0))
    topology = build_topology(cfg.topology, cfg.num_devices, data.n, cfg.seed, data.task_of_device, labels)

    server = cfg.topology.name == "server"
    round_step = make_round_step(objective, method, optimizer, cfg.local_steps, cfg.batch_size,
                                 cfg.optimizer.reset_state, covariance=server and cfg.method.name != "full",
                                 collision=not server, channel=channel, device_chunk=cfg.device_chunk)
    round_fn = jax.jit(lambda state, w, key, active=None, control=None, positions=None:
                       round_step(state, base, *device_data, w, key, active, control, positions),
                       out_shardings=(on_devices, everywhere), donate_argnums=0)
    evaluate = make_evaluate(objective, method, cfg.device_chunk)
    # Under a server every device holds the same global model after merging: evaluate one copy of it.
    rows = (lambda a: a[:1]) if server else (lambda a: a)
    evaluate_fn = jax.jit(lambda state, w, stored=0.0: evaluate(jax.tree.map(rows, state.adapter), base,
                                                                *test_data, rows(w), stored),
                          out_shardings=everywhere)
    # the frozen base alone: what every device answers before training (every method starts from a zero
    # delta), at 1/M of the cost of evaluate_fn
    base_accuracy_fn = functools.partial(jax.jit(functools.partial(task_accuracies, objective, hook=None),
                                                 out_shardings=everywhere), base, test_x=test_data[0],
                                         test_y=test_data[1], test_n=test_data[2])
    return Simulation(cfg, model, objective, base, method, optimizer, data, device_data, test_data, topology, mesh,
                      layers, init_fn, round_fn, evaluate_fn, base_accuracy_fn, controller, positions)
