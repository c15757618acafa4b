"""Reading pretrained weights from local disk: Hugging Face safetensors directories and GGUF files.

Both readers return host (numpy) arrays; torch's ``[out, in]`` layout is converted to ours by the model
modules' ``params_from_hf``, in one place per architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxdfl.errors import ModelError
from jaxdfl.models import decoder


def read_hf_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise ModelError(f"{directory}: no config.json (expected a Hugging Face model directory)")
    return json.loads(path.read_text())


def read_safetensors_dir(directory: Path, dtype=np.float32) -> dict[str, np.ndarray]:
    """Every tensor of ``model.safetensors``, or of the shards listed in ``model.safetensors.index.json``,
    cast to ``dtype`` (bfloat16 checkpoints read through ml_dtypes)."""
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise ModelError(f"{directory}: neither model.safetensors nor model.safetensors.index.json")
    tensors = {}
    for shard in shards:
        path = directory / shard
        if not path.is_file():
            raise ModelError(f"{path}: shard listed in the index is missing")
        with safe_open(str(path), framework="flax") as f:  # numpy has no bfloat16; jax reads it
            for name in f.keys():
                tensors[name] = np.asarray(f.get_tensor(name), dtype=dtype)
    return tensors


def _unpermute_rope(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo the row permutation llama.cpp's converter applies to Q and K ``[heads·head_dim, in]``.

    GGML rotates adjacent pairs (2j, 2j+1); Hugging Face rotates halves (j, j + head_dim/2). The converter
    reorders each head's rows from halves to interleaved pairs; this puts them back."""
    out = w.shape[0]
    return w.reshape(heads, out // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: Path, dtype=np.float32) -> tuple[decoder.DecoderSpec, dict]:
    """A Llama-architecture GGUF file → ``(spec, params)`` in our layout, every tensor dequantised."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise ModelError(f"{path}: GGUF architecture {arch!r} is not supported (only llama)")

    def meta(key, default=None):
        field = reader.fields.get(f"llama.{key}")
        if field is None and default is None:
            raise ModelError(f"{path}: GGUF lacks metadata llama.{key}")
        return default if field is None else field.contents()

    if "llama.rope.scaling.type" in reader.fields:
        raise ModelError(f"{path}: RoPE scaling ({meta('rope.scaling.type')}) is not supported (only plain RoPE)")

    raw = {t.name: t for t in reader.tensors}
    heads, kv = meta("attention.head_count"), meta("attention.head_count_kv")
    hidden = meta("embedding_length")
    vocab = meta("vocab_size") if "llama.vocab_size" in reader.fields else len(
        reader.fields["tokenizer.ggml.tokens"].data)
    spec = decoder.DecoderSpec(
        vocab_size=vocab, hidden_size=hidden, num_layers=meta("block_count"), num_heads=heads,
        num_kv_heads=kv, head_dim=meta("attention.key_length", hidden // heads),
        intermediate_size=meta("feed_forward_length"), rms_eps=float(meta("attention.layer_norm_rms_epsilon")),
        rope_theta=float(meta("rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in raw, family="llama")

    def get(name: str) -> np.ndarray:  # torch layout [out, in]
        if name not in raw:
            raise ModelError(f"{path}: GGUF lacks tensor {name!r}")
        t = raw[name]
        return np.asarray(dequantize(t.data, t.tensor_type), dtype=dtype).reshape(
            tuple(int(d) for d in reversed(t.shape)))

    def lin(name: str, heads_: int | None = None) -> dict:
        w = get(name)
        return {"w": (w if heads_ is None else _unpermute_rope(w, heads_)).T}

    params = {"embed": {"table": get("token_embd.weight")}, "ln_f": {"scale": get("output_norm.weight")}}
    for i in range(spec.num_layers):
        b = f"blk.{i}"
        params |= {f"block{i}_q": lin(f"{b}.attn_q.weight", heads), f"block{i}_k": lin(f"{b}.attn_k.weight", kv),
                   f"block{i}_v": lin(f"{b}.attn_v.weight"), f"block{i}_o": lin(f"{b}.attn_output.weight"),
                   f"block{i}_gate": lin(f"{b}.ffn_gate.weight"), f"block{i}_up": lin(f"{b}.ffn_up.weight"),
                   f"block{i}_down": lin(f"{b}.ffn_down.weight"),
                   f"block{i}_ln1": {"scale": get(f"{b}.attn_norm.weight")},
                   f"block{i}_ln2": {"scale": get(f"{b}.ffn_norm.weight")}}
    if not spec.tie_embeddings:
        params["head"] = lin("output.weight")
    return spec, params


def read_gguf_tokenizer(path: Path):
    """The byte-level BPE tokenizer stored in a GGUF file (``tokenizer.ggml.*``), with its chat template, built
    with the ``tokenizers`` library (transformers' own GGUF reader needs torch). None when the file holds no
    tokenizer. Control and user-defined tokens (``<|im_start|>``...) are special tokens, never split."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fields = GGUFReader(str(path)).fields
    if "tokenizer.ggml.tokens" not in fields:
        return None
    kind = fields["tokenizer.ggml.model"].contents()
    if kind != "gpt2":
        raise ModelError(f"{path}: GGUF tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    types = fields["tokenizer.ggml.token_type"].contents()
    bpe = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False, byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types)
                            if k in (3, 4)])  # GGML token types: 3 control, 4 user-defined

    def special(name):
        key = f"tokenizer.ggml.{name}_token_id"
        return tokens[fields[key].contents()] if key in fields else None

    template = fields["tokenizer.chat_template"].contents() if "tokenizer.chat_template" in fields else None
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=special("bos"), eos_token=special("eos"),
                                   unk_token=special("unknown"), pad_token=special("padding"), chat_template=template)
