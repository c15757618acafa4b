"""jaxdfl against PyTorch + PEFT: the same tiny ViT, the same weights, the same work per round.

    python experiments/bench_peer.py                     # 64 and 256 devices; writes results/bench_peer.csv
    python experiments/bench_peer.py --devices 64 --rounds 7
    python experiments/bench_peer.py --quick             # 8 devices, 2 rounds, no compiled or extra jaxdfl
                                                         # variants: a smoke run, under 2 minutes

Needs torch, transformers and peft (``pip install peft``; not a dependency of jaxdfl).

The work of one round, alike on every side: M devices each run E = 5 local Adam steps (lr 0.005, the quick
start's optimizer; every device keeps its own Adam state across rounds) on mini-batches of 8 drawn from its
own rows of the digits pool, training LoRA (r = 4, alpha = 8) on every q, k, v, o, up, down and head map of
the bundled tiny ViT (the quick start's ``model.adapt``); then a ring's W (Metropolis weights, 1/3 each)
mixes the adapters as a dense [M, M] product. Every variant starts from jaxdfl's initial adapters and is
timed in a fresh process (its own threads, allocator and memory):

  jaxdfl                 ``Simulation.run_rounds``, one XLA program a round; XLA's own thread pool (2 cores)
  jaxdfl-2dev            the same with JAX_NUM_CPU_DEVICES=2 (as --xla_force_host_platform_device_count=2):
                         the device axis sharded over 2 JAX CPU devices
  jaxdfl-malloc          the same with glibc's allocator told to keep freed memory (MALLOC_MMAP_MAX_=0,
                         MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_): no page faults on buffers reused each round
  jaxdfl-2dev-malloc     both
  peft-loop              transformers' ViTForImageClassification with peft LoRA, one model: a Python loop over
                         devices, each swapping in its adapter (a row of the stacked adapters) and its
                         torch.optim.Adam state, E steps, the adapter written back; then the mixing. 2 threads
  peft-compile           the same with the model under torch.compile (inductor); the optimizer eager
  peft-2workers          two worker processes of 1 thread, each the eager loop over half of the devices; the
                         adapters in shared memory, the mixing in the parent
  peft-compile-2workers  the same, each worker's model under torch.compile
  torch-vmap             torch.func.functional_call of the peft model, vmap(grad) over the stacked adapters
                         (eager attention: SDPA has no vmap batching rule), Adam written as tensor ops. 2 threads

Before any timing, the torch side is checked against jaxdfl on the same batch: logits of the base, logits
and loss with an adapter whose B is nonzero, and every LoRA gradient (peft model and the vmap).
Reported per variant: seconds per round (median of --rounds, after one warm-up round that includes any
compilation), device-steps/s, GFLOP/s (XLA's cost analysis of jaxdfl's round, the same arithmetic for all),
the cores the machine kept busy over the timed rounds, and how many times faster jaxdfl is (its default
setting; its best setting). A variant during which other processes kept the machine busy is run again.
The profile (not with --quick): one LoRA gradient of every device's batch, no optimizer, in JAX and in
torch, vmapped over the devices and as one model on one batch of M·8 (results/bench_peer_profile.csv).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from torch.func import functional_call, grad, vmap
    from transformers import ViTConfig, ViTForImageClassification
except ImportError as err:
    sys.exit(f"bench_peer.py compares jaxdfl against PyTorch + PEFT and needs torch, transformers and peft, "
             f"which jaxdfl itself does not install: pip install torch transformers peft ({err})")

LOCAL_STEPS, BATCH = 5, 8
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults, and torch.optim.Adam's
MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_TOP_PAD_": str(1 << 28)}
VARIANTS = {  # name -> environment of its process
    "jaxdfl": {}, "jaxdfl-2dev": {"JAX_NUM_CPU_DEVICES": "2"}, "jaxdfl-malloc": MALLOC,
    "jaxdfl-2dev-malloc": {"JAX_NUM_CPU_DEVICES": "2", **MALLOC},
    "peft-loop": {}, "peft-compile": {}, "peft-2workers": {}, "peft-compile-2workers": {}, "torch-vmap": {},
}
PROFILES = ["profile-jax", "profile-torch"]  # one gradient step in pieces (see profile_jax)
QUICK = ["jaxdfl", "peft-loop", "peft-2workers", "torch-vmap"]  # nothing that waits for torch.compile
TARGETS = {"peft-loop": 10.0, "peft-2workers": 3.0, "peft-compile-2workers": 3.0, "torch-vmap": 3.0}  # jaxdfl ×


def config_overrides(devices: int) -> list[str]:
    """The quick start (tiny ViT, LoRA r = 4 on q/k/v/o/up/down/head, Adam lr 0.005, ring) at this work."""
    return [f"num_devices={devices}", f"local_steps={LOCAL_STEPS}", f"batch_size={BATCH}",
            "topology.mixing_form=dense"]


# --- the tiny ViT as transformers' ViT -----------------------------------------------------------------------

class Setup(NamedTuple):
    """What every torch variant starts from, written by the parent process (numpy only, no JAX needed).

    ``hf_config`` the ViTConfig keywords; ``hf_state`` the HF model's state dict; ``modules`` the HF module
    path of every adapted linear map; ``lora`` their stacked initial factors, ``[M, r, in]`` (A) then
    ``[M, out, r]`` (B) per module; ``x`` ``[N, C, H, W]`` and ``y`` ``[N]`` the training pool; ``index``
    ``[M, n_max]`` and ``n`` ``[M]`` each device's rows of it; ``w`` ``[M, M]`` the mixing matrix."""

    hf_config: dict
    hf_state: dict
    modules: list
    lora: list
    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    n: np.ndarray
    w: np.ndarray
    rank: int
    alpha: float
    lr: float


