"""SmolLM2-135M-Instruct's shape with random weights, for speed and memory measurements where its real weights
cannot go (the GPU machine is offline, and the 94 MiB GGUF exceeds what one call carries there).

    python experiments/smollm2_shape.py tokenizer results/smollm2_shape   # here: config.json and the tokenizer (4 MB)
    python experiments/smollm2_shape.py weights results/smollm2_shape     # there: random float16 weights (270 MB)

The directory is then a Hugging Face Llama directory that ``model.checkpoint`` accepts: the same sizes, chat
template and tokenizer as SmolLM2-135M-Instruct, so the same sequences and the same FLOPs per step; what it
learns and its accuracies mean nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def write_tokenizer(directory: Path) -> None:
    """config.json (from the GGUF's sizes) and the tokenizer files with the chat template."""
    from jaxdfl.models import checkpoints, registry

    path = registry.locate("smollm2-135m-instruct") or registry.pull("smollm2-135m-instruct")
    spec, _ = checkpoints.read_gguf(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_type": spec.family, "vocab_size": spec.vocab_size, "hidden_size": spec.hidden_size,
              "num_hidden_layers": spec.num_layers, "num_attention_heads": spec.num_heads,
              "num_key_value_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
              "intermediate_size": spec.intermediate_size, "rms_norm_eps": spec.rms_eps,
              "rope_theta": spec.rope_theta, "tie_word_embeddings": spec.tie_embeddings, "hidden_act": "silu"}
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    checkpoints.read_gguf_tokenizer(path).save_pretrained(directory)


def write_weights(directory: Path, seed: int = 0) -> None:
    """model.safetensors: every tensor a Llama decoder of config.json's sizes needs, N(0, 0.02) (norms: ones),
    named and shaped as Hugging Face stores them (torch's [out, in])."""
    from safetensors.numpy import save_file

    from jaxdfl.export import hf_module
    from jaxdfl.models.decoder import DecoderSpec, linear_shapes

    spec = DecoderSpec.from_hf_config(json.loads((directory / "config.json").read_text()))
    d = spec.hidden_size
    shapes = {"model.embed_tokens.weight": (spec.vocab_size, d), "model.norm.weight": (d,)}
    for i in range(spec.num_layers):
        shapes |= {f"model.layers.{i}.{norm}.weight": (d,) for norm in ("input_layernorm", "post_attention_layernorm")}
    shapes |= {f"{hf_module(name, spec)}.weight": (fan_out, fan_in)
               for name, (fan_in, fan_out) in linear_shapes(spec).items() if name != "head" or not spec.tie_embeddings}
    rng = np.random.default_rng(seed)
    tensors = {name: (np.ones(shape) if len(shape) == 1 else 0.02 * rng.standard_normal(shape, np.float32))
               .astype(np.float16) for name, shape in shapes.items()}
    save_file(tensors, str(directory / "model.safetensors"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["tokenizer", "weights"])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    (write_tokenizer if args.part == "tokenizer" else write_weights)(args.directory)
    print(f"wrote {args.part} to {args.directory}")


if __name__ == "__main__":
    main()
