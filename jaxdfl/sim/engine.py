"""The round program: vmapped local training → encode → mixing → merge, one jitted XLA program per round.

:func:`build_simulation` turns a :class:`~jaxdfl.config.Config` into a :class:`Simulation` whose pieces are
pure functions (``round_fn``, ``evaluate_fn``, ``init_fn``) plus the data and base weights already placed on
the mesh. The mixing matrix is an *input* of ``round_fn``: it can change every round, and gradients can flow
through it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdfl import data as data_lib
from jaxdfl.adapters import Method, make_method, num_params
from jaxdfl.config import Config
from jaxdfl.control.server import ServerController, build_controller, effective_config
from jaxdfl.metrics import lora_covariance
from jaxdfl.models import Model, adapted_layers, load_model
from jaxdfl.sim.local import adapted_apply, make_local_train
from jaxdfl.sim.mesh import make_mesh, replicated, sharded
from jaxdfl.sim.state import SimState
from jaxdfl.topology import Topology, build_topology, mix


def make_optimizer(opt_cfg) -> optax.GradientTransformation:
    if opt_cfg.name == "sgd":
        return optax.sgd(opt_cfg.learning_rate, momentum=opt_cfg.momentum or None)
    if opt_cfg.name == "adam":
        return optax.adam(opt_cfg.learning_rate)
    return optax.adamw(opt_cfg.learning_rate, weight_decay=opt_cfg.weight_decay)


def make_round_step(model_apply, method: Method, optimizer, local_steps: int, batch_size: int,
                    reset_state: bool = False, covariance: bool = False) -> Callable:
    """``round_step(state, base, x, y, n, w, key, active=None, control=None) -> (state, metrics)``, all devices.

    Shapes: ``state`` leaves ``[M, ...]``; ``x`` ``[M, n_max, ...]``; ``y`` ``[M, n_max]``; ``n`` ``[M]``;
    ``w`` ``[M, M]`` the round's mixing matrix (SPEC §5); ``active`` ``[K]`` int indices of the devices
    that train and send this round (None: all). Only active devices train and ``encode``, so an inactive
    device's optimizer state and method memory carry over untouched, and the compute is K/M of a full
    round. Every device then ``merge``s what it receives. ``control`` (a dict of scalars from a controller,
    e.g. TSFA's ratio) reaches every device's ``encode``.

    ``metrics``: ``train_loss`` (mean over active devices), ``device_loss`` ``[K]``, ``uplink_params`` /
    ``uplink_bits`` (summed over devices that transmit: column j of W has an off-diagonal non-zero), and
    with ``covariance=True`` ``covariance_fro`` (B eq. 12 over the active devices' trained factors,
    weighted by row 0 of W, i.e. for server topologies).
    """
    train = make_local_train(model_apply, method, optimizer, local_steps, batch_size, reset_state)

    def round_step(state: SimState, base, x, y, n, w, key, active=None, control=None):
        m = w.shape[0]
        if active is None:
            part, data = state, (x, y, n)
        else:
            part = jax.tree.map(lambda a: a[active], state)
            data = (x[active], y[active], n[active])
        k = jax.tree.leaves(part)[0].shape[0]
        k_train, k_encode = jax.random.split(key)
        adapter, opt_state, loss = jax.vmap(train, in_axes=(0, 0, None, 0, 0, 0, 0))(
            part.adapter, part.opt_state, base, *data, jax.random.split(k_train, k))
        trained = adapter.params
        message, adapter = jax.vmap(method.encode, in_axes=(0, 0, 0, None))(
            adapter, part.adapter.params, jax.random.split(k_encode, k), control)
        if active is not None:  # scatter back; inactive devices send an all-zero message with zero weight
            adapter, opt_state = jax.tree.map(lambda full, sub: full.at[active].set(sub),
                                              (state.adapter, state.opt_state),
                                              (adapter, opt_state))
            message = jax.tree.map(lambda sub: jnp.zeros((m, *sub.shape[1:]), sub.dtype).at[active].set(sub), message)
        adapter = jax.vmap(method.merge)(adapter, mix(w, message))
        transmits = jnp.any((w * (1.0 - jnp.eye(m))) != 0, axis=0)
        metrics = {
            "train_loss": loss.mean(),
            "device_loss": loss,
            "uplink_params": jnp.where(transmits, message.count, 0).sum(),
            "uplink_bits": jnp.where(transmits, message.bits, 0).sum(),
        }
        if covariance:
            metrics["covariance_fro"] = lora_covariance(trained, w[0] if active is None else w[0, active])
        return SimState(adapter, opt_state), metrics

    return round_step


def make_evaluate(model_apply, method: Method) -> Callable:
    """``evaluate(adapter, base, test_x, test_y, test_n) -> accuracy [M, T]``: every device's model on every
    task's test set (``test_x`` ``[T, m_max, ...]``, rows past ``test_n[t]`` ignored)."""

    def one_device(adapter, base, test_x, test_y, test_n):
        def one_task(args):
            x, y, n = args
            correct = adapted_apply(model_apply, method, base, adapter, x).argmax(-1) == y
            return jnp.where(jnp.arange(y.shape[0]) < n, correct, False).sum() / n

        return jax.lax.map(one_task, (test_x, test_y, test_n))

    return jax.vmap(one_device, in_axes=(0, None, None, None, None))


class Simulation(NamedTuple):
    """Everything a run needs, built once from a config. Arrays are already on the mesh."""

    config: Config  # as run: under TSFA, method.rank is the offline choice
    model: Model
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
    round_fn: Callable  # jitted round_step: (state, w, key, active=None, control=None) -> (state, metrics)
    evaluate_fn: Callable  # jitted evaluate(state) -> [M, T] ([1, T] under a server: the global model)
    controller: ServerController | None = None  # per-round ratio/bandwidth control (TSFA, OSFA), if configured

    @property
    def trainable_params(self) -> int:
        """Trainable parameters of one device."""
        state = jax.eval_shape(self.init_fn, jax.random.key(0))
        return num_params(state.adapter.params) // self.config.num_devices

    @property
    def base_params(self) -> int:
        return num_params(self.base)


def build_simulation(cfg: Config) -> Simulation:
    """Load the model and data, build the method, topology and the jitted round program for ``cfg``."""
    model, base = load_model(cfg.model, cfg.seed)
    layers = adapted_layers(model, cfg.model.adapt)
    controller = None
    if cfg.control.name != "none":
        controller = build_controller(cfg, layers)
        cfg = effective_config(cfg, controller)  # TSFA: the offline stage fixes the rank before training
    method = make_method(cfg.method)
    optimizer = make_optimizer(cfg.optimizer)
    data = data_lib.build(cfg.data, cfg.num_devices, cfg.seed)
    topology = build_topology(cfg.topology, cfg.num_devices, data.n, cfg.seed)
    mesh = make_mesh(cfg.num_devices)
    on_devices, everywhere = sharded(mesh), replicated(mesh)
    base = jax.device_put(base, everywhere)
    device_data = jax.device_put((data.x, data.y, data.n), on_devices)
    test_data = jax.device_put((data.test_x, data.test_y, data.test_n), everywhere)

    def init_fn(key):
        k_adapter = jax.random.split(key, cfg.num_devices)
        if cfg.method.shared_init:
            k_adapter = jnp.broadcast_to(jax.random.fold_in(key, 0), (cfg.num_devices,))
        adapter = jax.vmap(lambda k: method.init(k, layers))(k_adapter)
        return SimState(adapter, jax.vmap(optimizer.init)(adapter.params))

    server = cfg.topology.name == "server"
    round_step = make_round_step(model.apply, method, optimizer, cfg.local_steps, cfg.batch_size,
                                 cfg.optimizer.reset_state, covariance=server and cfg.method.name != "full")
    round_fn = jax.jit(lambda state, w, key, active=None, control=None:
                       round_step(state, base, *device_data, w, key, active, control),
                       out_shardings=(on_devices, everywhere), donate_argnums=0)
    evaluate = make_evaluate(model.apply, method)
    # Under a server every device holds the same global model after merging: evaluate one copy of it.
    rows = (lambda a: a[:1]) if server else (lambda a: a)
    evaluate_fn = jax.jit(lambda state: evaluate(jax.tree.map(rows, state.adapter), base, *test_data),
                          out_shardings=everywhere)
    return Simulation(cfg, model, base, method, optimizer, data, device_data, test_data, topology, mesh, layers,
                      jax.jit(init_fn, out_shardings=on_devices), round_fn, evaluate_fn, controller)