def save_setup(setup: Setup, path: Path) -> None:
    """One .npz: arrays under prefixed names, the rest as JSON."""
    meta = {"hf_config": setup.hf_config, "modules": setup.modules, "state_keys": list(setup.hf_state),
            "rank": setup.rank, "alpha": setup.alpha, "lr": setup.lr}
    arrays = {f"hf/{k}": v for k, v in setup.hf_state.items()} | {f"lora/{i}": v for i, v in enumerate(setup.lora)}
    np.savez(path, meta=json.dumps(meta), x=setup.x, y=setup.y, index=setup.index, n=setup.n, w=setup.w, **arrays)


def load_setup(path: Path) -> Setup:
    """The :class:`Setup` that :func:`save_setup` wrote."""
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        return Setup(meta["hf_config"], {k: f[f"hf/{k}"] for k in meta["state_keys"]}, meta["modules"],
                     [f[f"lora/{i}"] for i in range(2 * len(meta["modules"]))], f["x"], f["y"], f["index"],
                     f["n"], f["w"], meta["rank"], meta["alpha"], meta["lr"])


def hf_config(spec) -> dict:
    """ViTConfig keywords of a :class:`~jaxdfl.models.tiny_vit.TinyViTSpec`: its GELU is the tanh one, its
    LayerNorms' eps 1e-6, no dropout."""
    return {"image_size": spec.image_size, "patch_size": spec.patch, "num_channels": spec.channels,
            "hidden_size": spec.dim, "num_hidden_layers": spec.depth, "num_attention_heads": spec.heads,
            "intermediate_size": spec.mlp_dim, "num_labels": spec.num_classes, "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "qkv_bias": True}


def tiny_vit_to_hf(params: dict, spec) -> tuple[ViTForImageClassification, dict[str, str]]:
    """transformers' ViT holding the tiny ViT's weights (the reverse of :func:`jaxdfl.models.vit.params_from_hf`,
    which jaxdfl does not have), and each jaxdfl linear map's HF module path, in whichever layout the installed
    transformers uses."""
    from jaxdfl.models import tiny_vit, vit

    model = ViTForImageClassification(ViTConfig(**hf_config(spec))).eval()
    named = dict(model.named_modules())

    def path(candidates: tuple[str, ...], i: str) -> str:
        return next(c.format(i=i) for c in candidates if c.format(i=i) in named)

    def put(tensor, value) -> None:
        tensor.copy_(torch.from_numpy(np.array(value)))

    paths = {"head": "classifier"}
    with torch.no_grad():
        for name in tiny_vit.linear_shapes(spec):
            if name.startswith("block"):
                i, kind = name.removeprefix("block").split("_", 1)
                paths[name] = path(vit._BLOCK_LINEARS[kind], i)
                for ln in ("ln1", "ln2"):
                    norm = named[path(vit._BLOCK_NORMS[ln], i)]
                    put(norm.weight, params[f"block{i}_{ln}"]["scale"])
                    put(norm.bias, params[f"block{i}_{ln}"]["bias"])
            if name != "embed":
                put(named[paths[name]].weight, np.asarray(params[name]["w"]).T)
                put(named[paths[name]].bias, params[name]["b"])
        p, c, d = spec.patch, spec.channels, spec.dim  # our [p·p·C, d] over (row, col, channel) -> [d, C, p, p]
        embeddings = model.vit.embeddings
        put(embeddings.patch_embeddings.projection.weight,
            np.asarray(params["embed"]["w"]).reshape(p, p, c, d).transpose(3, 2, 0, 1))
        put(embeddings.patch_embeddings.projection.bias, params["embed"]["b"])
        put(embeddings.cls_token, np.asarray(params["cls"]).reshape(1, 1, d))
        put(embeddings.position_embeddings, np.asarray(params["pos"])[None])
        put(model.vit.layernorm.weight, params["ln_f"]["scale"])
        put(model.vit.layernorm.bias, params["ln_f"]["bias"])
    return model, paths


def nchw(images: np.ndarray) -> np.ndarray:
    """The tiny ViT's ``[N, H, W]`` (or ``[N, H, W, C]``) images as HF's ``pixel_values`` ``[N, C, H, W]``."""
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


def peft_model(setup: Setup, attention: str) -> tuple[torch.nn.Module, list[torch.nn.Parameter], list[str]]:
    """transformers' ViT with the setup's weights, wrapped by peft LoRA on the adapted modules; its LoRA
    parameters and their names, in the order of ``setup.lora`` (A then B per module)."""
    model = ViTForImageClassification(ViTConfig(**setup.hf_config, attn_implementation=attention))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in setup.hf_state.items()})
    model = get_peft_model(model.eval(), LoraConfig(r=setup.rank, lora_alpha=setup.alpha, lora_dropout=0.0,
                                                    target_modules=setup.modules))
    names = {id(p): n for n, p in model.named_parameters()}
    params = []
    for module in setup.modules:
        layer = model.base_model.model.get_submodule(module)
        params += [layer.lora_A["default"].weight, layer.lora_B["default"].weight]
    return model, params, [names[id(p)] for p in params]


