"""Text runs end to end on a tiny random Llama that uses SmolLM2's real tokenizer and chat template.

The decoder is tiny (hidden 32, 2 layers) so a whole simulation compiles and runs in seconds; the tokenizer,
chat template, packing, engine, evaluation and exact match are the real ones."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdfl
from jaxdfl.data.text_encoding import prompt_ids, reply_ids
from jaxdfl.models import decoder, from_pretrained, registry

torch = pytest.importorskip("torch", reason="the tiny checkpoint is written with transformers (test extra)")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    path = registry.locate("smollm2-135m-instruct") or registry.pull("smollm2-135m-instruct")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    cfg = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def text_config(checkpoint, **method):
    return {"seed": 0, "rounds": 2, "num_devices": 4, "local_steps": 2, "batch_size": 4, "eval_every": 1,
            "checkpoint_every": 0,
            "model": {"name": "pretrained", "checkpoint": str(checkpoint), "adapt": ["q", "v"]},
            "data": {"name": "text_tasks", "tasks": ["reading", "commonsense"], "train_per_task": 8,
                     "test_per_task": 6},
            "method": {"name": "lora", "rank": 2, **method}, "topology": {"name": "ring"},
            "optimizer": {"name": "adam", "learning_rate": 0.01}}


def naive_base_accuracy(params, spec, tokenizer, examples) -> float:
    """Each choice as its own sequence through decoder.apply; the argmax of summed reply log-probs."""
    right = 0
    for ex in examples:
        p = prompt_ids(tokenizer, ex.prompt)
        scores = []
        for choice in ex.choices:
            r = reply_ids(tokenizer, choice)
            logp = jax.nn.log_softmax(decoder.apply(params, jnp.array([p + r]), spec)[0], -1)
            scores.append(sum(float(logp[len(p) - 1 + j, t]) for j, t in enumerate(r)))
        right += int(np.argmax(scores) == ex.label)
    return right / len(examples)


def test_text_run_scores_like_separate_sequences_and_learns(tiny_llama_dir, tmp_path):
    summary, state = jaxdfl.run(text_config(tiny_llama_dir), out=tmp_path / "run", progress=False)
    model, params = from_pretrained(tiny_llama_dir)
    sim = jaxdfl.build_simulation(jaxdfl.load_config(text_config(tiny_llama_dir)))
    for t, task in enumerate(sim.data.task_names):  # packed multiple-choice scoring == one sequence per choice
        naive = naive_base_accuracy(params, model.spec, model.tokenizer, sim.data.test_examples[t])
        assert summary["initial_per_task_accuracy"][task] == pytest.approx(naive)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert set(summary["exact_match"]) == set(summary["initial_exact_match"]) == {"reading", "commonsense"}
    assert all(0.0 <= v <= 1.0 for v in summary["exact_match"].values())
    assert summary["state_bytes_per_device"] < summary["base_bytes"]


def test_replicas_generate_each_seeds_answers_and_the_base_once(tiny_llama_dir, tmp_path, monkeypatch):
    """Each replica's exact match is its plain run's; the base's is generated once (one base, one test set)."""
    from jaxdfl.sim import text_eval

    generated, exact_match_by_task = [], text_eval.exact_match_by_task
    monkeypatch.setattr(text_eval, "exact_match_by_task",
                        lambda sim, state, *a: generated.append(state is None) or exact_match_by_task(sim, state, *a))
    cfg = text_config(tiny_llama_dir) | {"rounds": 1}
    together, _ = jaxdfl.run(cfg | {"replicas": 2}, out=tmp_path / "together", progress=False)
    assert sorted(generated) == [False, False, True]  # each seed's adapted models, the base once
    for r, seed in enumerate(together["seeds"]):
        alone, _ = jaxdfl.run(cfg | {"seed": seed}, out=tmp_path / f"seed{seed}", progress=False)
        for key in ("exact_match", "initial_exact_match"):
            assert together["replicas"][r][key] == pytest.approx(alone[key]), key


def test_proposed_method_runs_on_text_with_clusters(tiny_llama_dir, tmp_path):
    cfg = text_config(tiny_llama_dir, name="so_lora", density=0.2, moe_top_k=2, calib_examples=4)
    cfg["topology"] = {"name": "clusters", "exchange_every": 1}
    cfg["network"] = {"name": "d2d"}
    summary, _ = jaxdfl.run(cfg, out=tmp_path / "run", progress=False)
    assert "exact_match" in summary and summary["num_clusters"] >= 1
    assert 0.0 <= summary["final_accuracy"] <= 1.0


def test_text_data_needs_a_decoder():
    cfg = text_config("x")
    cfg["model"] = {"name": "tiny_vit"}
    with pytest.raises(jaxdfl.ConfigError, match="needs a tokenizer|needs a decoder"):
        jaxdfl.build_simulation(jaxdfl.load_config(cfg))


