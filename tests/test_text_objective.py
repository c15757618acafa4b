"""The multiple-choice text objective on a tiny random decoder: packed scoring (one sequence per example, every
reply after the prompt) against naive per-choice sequences through ``decoder.apply``, the loss, and the
encoding of real tokenized examples into the packed ``[n, 4, L]`` layout."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.data import text_encoding
from jaxdfl.data.text_encoding import POSITIONS, PREDICTORS, SEGMENTS, TOKENS
from jaxdfl.data.text_example import TextExample
from jaxdfl.errors import ConfigError
from jaxdfl.models import decoder
from jaxdfl.sim.objective import choice_likelihood, choice_logprobs

SPEC = decoder.DecoderSpec(vocab_size=50, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4,
                           intermediate_size=24, rope_theta=100.0, qkv_bias=True, tie_embeddings=True)
TOL = 1e-4


@pytest.fixture(scope="module")
def params():
    """init_params' layout, every leaf redrawn with std 0.5 (init_params' 0.02 weights and unit norms give
    nearly uniform next-token distributions, under which a wrong predictor position could go unnoticed)."""
    base = decoder.init_params(jax.random.key(0), SPEC)
    leaves, tree = jax.tree.flatten(base)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)])


def lowrank_hook(args, name, h):
    return h @ args[name]["a"] @ args[name]["b"] if name in args else None


@pytest.fixture(scope="module")
def hook():
    k = jax.random.split(jax.random.key(2), 4)
    args = {"block1_v": {"a": jax.random.normal(k[0], (16, 2)), "b": jax.random.normal(k[1], (2, 8))},
            "head": {"a": jax.random.normal(k[2], (16, 2)), "b": jax.random.normal(k[3], (2, SPEC.vocab_size))}}
    return partial(lowrank_hook, args)


def naive_reply_logprobs(params, pairs, hook=None, width=32):
    """For each ``(prompt, reply)``: sum over reply tokens t of log_softmax(apply(prompt + reply))[t - 1, token_t],
    every pair its own (right-padded, causal) sequence, all in one ``decoder.apply`` call."""
    seqs = np.zeros((len(pairs), width), np.int32)
    for i, (p, r) in enumerate(pairs):
        seqs[i, : len(p) + len(r)] = p + r
    logp = np.asarray(jax.nn.log_softmax(decoder.apply(params, jnp.asarray(seqs), SPEC, hook), -1), np.float64)
    return np.array([sum(logp[i, len(p) - 1 + j, t] for j, t in enumerate(r)) for i, (p, r) in enumerate(pairs)])


def hand_pack(examples, width):
    """The packed ``[batch, 4, width]`` rows written out token by token (independently of text_encoding.pack)."""
    x = np.zeros((len(examples), 4, width), np.int32)
    for b, (prompt, replies) in enumerate(examples):
        col = 0
        for pos, tok in enumerate(prompt):
            x[b, :, col] = [tok, pos, 0, 0]
            col += 1
        for c, reply in enumerate(replies):
            for j, tok in enumerate(reply):
                predictor = len(prompt) - 1 if j == 0 else col - 1
                x[b, :, col] = [tok, len(prompt) + j, c + 1, predictor]
                col += 1
    return x


RNG = np.random.default_rng(0)


def ids(n):
    return RNG.integers(1, SPEC.vocab_size, n).tolist()


# prompts of 5, 2 and 7 tokens; 3, 2 (one absent choice) and 3 replies of 1 to 5 tokens
EXAMPLES = [(ids(5), [ids(3), ids(1), ids(2)]), (ids(2), [ids(4), ids(2)]), (ids(7), [ids(1), ids(1), ids(5)])]
WIDTH = max(len(p) + sum(map(len, rs)) for p, rs in EXAMPLES)  # 14
REPLY_TOKENS = max(sum(map(len, rs)) for _, rs in EXAMPLES)  # 7
NUM_CHOICES = 3
LABELS = np.array([2, 1, 0])


def naive_table(params, hook=None):
    """``[batch, NUM_CHOICES]`` naive summed log-probs (nan where a choice is absent) and token counts."""
    pairs = [(p, r) for p, rs in EXAMPLES for r in rs]
    flat = iter(naive_reply_logprobs(params, pairs, hook))
    table, count = np.full((len(EXAMPLES), NUM_CHOICES), np.nan), np.zeros((len(EXAMPLES), NUM_CHOICES))
    for b, (_, rs) in enumerate(EXAMPLES):
        for c, r in enumerate(rs):
            table[b, c], count[b, c] = next(flat), len(r)
    return table, count


def test_hand_packing_agrees_with_text_encoding_pack():
    x = hand_pack(EXAMPLES, WIDTH)
    for b, (p, rs) in enumerate(EXAMPLES):
        packed = text_encoding.pack(p, rs)
        np.testing.assert_array_equal(x[b, :, : packed.shape[1]], packed)
        assert not x[b, :, packed.shape[1]:].any()


@pytest.mark.parametrize("reply_tokens", [REPLY_TOKENS, WIDTH])  # the exact size, and a window past the end
@pytest.mark.parametrize("with_hook", [False, True])
def test_packed_reply_logprobs_equal_naive_sums(params, hook, reply_tokens, with_hook):
    h = hook if with_hook else None
    naive, count = naive_table(params, h)
    assert np.nanstd(naive) > 1.0  # the model is far from uniform: a misplaced predictor would show
    logp, got_count = choice_logprobs(SPEC, NUM_CHOICES, reply_tokens, params, jnp.asarray(hand_pack(EXAMPLES, WIDTH)),
                                      h)
    np.testing.assert_array_equal(np.asarray(got_count), count)
    present = count > 0
    np.testing.assert_allclose(np.asarray(logp)[present], naive[present], atol=TOL, rtol=0)
    np.testing.assert_array_equal(np.asarray(logp)[~present], 0.0)


def test_choice_likelihood_scores_and_loss(params, hook):
    objective = choice_likelihood(SPEC, NUM_CHOICES, REPLY_TOKENS)
    x = jnp.asarray(hand_pack(EXAMPLES, WIDTH))
    for h in (None, hook):
        naive, count = naive_table(params, h)
        scores = np.asarray(objective.scores(params, x, h))
        assert scores.shape == (len(EXAMPLES), NUM_CHOICES)
        assert scores[1, 2] == -np.inf  # example 1 has two choices: its padding choice never wins
        present = count > 0
        assert np.isfinite(scores[present]).all()
        np.testing.assert_allclose(scores[present], naive[present], atol=TOL, rtol=0)
        rows = np.arange(len(EXAMPLES))
        expected_loss = -naive[rows, LABELS].sum() / count[rows, LABELS].sum()
        loss = float(objective.loss(params, x, jnp.asarray(LABELS), h))
        assert loss == pytest.approx(expected_loss, abs=TOL)
    # forward: one plain pass, the hidden states of the packed tokens
    assert objective.forward(params, x, None).shape == (len(EXAMPLES), WIDTH, SPEC.hidden_size)


# --- encode with a real (tiny, word-level) tokenizer and a chat template ---------------------------------------

WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "is", "the", "sky", "blue", "?", "yes", "no",
         "maybe", "what", "two", "plus", "four", "five", "grass", "green", "red", "both", "and"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
VOCAB = {w: i for i, w in enumerate(WORDS)}
TEXT_EXAMPLES = [
    TextExample("is the sky blue ?", ("yes", "no", "maybe"), 0, "toy"),
    TextExample("what is two plus two ?", ("four", "five"), 0, "toy"),  # two choices: a padding choice
    TextExample("is the grass green ?", ("both red and blue", "no", "yes"), 1, "toy"),
]


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers", reason="a real tokenizer object needs transformers")
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                                additional_special_tokens=["<|im_start|>"],
                                                chat_template=CHAT_TEMPLATE)


def words(text):
    return [VOCAB[w] for w in text.split()]


def test_encode_packs_chat_prompt_and_every_reply(tokenizer):
    eot = VOCAB["<|im_end|>"]
    assert text_encoding.end_of_turn(tokenizer) == eot
    x, y, num_choices, reply_tokens = text_encoding.encode(TEXT_EXAMPLES, tokenizer, max_tokens=64)
    np.testing.assert_array_equal(y, [ex.label for ex in TEXT_EXAMPLES])
    assert y.dtype == np.int32 and x.dtype == np.int32 and num_choices == 3
    lengths = []
    for b, ex in enumerate(TEXT_EXAMPLES):
        prompt = words(f"<|im_start|> user {ex.prompt} <|im_end|> <|im_start|> assistant")
        replies = [words(c) + [eot] for c in ex.choices]
        n = len(prompt) + sum(map(len, replies))
        lengths.append(n)
        np.testing.assert_array_equal(x[b, TOKENS, : len(prompt)], prompt)
        np.testing.assert_array_equal(x[b, SEGMENTS, : len(prompt)], 0)
        # the mask (segment) row marks exactly the reply tokens + end-of-turn token of each choice, in order
        expected_segments = np.concatenate([np.full(len(r), c + 1) for c, r in enumerate(replies)])
        np.testing.assert_array_equal(x[b, SEGMENTS, len(prompt): n], expected_segments)
        for c, r in enumerate(replies):
            np.testing.assert_array_equal(x[b, TOKENS][x[b, SEGMENTS] == c + 1], r)
            np.testing.assert_array_equal(x[b, POSITIONS][x[b, SEGMENTS] == c + 1], len(prompt) + np.arange(len(r)))
        assert not (x[b, SEGMENTS] > len(ex.choices)).any()  # padding choices: no token at all
        assert not x[b, :, n:].any()  # right padding: every row zero
        np.testing.assert_array_equal(x[b, PREDICTORS], hand_pack([(prompt, replies)], x.shape[2])[0, PREDICTORS])
    assert x.shape == (3, 4, max(lengths))
    assert reply_tokens == max(sum(len(c.split()) + 1 for c in ex.choices) for ex in TEXT_EXAMPLES) == 9
    # exactly the longest example fits; one token fewer names the setting to raise
    text_encoding.encode(TEXT_EXAMPLES, tokenizer, max_tokens=max(lengths))
    with pytest.raises(ConfigError, match=r"data\.max_tokens=18: example 2 of task 'toy' needs 19 tokens"):
        text_encoding.encode(TEXT_EXAMPLES, tokenizer, max_tokens=max(lengths) - 1)


def test_end_of_turn_falls_back_to_end_of_sequence_without_chatml():
    transformers = pytest.importorskip("transformers", reason="a real tokenizer object needs transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<unk>": 0, "</s>": 1, "yes": 2}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    plain = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    assert text_encoding.end_of_turn(plain) == 1
    assert text_encoding.reply_ids(plain, "yes") == [2, 1]


def test_encoded_examples_score_like_separate_sequences(tokenizer, params):
    assert len(tokenizer) <= SPEC.vocab_size
    x, _, num_choices, reply_tokens = text_encoding.encode(TEXT_EXAMPLES, tokenizer, max_tokens=64)
    scores = np.asarray(choice_likelihood(SPEC, num_choices, reply_tokens).scores(params, jnp.asarray(x), None))
    pairs = [(text_encoding.prompt_ids(tokenizer, ex.prompt), text_encoding.reply_ids(tokenizer, c))
             for ex in TEXT_EXAMPLES for c in ex.choices]
    naive = iter(naive_reply_logprobs(params, pairs))
    for b, ex in enumerate(TEXT_EXAMPLES):
        for c in range(num_choices):
            if c < len(ex.choices):
                assert scores[b, c] == pytest.approx(next(naive), abs=TOL)
            else:
                assert scores[b, c] == -np.inf