def vmapped_grad(model: torch.nn.Module, lora_names: list[str]) -> Callable:
    """``grads(lora, x, y) -> {name: [M, ...]}``: torch.func's gradient of the cross-entropy with respect to
    the stacked LoRA factors ``lora`` (name -> ``[M, ...]``), vmapped over the devices' batches ``x``
    ``[M, B, C, H, W]``, ``y`` ``[M, B]``; the base weights are fixed."""
    base = {n: p.detach() for n, p in model.named_parameters() if n not in lora_names}

    def loss(lora, x, y):
        return F.cross_entropy(functional_call(model, (base, lora), (), {"pixel_values": x}).logits, y)

    return vmap(grad(loss))


# --- the torch variants -------------------------------------------------------------------------------------

class Data(NamedTuple):
    """The training pool and each device's rows of it, as torch tensors."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    n: torch.Tensor

    @classmethod
    def of(cls, setup: Setup) -> Data:
        """The setup's pool and rows (labels and rows as int64, as torch indexes with)."""
        return cls(torch.from_numpy(setup.x), torch.from_numpy(setup.y).long(), torch.from_numpy(setup.index).long(),
                   torch.from_numpy(setup.n).long())


def stacks_of(setup: Setup) -> list[torch.Tensor]:
    """The stacked adapters ``[M, ...]`` (fresh copies), in ``setup.lora``'s order."""
    return [torch.from_numpy(a.copy()) for a in setup.lora]


