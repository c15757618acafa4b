"""A toy model, objective and method for fast unit tests of the engine: a linear classifier ``x @ W0`` with
one adaptable map "lin", and a bias adapter whose every step is easy to compute by hand."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdfl.core import AdapterState, Message, Method, RoundControl
from jaxdfl.sim.objective import classification
from jaxdfl.sim.round import DeviceData, make_round_step

K, C = 5, 3  # input width, classes
LAYERS = {"lin": (K, C)}


def apply(base, x, hook=None):
    out = x @ base["lin"]["w"]
    dy = None if hook is None else hook("lin", x)
    return out if dy is None else out + dy


OBJECTIVE = classification(apply)


class BiasMemory(NamedTuple):
    encoded: jax.Array  # rounds this device encoded (trained and sent)
    last_ratio: jax.Array  # the control ratio its last encode saw (-1: none)


def bias_method() -> Method:
    """A bias on "lin": params ``{"lin": [C]}``, sent whole, replaced by the mixed value."""

    def init(key, layers, stats=None):
        return AdapterState({"lin": jnp.zeros(C)}, (), BiasMemory(jnp.zeros((), jnp.int32), -jnp.ones(())))

    def delta(state, name, x):
        return jnp.broadcast_to(state.params[name], (*x.shape[:-1], C)) if name in state.params else None

    def encode(state, ref, key, control: RoundControl):
        ratio = -1.0 if control.ratio is None else control.ratio
        memory = BiasMemory(state.memory.encoded + 1, jnp.asarray(ratio, jnp.float32))
        return Message(state.params, None, jnp.float32(C), jnp.float32(32 * C)), state._replace(memory=memory)

    def merge(state, mixed, control: RoundControl):
        return state._replace(params=mixed.values)

    return Method(init, delta, encode, merge)


def device_data(m: int, n: int = 12, seed: int = 0) -> DeviceData:
    """``m`` devices with ``n`` examples each; device i's labels are shifted by i (devices disagree)."""
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (m, n, K))
    w_true = jax.random.normal(kw, (K, C))
    y = (jnp.argmax(x @ w_true, -1) + jnp.arange(m)[:, None]) % C
    index = jnp.arange(m * n, dtype=jnp.int32).reshape(m, n)  # device i holds rows i·n .. i·n + n − 1
    return DeviceData({"lin": {"w": jnp.zeros((K, C))}}, x.reshape(m * n, K), y.reshape(m * n), index,
                      jnp.full(m, n, jnp.int32))


def init_states(method: Method, optimizer, m: int, seed: int = 0):
    """Every device's adapter (each its own init key) and optimizer state."""
    from jaxdfl.sim.state import SimState

    adapter = jax.vmap(lambda k: method.init(k, LAYERS))(jax.random.split(jax.random.key(seed), m))
    return SimState(adapter, jax.vmap(optimizer.init)(adapter.params))


def round_step(method: Method, optimizer=None, **kwargs):
    """The engine's round program on the toy objective (2 local steps of batch 4 unless told otherwise)."""
    optimizer = optimizer or optax.sgd(0.5)
    kwargs = {"local_steps": 2, "batch_size": 4} | kwargs
    return make_round_step(OBJECTIVE, method, optimizer, **kwargs)
