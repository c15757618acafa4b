"""Adapters leave the simulator: one device's adapter (or the global model's, under a server) from a run
folder, written in PEFT's LoRA format (``adapter_config.json`` + ``adapter_model.safetensors``) for the
Hugging Face model the run fine-tuned, loadable with ``peft.PeftModel.from_pretrained``.

Every method's adapter is a linear map added to each adapted layer, ``ΔW = dy/dx``, whatever its inner shape
(LoRA factors, a masked B under per-device static A, zero-padded ranks, a folded-in sum of products). The
export reads ΔW off the method's own ``delta`` (its value on the identity, so nothing is re-derived per
method) and factors it by SVD into ``B' A'`` of the layer's numerical rank, with PEFT's scale 1
(``lora_alpha = r``); the result is exact to float precision whenever the rank fits, which it does for every
low-rank method. For a method with a mixture of experts (``so_lora``, ``lori``) it is the device's own adapter,
not the mixture it infers with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.errors import ConfigError
from jaxdfl.federation.buffered import Buffer
from jaxdfl.models.decoder import DecoderSpec
from jaxdfl.models.registry import KNOWN
from jaxdfl.models.vit import hf_linear

PEFT_PREFIX = "base_model.model."


def hf_module(name: str, spec) -> str:
    """The Hugging Face module path of our adapted linear map ``name`` (``block3_q`` → ...)."""
    if name == "head":
        return "lm_head" if isinstance(spec, DecoderSpec) else "classifier"
    block, kind = name[len("block"):].split("_", 1)
    if isinstance(spec, DecoderSpec):
        where = "self_attn" if kind in ("q", "k", "v", "o") else "mlp"
        return f"model.layers.{block}.{where}.{kind}_proj"
    return hf_linear(kind, int(block))


def layer_updates(delta: Callable, layers: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """``{layer: ΔW [out, in]}`` (float64) from ``delta(name, x) -> dy`` of ONE device: dy on the rows of the
    identity. Layers the adapter leaves alone (delta None) are left out."""
    out = {}
    for name, (fan_in, _) in layers.items():
        dy = delta(name, jnp.eye(fan_in, dtype=jnp.float32))
        if dy is not None:
            out[name] = np.asarray(dy, np.float64).T
    return out


def low_rank(update: np.ndarray, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """``(A [r, in], B [out, r])`` with ``B A = update`` to float precision, r the numerical rank (singular
    values above ``rtol`` × the largest; at least 1)."""
    u, s, vt = np.linalg.svd(update, full_matrices=False)
    r = max(1, int(np.sum(s > rtol * (s[0] if s.size and s[0] > 0 else 1.0))))
    root = np.sqrt(s[:r])
    return root[:, None] * vt[:r], u[:, :r] * root[None, :]


def write_peft(updates: dict[str, np.ndarray], spec, out: str | Path, base_model: str = "") -> Path:
    """Write ``updates`` ``{layer: ΔW [out, in]}`` as a PEFT LoRA adapter under ``out``: one rank for all
    modules (the largest numerical rank; smaller ones padded with zero components) and ``lora_alpha = r``."""
    from safetensors.numpy import save_file

    factors = {name: low_rank(w) for name, w in updates.items()}
    r = max(a.shape[0] for a, _ in factors.values())
    tensors = {}
    for name, (a, b) in factors.items():
        pad = r - a.shape[0]
        module = PEFT_PREFIX + hf_module(name, spec)
        tensors[f"{module}.lora_A.weight"] = np.pad(a, ((0, pad), (0, 0))).astype(np.float32)
        tensors[f"{module}.lora_B.weight"] = np.pad(b, ((0, 0), (0, pad))).astype(np.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM" if isinstance(spec, DecoderSpec) else None,
              "base_model_name_or_path": base_model, "r": r, "lora_alpha": r, "lora_dropout": 0.0, "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True,
              "target_modules": sorted({hf_module(n, spec) for n in factors})}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def export_run(run_dir: str | Path, out: str | Path | None = None, device: int = 0, replica: int = 0,
               status: Callable[[str], None] = lambda message: None) -> Path:
    """Export device ``device`` (of replica ``replica``) from the newest checkpoint of the run in ``run_dir``
    to ``out`` (default ``run_dir/peft_device{device}``). Under a server every device holds the global model."""
    from jaxdfl.config import load_config
    from jaxdfl.sim.checkpoint import Checkpointer
    from jaxdfl.sim.replicas import build_runner

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    if cfg.model.name != "pretrained":
        raise ConfigError(f"{run_dir}: its model is the digits {cfg.model.name!r} that jaxdfl ships, which has no "
                          "Hugging Face counterpart; export needs a run of model.name: pretrained")
    if not 0 <= device < cfg.num_devices or not 0 <= replica < cfg.replicas:
        raise ConfigError(f"--device must be in [0, {cfg.num_devices}) and --replica in [0, {cfg.replicas})")
    runner = build_runner(cfg, status)
    status("jaxdfl: restoring the newest checkpoint…")
    checkpointer = Checkpointer(run_dir / "checkpoints")
    restored = checkpointer.restore_newest(runner.init_state())
    checkpointer.close()
    if restored is None:
        raise ConfigError(f"{run_dir}: no checkpoint restores")
    done, state = restored
    adapter = state.adapter if cfg.replicas == 1 else jax.tree.map(lambda x: x[replica], state.adapter)
    one = jax.tree.map(lambda x: x[device], adapter)
    if isinstance(state.buffer, Buffer):  # FedBuff: devices hold stale copies; the server's model is the buffer's
        buffer = state.buffer if cfg.replicas == 1 else jax.tree.map(lambda x: x[replica], state.buffer)
        one = one._replace(params=buffer.global_params)
    sim = runner.sim
    updates = layer_updates(lambda name, x: sim.method.delta(one, name, x), sim.layers)
    target = Path(out) if out is not None else run_dir / f"peft_device{device}"
    status(f"jaxdfl: writing device {device}'s adapter after round {done} to {target}…")
    known = KNOWN.get(cfg.model.checkpoint)  # a packaged model: name its Hub original as the base
    return write_peft(updates, sim.model.spec, target, known.hub_id if known else cfg.model.checkpoint)