def mix(stacks: list[torch.Tensor], w: torch.Tensor) -> None:
    """Every device's adapter becomes its W-weighted average of all the adapters (in place)."""
    with torch.no_grad():
        for s in stacks:
            s.copy_((w @ s.reshape(len(w), -1)).reshape(s.shape))


class PeftClients:
    """Local training of some devices one after another on one peft model: per device its adapter (a row of
    the shared stacks) and its Adam state are swapped in, E steps of torch.optim.Adam run, the trained
    adapter is written back to its row."""

    def __init__(self, setup: Setup, devices: list[int], compiled: bool):
        model, self.params, _ = peft_model(setup, "sdpa")
        self.forward = torch.compile(model) if compiled else model
        self.optimizer = torch.optim.Adam(self.params, lr=setup.lr, betas=(ADAM_B1, ADAM_B2), eps=ADAM_EPS)
        self.states = {i: [{"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                            "exp_avg_sq": torch.zeros_like(p)} for p in self.params] for i in devices}
        self.data = Data.of(setup)
        self.generator = torch.Generator().manual_seed(devices[0])

    def train(self, stacks: list[torch.Tensor]) -> None:
        """E local steps for each of this object's devices, reading and writing their rows of ``stacks``."""
        data = self.data
        for i, states in self.states.items():
            with torch.no_grad():
                for p, s in zip(self.params, stacks):
                    p.copy_(s[i])
            for p, state in zip(self.params, states):
                self.optimizer.state[p] = state
            n = int(data.n[i])
            for _ in range(LOCAL_STEPS):
                rows = data.index[i, torch.randint(n, (BATCH,), generator=self.generator)]
                loss = F.cross_entropy(self.forward(pixel_values=data.x[rows]).logits, data.y[rows])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            with torch.no_grad():
                for p, s in zip(self.params, stacks):
                    s[i].copy_(p)


class VmapClients:
    """Local training of every device at once: torch.func.vmap of the gradient over the stacked adapters,
    Adam (optax.adam's arithmetic) as tensor ops on the stacks."""

    def __init__(self, setup: Setup, stacks: list[torch.Tensor]):
        model, _, self.names = peft_model(setup, "eager")
        self.grads = vmapped_grad(model, self.names)
        self.stacks, self.lr, self.count = stacks, setup.lr, 0
        self.mu = [torch.zeros_like(s) for s in stacks]
        self.nu = [torch.zeros_like(s) for s in stacks]
        self.data = Data.of(setup)
        self.generator = torch.Generator().manual_seed(0)

    def train(self) -> None:
        """E local steps of every device, updating the stacks in place."""
        data, m = self.data, len(self.data.n)
        for _ in range(LOCAL_STEPS):
            draw = (torch.rand((m, BATCH), generator=self.generator) * data.n[:, None]).long()
            rows = torch.gather(data.index, 1, draw)
            grads = self.grads(dict(zip(self.names, self.stacks)), data.x[rows], data.y[rows])
            self.count += 1
            c1, c2 = 1 - ADAM_B1 ** self.count, 1 - ADAM_B2 ** self.count
            with torch.no_grad():
                for name, p, mu, nu in zip(self.names, self.stacks, self.mu, self.nu):
                    g = grads[name]
                    mu.mul_(ADAM_B1).add_(g, alpha=1 - ADAM_B1)
                    nu.mul_(ADAM_B2).addcmul_(g, g, value=1 - ADAM_B2)
                    p.addcdiv_(mu, (nu / c2).sqrt_().add_(ADAM_EPS), value=-self.lr / c1)


def worker(conn, setup_path: str, devices: list[int], stacks: list[torch.Tensor], compiled: bool) -> None:
    """A worker process of one thread: train its devices' rows of the shared stacks whenever told to."""
    torch.set_num_threads(1)
    clients = PeftClients(load_setup(Path(setup_path)), devices, compiled)
    conn.send("ready")
    while conn.recv():
        clients.train(stacks)
        conn.send("done")


def busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux's /proc/stat; None elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    return sum(fields[i] for i in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")  # user, nice, system, irq, softirq


def time_rounds(one_round: Callable[[int], None], rounds: int) -> dict:
    """Round 0 (the warm-up, any compilation included) then ``rounds`` more: the warm-up's seconds, the
    median round's, and how many cores the machine kept busy over the timed rounds (ours, on a quiet one)."""
    times = []
    for r in range(rounds + 1):
        if r == 1:
            busy = busy_seconds()
        t = time.perf_counter()
        one_round(r)
        times.append(time.perf_counter() - t)
    cores = None if busy is None else (busy_seconds() - busy) / sum(times[1:])
    return {"warmup_s": times[0], "round_s": statistics.median(times[1:]), "cores_busy": cores}


def torch_case(variant: str, setup_path: Path, rounds: int) -> dict:
    """Time one torch variant (in this process, which it owns)."""
    setup = load_setup(setup_path)
    torch.set_num_threads(2)
    w = torch.from_numpy(setup.w)
    stacks = stacks_of(setup)
    if variant == "torch-vmap":
        clients = VmapClients(setup, stacks)
        return time_rounds(lambda r: (clients.train(), mix(stacks, w)), rounds)
    compiled = "compile" in variant
    if not variant.endswith("2workers"):
        clients = PeftClients(setup, list(range(len(w))), compiled)
        return time_rounds(lambda r: (clients.train(stacks), mix(stacks, w)), rounds)
    for s in stacks:
        s.share_memory_()
    context = torch.multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for half in np.array_split(np.arange(len(w)), 2):
        parent, child = context.Pipe()
        proc = context.Process(target=worker, args=(child, str(setup_path), half.tolist(), stacks, compiled),
                               daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    for p in pipes:
        p.recv()

    def one_round(r: int) -> None:
        for p in pipes:
            p.send(True)
        for p in pipes:
            p.recv()
        mix(stacks, w)

    result = time_rounds(one_round, rounds)
    for p, proc in zip(pipes, procs):
        p.send(False)
        proc.join()
    return result


# --- jaxdfl ---------------------------------------------------------------------------------------------------

def jaxdfl_case(devices: int, rounds: int) -> dict:
    """Time jaxdfl's round program (in this process, whose environment the variant set)."""
    import jax

    from jaxdfl import build_simulation, load_config

    sim = build_simulation(load_config(None, config_overrides(devices)))
    state = [sim.init_fn(jax.random.key(0))]
    inputs = [sim.inputs(r, r + 1) for r in range(rounds + 1)]  # the topology's W, drawn before the clock

    def one_round(r: int) -> None:
        state[0], metrics = sim.run_rounds(state[0], inputs[r])
        jax.block_until_ready((state[0], metrics))

    return time_rounds(one_round, rounds) | {"jax_devices": sim.mesh.size}


# --- the profile: one gradient step, in pieces ------------------------------------------------------------------

def median_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def profile_jax(devices: int) -> dict:
    """Seconds of one LoRA gradient of every device's first batch of 8 (no optimizer, no mixing) in XLA:
    vmapped over the devices as in jaxdfl's round, and as one model on all M·8 examples in one batch."""
    import jax

    from jaxdfl import build_simulation, load_config
    from jaxdfl.core import AdapterState, adapter_hook

    sim = build_simulation(load_config(None, config_overrides(devices)))
    adapter = sim.init_fn(jax.random.key(0)).adapter.params
    rows = sim.device.index[:, :BATCH]
    x, y = sim.device.x[rows], sim.device.y[rows]

    def loss(params, xb, yb):
        return sim.objective.loss(sim.base, xb, yb, adapter_hook(sim.method, AdapterState(params)))

    vmapped, one = jax.jit(jax.vmap(jax.grad(loss))), jax.jit(jax.grad(loss))
    first, flat = jax.tree.map(lambda a: a[0], adapter), (x.reshape(-1, *x.shape[2:]), y.reshape(-1))
    return {"vmapped_s": median_seconds(lambda: jax.block_until_ready(vmapped(adapter, x, y))),
            "one_batch_s": median_seconds(lambda: jax.block_until_ready(one(first, *flat)))}


def profile_torch(setup_path: Path) -> dict:
    """The same two gradients in torch, 2 threads: torch.func.vmap over the devices, and the peft model on
    all M·8 examples in one batch."""
    setup = load_setup(setup_path)
    torch.set_num_threads(2)
    data = Data.of(setup)
    rows = data.index[:, :BATCH]
    x, y = data.x[rows], data.y[rows]
    model, _, _ = peft_model(setup, "sdpa")

    def one() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(pixel_values=x.flatten(0, 1)).logits, y.flatten()).backward()

    vmodel, _, names = peft_model(setup, "eager")
    vmapped, lora = vmapped_grad(vmodel, names), dict(zip(names, stacks_of(setup)))
    return {"vmapped_s": median_seconds(lambda: vmapped(lora, x, y)), "one_batch_s": median_seconds(one)}


# --- the parent: setup, checks, the table -------------------------------------------------------------------

def prepare(devices: int) -> tuple[Setup, object]:
    """jaxdfl's simulation at this work, and the :class:`Setup` the torch variants start from."""
    import jax

    from jaxdfl import build_simulation, load_config

    sim = build_simulation(load_config(None, config_overrides(devices)))
    hf, paths = tiny_vit_to_hf(sim.base, sim.model.spec)
    adapter = sim.init_fn(jax.random.key(0)).adapter.params
    layers = sorted(sim.layers)
    lora = [np.asarray(adapter[name][f]) for name in layers for f in ("a", "b")]
    cfg = sim.config
    setup = Setup(hf_config(sim.model.spec), {k: v.numpy() for k, v in hf.state_dict().items()},
                  [paths[name] for name in layers], lora, nchw(np.asarray(sim.device.x)), np.asarray(sim.device.y),
                  np.asarray(sim.device.index), np.asarray(sim.device.n), np.asarray(sim.topology.mixing(0)),
                  cfg.method.rank, cfg.method.alpha, cfg.optimizer.learning_rate)
    return setup, sim


def check_parity(setup: Setup, sim) -> dict:
    """The torch side against jaxdfl on devices 0 and 1's first batch: base logits, then with adapters whose
    B is nonzero the logits, loss and LoRA gradients (peft model; torch.func vmap). Raises if any differ."""
    import jax
    import jax.numpy as jnp

    from jaxdfl.core import AdapterState, adapter_hook
    from jaxdfl.models import vit

    spec = sim.model.spec
    roundtrip = vit.params_from_hf(setup.hf_state, vit.ViTSpec(
        spec.image_size, spec.patch, spec.channels, spec.dim, spec.depth, spec.heads, spec.mlp_dim, spec.num_classes,
        layer_norm_eps=1e-6))
    if not all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), roundtrip, sim.base))):
        raise SystemExit("tiny_vit_to_hf is not the inverse of jaxdfl.models.vit.params_from_hf")

    layers = sorted(sim.layers)
    adapter = jax.tree.map(lambda a: a[:2], sim.init_fn(jax.random.key(0)).adapter.params)
    keys = iter(jax.random.split(jax.random.key(1), len(layers)))
    adapter = {k: v | {"b": 0.1 * jax.random.normal(next(keys), v["b"].shape)} for k, v in adapter.items()}
    factors = [np.array(adapter[name][f]) for name in layers for f in ("a", "b")]  # setup.lora's order, [2, ...]
    rows = np.asarray(sim.device.index)[:2, :BATCH]
    x, y = np.asarray(sim.device.x)[rows], np.asarray(sim.device.y)[rows]  # [2, B, ...], [2, B]

    def jax_loss(params, xb, yb):
        return sim.objective.loss(sim.base, xb, yb, adapter_hook(sim.method, AdapterState(params)))

    jax_logits = sim.objective.scores(sim.base, x[0], adapter_hook(
        sim.method, AdapterState(jax.tree.map(lambda a: a[0], adapter))))
    jax_losses, jax_grads = jax.vmap(jax.value_and_grad(jax_loss))(adapter, x, y)
    jax_grads = [np.asarray(jax_grads[name][f]) for name in layers for f in ("a", "b")]

    def err(ours, ref) -> float:
        return float(np.max(np.abs(np.asarray(ours) - np.asarray(ref))))

    def rel(grads: list, i: int) -> float:  # device i's gradients against jaxdfl's, relative to the largest
        return max(err(g, ref[i]) / float(np.abs(ref[i]).max()) for g, ref in zip(grads, jax_grads))

    model, params, _ = peft_model(setup, "sdpa")
    pixels, labels = torch.from_numpy(setup.x[rows]), torch.from_numpy(y).long()  # [2, B, C, H, W], [2, B]
    with torch.no_grad():
        base = model(pixel_values=pixels[0]).logits  # B = 0 at init: the base model's logits
        for p, value in zip(params, factors):
            p.copy_(torch.from_numpy(value[0]))
    logits = model(pixel_values=pixels[0]).logits
    loss = F.cross_entropy(logits, labels[0])
    loss.backward()
    vmodel, _, names = peft_model(setup, "eager")
    vgrads = vmapped_grad(vmodel, names)({n: torch.from_numpy(f) for n, f in zip(names, factors)}, pixels, labels)
    result = {"base_logits_abs": err(base, sim.model.apply(sim.base, x[0])),
              "lora_logits_abs": err(logits.detach(), jax_logits), "lora_loss_abs": err(loss.item(), jax_losses[0]),
              "peft_grads_rel": rel([p.grad.numpy() for p in params], 0),
              "vmap_grads_rel": max(rel([vgrads[n][i].numpy() for n in names], i) for i in range(2))}
    bad = {k: v for k, v in result.items() if v > (1e-5 if k.endswith("abs") else 1e-4)}
    if bad:
        raise SystemExit(f"the torch side does not compute what jaxdfl computes: {bad}")
    return result