def test_benchmark_files_run_end_to_end(tiny_llama_dir, tmp_path):
    """data.name: text_files on the benchmark fixtures (published formats), through the whole run."""
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures" / "text"
    files = [str(fixtures / "boolq" / "dev.jsonl"), str(fixtures / "arc" / "ARC-Easy-Test.jsonl")]
    cfg = text_config(tiny_llama_dir)
    cfg["rounds"], cfg["num_devices"] = 1, 2
    cfg["data"] = {"name": "text_files", "tasks": ["boolq", "arc"], "train_files": files, "test_files": files}
    summary, _ = jaxdfl.run(cfg, out=tmp_path / "run", progress=False)
    assert set(summary["per_task_accuracy"]) == {"boolq", "arc"}
    assert set(summary["exact_match"]) == {"boolq", "arc"}
    missing = dict(cfg["data"], test_files=[files[0], str(tmp_path / "nowhere.jsonl")])
    with pytest.raises(jaxdfl.ConfigError, match="nowhere.jsonl"):
        jaxdfl.build_simulation(jaxdfl.load_config(dict(cfg, data=missing)))


def test_a_fedbuff_run_exports_the_servers_model_and_peft_gives_its_logits(tiny_llama_dir, tmp_path):
    """Under FedBuff a device mid-job holds a stale copy; ``jaxdfl export`` writes the server's model (the
    buffer's), and PEFT over transformers' model gives jaxdfl's logits with it."""
    peft = pytest.importorskip("peft", reason="the export is checked against PEFT (test extra)")
    from jaxdfl.core import adapter_hook
    from jaxdfl.export import export_run

    cfg = text_config(tiny_llama_dir)
    cfg.update(rounds=3, checkpoint_every=3, topology={"name": "server"},
               stragglers={"spread": 0.8, "rule": "buffered", "buffer_size": 2})
    _, state = jaxdfl.run(cfg, out=tmp_path / "run", progress=False)
    server = state.buffer.global_params
    gap = [max(float(jnp.abs(x[d] - g).max()) for x, g in zip(jax.tree.leaves(state.adapter.params),
                                                                jax.tree.leaves(server))) for d in range(4)]
    stale = int(np.argmax(gap))
    assert gap[stale] > 1e-4, gap  # some device's copy is not the server's model: the export must choose

    out = export_run(tmp_path / "run", device=stale)
    model, params = from_pretrained(tiny_llama_dir)
    method = jaxdfl.build_simulation(jaxdfl.load_config(cfg)).method
    one = jax.tree.map(lambda x: x[stale], state.adapter)._replace(params=server)
    tokens = np.random.default_rng(0).integers(0, 1000, (2, 9))
    want = np.asarray(model.apply(params, jnp.asarray(tokens), hook=adapter_hook(method, one)))
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    adapted = peft.PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        got = adapted(torch.tensor(tokens)).logits.numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_exact_match_leaves_dropped_devices_out(tiny_llama_dir, monkeypatch):
    """A dropped device neither answers nor lends its expert to the generated answers, as in the
    multiple-choice evaluations."""
    from jaxdfl.sim import replicas, text_eval

    cfg = text_config(tiny_llama_dir, name="so_lora", density=0.2, moe_top_k=2, calib_examples=4)
    cfg |= {"num_devices": 4, "on_nonfinite": "drop_device", "topology": {"name": "full"}}
    sim = jaxdfl.build_simulation(jaxdfl.load_config(cfg))
    state = sim.init_fn(jax.random.key(0))
    first_reader = int(np.flatnonzero(sim.data.task_of_device == 0)[0])
    state = state._replace(alive=state.alive.at[first_reader].set(False))
    seen_w, answering = [], []
    expert_views = text_eval.expert_views
    monkeypatch.setattr(text_eval, "expert_views",
                        lambda e, w, s: seen_w.append(np.asarray(w)) or expert_views(e, w, s))
    monkeypatch.setattr(text_eval, "generate_answers",
                        lambda *a: answering.append(a[-1]) or [""] * len(a[3]))
    replicas._exact_match(sim, state, base={})
    w = seen_w[0]
    others = np.arange(4) != first_reader
    assert (w[others, first_reader] == 0).all() and np.allclose(w[others].sum(1), 1.0)
    (own, view), _ = answering
    assert not np.asarray(view.held)[first_reader]
    reader = int(np.flatnonzero((sim.data.task_of_device == 0) & others)[0])
    same = jax.tree.map(lambda a, b: np.array_equal(a, b[reader]), own, state.adapter)
    assert all(jax.tree.leaves(same))