def run_case(case: str, devices: int, setup_path: Path, rounds: int, max_other: float, tries: int = 3) -> dict:
    """One case in a fresh process with its environment: its JSON result line, and ``other_cores``, the cores
    that other processes kept busy meanwhile (on average; 0 on a quiet machine). Run again, a minute later,
    while that is above ``max_other``, at most ``tries`` times in all."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS", *MALLOC)}
    for attempt in range(tries):
        ours, busy, t = resource.getrusage(resource.RUSAGE_CHILDREN), busy_seconds(), time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--case", case, "--setup", str(setup_path),
                               "--devices", str(devices), "--rounds", str(rounds)],
                              env=env | VARIANTS.get(case, {}), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{case} at {devices} devices failed:\n{done.stderr[-3000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = after.ru_utime + after.ru_stime - ours.ru_utime - ours.ru_stime
        other = None if busy is None else (busy_seconds() - busy - used) / (time.perf_counter() - t)
        if other is None or other <= max_other or attempt == tries - 1:
            return json.loads(done.stdout.strip().splitlines()[-1]) | {"other_cores": other}
        print(f"  ({case}: other processes kept {other:.2f} cores busy; again in a minute)", flush=True)
        time.sleep(60)


def with_ratios(rows: list[dict]) -> list[dict]:
    """The rows with how many times faster than each jaxdfl is, at the same device count: its default
    setting (``jaxdfl_x``), its best one (``best_jaxdfl_x``), and the target (``target_x``)."""
    done = []
    for row in rows:
        same = [r for r in rows if r["devices"] == row["devices"] and r["variant"].startswith("jaxdfl")]
        default = next((r for r in same if r["variant"] == "jaxdfl"), None)
        best = min(same, key=lambda r: r["round_s"], default=None)
        done.append(row | {"jaxdfl_x": row["round_s"] / default["round_s"] if default else None,
                           "best_jaxdfl_x": row["round_s"] / best["round_s"] if best else None,
                           "target_x": TARGETS.get(row["variant"])})
    return done


def main():
    """The parent (checks, then every variant in its own process, the table), or one ``--case``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant, after one warm-up")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 devices, 2 rounds, " + ", ".join(QUICK))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all (--quick: fewer)")
    parser.add_argument("--max-other", type=float, default=0.25,
                        help="rerun a variant (up to twice) while other processes kept more cores than this busy")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_peer.csv"),
                        help="the table; the profile goes beside it (_profile.csv)")
    parser.add_argument("--case", choices=[*VARIANTS, *PROFILES], help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.case:
        result = (jaxdfl_case(args.devices[0], args.rounds) if args.case.startswith("jaxdfl") else
                  profile_jax(args.devices[0]) if args.case == "profile-jax" else
                  profile_torch(Path(args.setup)) if args.case == "profile-torch" else
                  torch_case(args.case, Path(args.setup), args.rounds))
        print(json.dumps(result))
        return
    if args.quick:
        args.devices, args.rounds = [8], 2
    args.variants = args.variants or (QUICK if args.quick else list(VARIANTS))

    from bench_engine import matmul_peak, round_flops
    from common import write_rows_csv

    peak = matmul_peak() / 1e9
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, float32 matmul peak "
          f"{peak:.1f} GFLOP/s (XLA); torch {torch.__version__}, transformers "
          f"{sys.modules['transformers'].__version__}, peft {sys.modules['peft'].__version__}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, profile = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for devices in args.devices:
            setup, sim = prepare(devices)
            parity = check_parity(setup, sim)
            print(f"{devices} devices, parity with jaxdfl: " + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()),
                  flush=True)
            gflop = round_flops(sim) / 1e9
            path = Path(tmp) / f"setup_{devices}.npz"
            save_setup(setup, path)
            for variant in args.variants:
                row = {"variant": variant, "devices": devices}
                row |= run_case(variant, devices, path, args.rounds, args.max_other)
                row |= {"device_steps_per_s": devices * LOCAL_STEPS / row["round_s"], "gflop_per_round": gflop,
                        "gflops": gflop / row["round_s"], "pct_of_peak": 100 * gflop / row["round_s"] / peak}
                rows.append(row)
                print(f"  {variant:<22} {row['round_s']:8.3f} s/round  {row['device_steps_per_s']:7.0f} "
                      f"device-steps/s  (warm-up {row['warmup_s']:.1f} s; other processes kept "
                      f"{row['other_cores'] or 0:.2f} cores busy)", flush=True)
                write_rows_csv(out, with_ratios(rows))  # as they come: an interrupted run keeps what it measured
            if not args.quick:
                for case in PROFILES:
                    profile.append({"devices": devices, "framework": case.removeprefix("profile-")}
                                   | run_case(case, devices, path, args.rounds, args.max_other))
                    print(f"  {case}: one gradient of every device's batch, vmapped {profile[-1]['vmapped_s']:.3f} s,"
                          f" as one batch of {devices * BATCH} {profile[-1]['one_batch_s']:.3f} s", flush=True)
    rows = with_ratios(rows)
    print(f"\n{'variant':<22} {'devices':>7} {'s/round':>8} {'dev-steps/s':>11} {'GFLOP/s':>7} {'cores':>5} "
          f"{'jaxdfl ×':>8} {'best ×':>6} {'target':>6}")
    for r in rows:
        ratios = [f"{v:.2f}" if v is not None else "-" for v in (r["jaxdfl_x"], r["best_jaxdfl_x"], r["target_x"])]
        print(f"{r['variant']:<22} {r['devices']:>7} {r['round_s']:>8.3f} {r['device_steps_per_s']:>11.0f} "
              f"{r['gflops']:>7.1f} {r['cores_busy'] or 0:>5.2f} {ratios[0]:>8} {ratios[1]:>6} {ratios[2]:>6}")
    if profile:
        write_rows_csv(out.with_name(f"{out.stem}_profile.csv"), profile)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
