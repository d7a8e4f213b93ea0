"""Beam search, sampling and forced prefixes: on toy step functions with known distributions, and on a
small random model, where decoded scores are checked against `score_batch` (no cache).

The default decoder (plain greedy, pad allowed) is covered by tests/test_models.py."""

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simvlm_jax.model import decoding
from tests.helpers import L_DEC, B, make_batch, make_model

EOS = 1


# ---------------------------------------------------------------------------------------------------
# A toy step function: the next-token logits depend on the position and on the first generated token,
# which only the cache remembers from position 2 on. A beam search that reordered its cache wrongly
# would read another hypothesis's first token.
# ---------------------------------------------------------------------------------------------------
def toy_step_fn(table):
    """table float32 [L, V, V]: logits of the token at position t given the first token f = row f
    (row 0 at t = 0, where nothing has been generated)."""

    def step_fn(tokens, position, cache):
        assert cache["index"].shape == ()  # the scalar leaf is never tiled or gathered
        first = jnp.where(position == 1, tokens[:, 0], cache["first"])  # [N]
        logits = jnp.asarray(table)[position][first]  # [N, V]
        return logits, {"first": first, "index": cache["index"] + 1}

    return step_fn


def toy_cache(batch_size):
    return {"first": jnp.zeros((batch_size,), jnp.int32), "index": jnp.asarray(0, jnp.int32)}


def toy_log_prob(table, sequence):
    """The reference: log-probability of a sequence (up to EOS or its end), computed without a cache."""
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(table), axis=-1))
    total = 0.0
    for t, token in enumerate(sequence):
        total += log_probs[t, sequence[0] if t > 0 else 0, token]
        if token == EOS:
            break
    return total


def all_sequences(vocab, length):
    """Every sequence the decoders may produce with pad_id=0 (only 0s after EOS), as tuples of `length`."""
    found = []
    for n in range(1, length + 1):
        for body in itertools.product(range(2, vocab), repeat=n - 1):
            found.append(body + (EOS,) + (0,) * (length - n))
    found += list(itertools.product(range(2, vocab), repeat=length))
    return found


def myopic_table():
    """V = 5 (0 pad, 1 EOS, 2 A, 3 B, 4 C), L = 3. Greedy takes A (0.5), then A (0.35), then EOS (0.9):
    p = 0.1575. Taking B (0.4) and then EOS (0.9) gives p = 0.36, which a beam of 2 finds."""
    probs = np.full((3, 5, 5), 1e-6)
    probs[0, 0, 1:] = [1e-3, 0.5, 0.4, 0.099]
    probs[1, 2, 1:] = [0.2, 0.35, 0.3, 0.15]  # first = A
    probs[1, 3, 1:] = [0.9, 0.04, 0.03, 0.03]  # first = B
    probs[1, 4, 1:] = 0.25
    probs[2, :, 1:] = [0.9, 0.04, 0.03, 0.03]
    return np.log(probs / probs.sum(-1, keepdims=True)).astype(np.float32)


def test_beam_search_finds_what_myopic_greedy_misses():
    table = myopic_table()
    greedy_tokens, greedy_scores = decoding.greedy_search(toy_step_fn(table), toy_cache(1), 1, 3, EOS)
    np.testing.assert_array_equal(greedy_tokens, [[2, 2, 1]])
    np.testing.assert_allclose(greedy_scores, [np.log(0.5 * 0.35 * 0.9)], rtol=1e-4)

    tokens, scores = decoding.beam_search(toy_step_fn(table), toy_cache(1), 1, 3, EOS, beam_size=2)
    # Both hypotheses end with EOS; the finished B EOS keeps its score while A A goes on.
    np.testing.assert_array_equal(tokens, [[[3, 1, 0], [2, 2, 1]]])
    np.testing.assert_allclose(scores, [[np.log(0.4 * 0.9), np.log(0.5 * 0.35 * 0.9)]], rtol=1e-4)


def test_a_beam_wide_enough_for_everything_enumerates_all_sequences_in_order():
    """V = 4 (pad never generated, so EOS and two words), L = 3: 15 possible sequences. A beam of 15
    keeps every hypothesis, so it must return exactly the exhaustive ranking, for each example."""
    vocab, length, batch = 4, 3, 2
    rng = np.random.default_rng(0)
    tables = rng.normal(scale=2.0, size=(batch, length, vocab, vocab)).astype(np.float32)
    sequences = all_sequences(vocab, length)
    assert len(sequences) == 15
    for b in range(batch):  # each example its own distribution: run them one by one
        step_fn = toy_step_fn(tables[b])
        tokens, scores = decoding.beam_search(step_fn, toy_cache(1), 1, length, EOS, beam_size=15, pad_id=0)
        expected = sorted(sequences, key=lambda s: -toy_log_prob(tables[b], s))
        assert [tuple(s) for s in np.asarray(tokens[0])] == expected
        np.testing.assert_allclose(scores[0], [toy_log_prob(tables[b], s) for s in expected], rtol=1e-5, atol=1e-5)


def test_beam_search_on_a_random_toy_reorders_its_cache_and_never_trails_greedy():
    vocab, length, batch, beams = 7, 5, 3, 3
    rng = np.random.default_rng(1)
    table = rng.normal(scale=1.5, size=(length, vocab, vocab)).astype(np.float32)
    step_fn = toy_step_fn(table)
    # A batch of identical rows with different forced prefixes makes the examples differ.
    prefix = np.array([[0, 0], [4, 0], [5, 6]], np.int32)
    tokens, scores = jax.jit(
        lambda: decoding.beam_search(
            step_fn, toy_cache(batch), batch, length, EOS, beams, forced_prefix=prefix, pad_id=0
        )
    )()
    greedy_tokens, greedy_scores = decoding.greedy_search(
        step_fn, toy_cache(batch), batch, length, EOS, forced_prefix=prefix, pad_id=0
    )
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(table), axis=-1))
    for b in range(batch):
        n_forced = int(np.sum(prefix[b] > 0))
        # Scores leave the forced tokens out: log p(sequence) - log p(forced prefix).
        prefix_log_prob = sum(log_probs[t, prefix[b, 0] if t > 0 else 0, prefix[b, t]] for t in range(n_forced))
        assert len({tuple(s) for s in tokens[b]}) == beams  # distinct hypotheses
        for k in range(beams):
            np.testing.assert_array_equal(tokens[b, k, :n_forced], prefix[b, :n_forced])
            np.testing.assert_allclose(
                scores[b, k], toy_log_prob(table, tokens[b, k]) - prefix_log_prob, rtol=1e-5, atol=1e-5
            )
        assert np.all(np.diff(scores[b]) <= 1e-6)  # best first
        assert scores[b, 0] >= greedy_scores[b] - 1e-5
    one_tokens, one_scores = decoding.beam_search(
        step_fn, toy_cache(batch), batch, length, EOS, 1, forced_prefix=prefix, pad_id=0
    )
    np.testing.assert_array_equal(one_tokens[:, 0], greedy_tokens)
    np.testing.assert_allclose(one_scores[:, 0], greedy_scores, rtol=1e-6)


def test_eos_ends_every_decoder_and_zeros_follow():
    """Deterministic after the first token: 2 -> [2, EOS] (then 3s, were decoding to go on) and
    3 -> [3, 2, 2, EOS]. The two sequences end at different steps, so the loops run past the first EOS."""
    probs = np.full((4, 4, 4), 1e-9)
    probs[0, 0, 2:] = 0.5
    probs[1, 2, EOS] = probs[2:, 2, 3] = 1.0
    probs[1:3, 3, 2] = probs[3, 3, EOS] = 1.0
    table = np.log(probs / probs.sum(-1, keepdims=True)).astype(np.float32)
    step_fn = toy_step_fn(table)
    expected = [[2, EOS, 0, 0], [3, 2, 2, EOS]]
    first = np.array([[2], [3]], np.int32)
    greedy, _ = decoding.greedy_search(step_fn, toy_cache(2), 2, 4, EOS, forced_prefix=first)
    sampled, _ = decoding.temperature_sample(step_fn, toy_cache(2), jax.random.key(0), 2, 4, EOS, forced_prefix=first)
    beam, beam_scores = decoding.beam_search(step_fn, toy_cache(1), 1, 4, EOS, beam_size=2)
    np.testing.assert_array_equal(greedy, expected)
    np.testing.assert_array_equal(sampled, expected)
    assert sorted(map(list, np.asarray(beam[0]))) == expected
    np.testing.assert_allclose(beam_scores, [[np.log(0.5)] * 2], atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Sampling: empirical frequencies against the renormalised distribution.
# ---------------------------------------------------------------------------------------------------
SAMPLE_LOGITS = np.array([3.0, 0.2, 1.0, -0.5, 0.6, 1.4, -1.0], np.float32)  # id 0 the likeliest, but banned


def expected_frequencies(temperature, top_k, top_p):
    """The distribution the sampler should follow, computed the textbook way in numpy."""
    logits = SAMPLE_LOGITS / temperature
    logits[0] = -np.inf  # pad_id = 0
    probs = np.exp(logits - np.max(logits))
    order = np.argsort(-probs)
    if top_k:
        probs[order[top_k:]] = 0.0
    probs /= probs.sum()
    mass_before = np.cumsum(probs[order]) - probs[order]
    probs[order[(mass_before >= top_p) & (np.arange(len(order)) > 0)]] = 0.0
    return probs / probs.sum()


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.5, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7), (2.0, 4, 0.6)])
def test_sample_frequencies_match_the_cut_distribution(temperature, top_k, top_p):
    draws = 20000

    @jax.jit
    def sample(logits, rng):  # logits an argument, not a constant XLA would fold at compile time
        def step_fn(tokens, position, cache):
            return jnp.broadcast_to(logits, (tokens.shape[0], logits.size)), cache

        return decoding.temperature_sample(step_fn, (), rng, draws, 1, EOS, temperature, top_k, top_p, pad_id=0)

    tokens, scores = sample(SAMPLE_LOGITS, jax.random.key(3))
    frequencies = np.bincount(np.asarray(tokens[:, 0]), minlength=SAMPLE_LOGITS.size) / draws
    np.testing.assert_allclose(frequencies, expected_frequencies(temperature, top_k, top_p), atol=0.015)  # 4 sigma
    # Scores are log-probabilities under the model's own distribution, whatever the sampler did.
    model_log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(SAMPLE_LOGITS)))
    np.testing.assert_allclose(scores, model_log_probs[np.asarray(tokens[:, 0])], rtol=1e-6)


def test_sampling_arguments_are_checked():
    with pytest.raises(ValueError, match="top_p"):
        decoding.temperature_sample(None, (), jax.random.key(0), 1, 1, EOS, top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        decoding.temperature_sample(None, (), jax.random.key(0), 1, 1, EOS, top_k=-1)


# ---------------------------------------------------------------------------------------------------
# A small model through predict_batch_with_aux; decodes are rescored with score_batch (no cache).
# It bans the pad id (pad_id=0): score_batch reads a 0 target as padding, and this random model's
# favourite token after BOS (id 0) is 0 itself.
# ---------------------------------------------------------------------------------------------------
SMALL = dict(
    num_conv_blocks=0,
    patch_size=16,
    num_encoder_layers=1,
    num_decoder_layers=1,
    emb_dim=32,
    mlp_dim=64,
    num_heads=2,
    head_dim=16,
)
_ENCODER_FEATURES = ("encoder_image", "encoder_image_mask", "encoder_input_tokens")
_SCORING_ROWS = 8  # rescored rows are padded to this count so that score_batch compiles once


class Small:
    """The model, a jitted init per seed, a batch, and predictors compiled once per static setting."""

    def __init__(self):
        self.model = make_model(**SMALL)
        self.batch = make_batch(1)
        shapes = {k: v.shape for k, v in self.batch.items()}
        self.init = jax.jit(lambda rng: self.model.get_initial_variables(rng, shapes)["params"])
        self.score = jax.jit(self.model.score_batch)
        self._predictors = {}

    def predict(self, params, batch=None, dynamic=None, **static):
        """predict_batch_with_aux; `dynamic` decoder params (eos_id, temperature, alpha) are traced."""
        dynamic = dynamic or {}
        key = (repr(sorted(static.items())), tuple(sorted(dynamic)))
        if key not in self._predictors:
            fixed = static.pop("decoder_params", {})
            self._predictors[key] = jax.jit(
                lambda p, b, d: self.model.predict_batch_with_aux(p, b, decoder_params={**fixed, **d}, **static)
            )
        tokens, aux = self._predictors[key](params, self.batch if batch is None else batch, dynamic)
        return np.asarray(tokens), np.asarray(aux["scores"])

    def rescore(self, params, tokens, weights):
        """score_batch of decodes [B, k, L] (weights [B, k, L]) with each example's encoder inputs."""
        k = tokens.shape[1]
        flat = tokens.reshape(-1, tokens.shape[-1])
        rows = np.arange(_SCORING_ROWS) % flat.shape[0]
        flat, weights = flat[rows], weights.reshape(flat.shape)[rows]
        scoring = {name: np.repeat(self.batch[name], k, axis=0)[rows] for name in _ENCODER_FEATURES}
        scoring["decoder_target_tokens"] = flat
        scoring["decoder_input_tokens"] = np.pad(flat[:, :-1], ((0, 0), (1, 0)))
        scoring["decoder_loss_weights"] = weights.astype(np.int32)
        return np.asarray(self.score(params, scoring))[: B * k].reshape(tokens.shape[:2])


@pytest.fixture(scope="module")
def small():
    return Small()


def test_beam_search_on_small_models_beats_greedy_and_matches_score_batch(small):
    greedy = dict(decoder_params={"pad_id": 0})
    beam = dict(decoder_params={"method": "beam", "pad_id": 0}, num_decodes=4, return_all_decodes=True)
    beam_one = dict(decoder_params={"method": "beam", "beam_size": 1, "pad_id": 0})
    eos_seen = 0
    for seed in range(3):
        params = small.init(jax.random.key(seed))
        # Make EOS an id the model produces (greedy's first choice for example 1), so that decodes end.
        eos = int(small.predict(params, dynamic={"eos_id": 1}, **greedy)[0][1, 0])
        dynamic = {"eos_id": eos, "alpha": 0.0}
        greedy_tokens, greedy_scores = small.predict(params, dynamic={"eos_id": eos}, **greedy)
        tokens, scores = small.predict(params, dynamic=dynamic, **beam)
        assert tokens.shape == (B, 4, L_DEC) and scores.shape == (B, 4)
        assert np.all(scores[:, 0] >= greedy_scores - 1e-4)
        assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first
        after_eos = np.cumsum(tokens == eos, -1) - (tokens == eos) > 0
        assert np.all(tokens[after_eos] == 0) and np.all(tokens[~after_eos] > 0)
        # No pad before EOS, 0s after it: the weights are simply "a token is here" (EOS included).
        log_probs = small.rescore(params, tokens, tokens > 0)
        np.testing.assert_allclose(log_probs, scores, rtol=1e-4, atol=1e-4)
        # With a length penalty the scores are the same log-probabilities divided by ((5 + len) / 6) ** alpha.
        tokens, scores = small.predict(params, dynamic={**dynamic, "alpha": 0.6}, **beam)
        penalty = ((5.0 + np.sum(tokens > 0, -1)) / 6.0) ** 0.6
        np.testing.assert_allclose(small.rescore(params, tokens, tokens > 0) / penalty, scores, rtol=1e-4, atol=1e-4)

        one_tokens, one_scores = small.predict(params, dynamic=dynamic, **beam_one)
        np.testing.assert_array_equal(one_tokens, greedy_tokens)
        np.testing.assert_allclose(one_scores, greedy_scores, rtol=1e-5)
        eos_seen += np.sum(tokens == eos)
    assert eos_seen > 0


def test_sampling_the_small_model_near_zero_temperature_or_with_top_k_1_is_greedy(small):
    params = small.init(jax.random.key(0))
    greedy_tokens, greedy_scores = small.predict(params, decoder_params={"pad_id": 0}, dynamic={"eos_id": 1})
    sample = dict(decoder_params={"method": "sample", "pad_id": 0})
    top_1 = dict(decoder_params={"method": "sample", "pad_id": 0, "top_k": 1})
    for static, temperature in ((sample, 1e-4), (sample, 0.0), (top_1, 1.0)):
        tokens, scores = small.predict(params, dynamic={"eos_id": 1, "temperature": temperature}, **static)
        np.testing.assert_array_equal(tokens, greedy_tokens)
        np.testing.assert_allclose(scores, greedy_scores, rtol=1e-5)
    # and at temperature 1 it does draw something else
    tokens, _ = small.predict(params, dynamic={"eos_id": 1, "temperature": 1.0}, **sample)
    assert np.any(tokens != greedy_tokens)


@pytest.mark.parametrize("method, num_decodes", [("greedy", 1), ("beam", 2), ("sample", 3)])
def test_prompt_with_targets_forces_the_decoder_prefix(small, method, num_decodes):
    """decoder_input_tokens [0, 7, 8, ...] forces 7 8; [0, 9, EOS, ...] forces only 9: the EOS is stripped
    (were it forced, row 1 would end at once with score 0 and the check against score_batch would fail)."""
    params = small.init(jax.random.key(0))
    prompted = dict(small.batch)
    prompted["decoder_input_tokens"] = np.array([[0, 7, 8, 0, 0, 0], [0, 9, EOS, 0, 0, 0]], np.int32)
    prompt_length = np.array([2, 1])
    tokens, scores = small.predict(
        params,
        prompted,
        dynamic={"alpha": 0.0} if method == "beam" else None,
        decoder_params={"method": method, "pad_id": 0},
        num_decodes=num_decodes,
        return_all_decodes=True,
        prompt_with_targets=True,
    )
    assert tokens.shape == (B, num_decodes, L_DEC)
    np.testing.assert_array_equal(tokens[0, :, :2], [[7, 8]] * num_decodes)
    np.testing.assert_array_equal(tokens[1, :, :1], [[9]] * num_decodes)
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first
    # Scores leave the forced tokens out: score_batch with zero weight on the prompt.
    weights = (tokens > 0) & (np.arange(L_DEC) >= prompt_length[:, None, None])
    np.testing.assert_allclose(small.rescore(params, tokens, weights), scores, rtol=1e-4, atol=1e-4)


def test_decoder_params_are_checked(small):
    params = small.init(jax.random.key(0))
    with pytest.raises(ValueError, match="Unknown decoder params"):
        small.model.predict_batch_with_aux(params, small.batch, decoder_params={"beam": 4})
    with pytest.raises(ValueError, match="Greedy search gives one decode"):
        small.model.predict_batch_with_aux(params, small.batch, decoder_params={"method": "greedy"}, num_decodes=2)
    with pytest.raises(ValueError, match="disagree"):
        small.model.predict_batch_with_aux(params, small.batch, decoder_params={"num_decodes": 2, "beam_size": 3})


def _while_body_instructions(hlo: str) -> list[str]:
    """The instruction lines of every computation a while loop's body reaches (its fusions included)."""
    computations, name = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            name = header.group(1)
            computations[name] = []
        elif name and line.startswith("  "):
            computations[name].append(line)
    pending = re.findall(r"body=%?([\w.\-]+)", hlo)
    seen, lines = set(), []
    while pending:
        current = pending.pop()
        if current in seen or current not in computations:
            continue
        seen.add(current)
        lines += computations[current]
        for line in computations[current]:
            pending += re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
    return lines


@functools.cache
def _compiled_decoding(small, method: str, num_decodes: int) -> str:
    """XLA's compiled program (HLO text) of the small model's predict_batch_with_aux, once per setting."""
    predict = jax.jit(
        lambda p, b: small.model.predict_batch_with_aux(
            p, b, decoder_params={"method": method, "pad_id": 0}, num_decodes=num_decodes
        )
    )
    return predict.lower(small.init(jax.random.key(0)), small.batch).compile().as_text()


_DECODING_METHODS = [("greedy", 1), ("beam", 2), ("sample", 2)]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads XLA:CPU's compiled loop")
@pytest.mark.parametrize("method, num_decodes", _DECODING_METHODS)
def test_decoding_steps_read_the_cross_attention_cache_without_copying_it(small, method, num_decodes):
    """The encoder output's keys and values are projected once, stored length-last; XLA's layout
    assignment used to carry them through the loop in the projection's layout and transpose them back at
    every step (two [N, heads, kv, enc_len] copies per layer per token)."""
    hlo = _compiled_decoding(small, method, num_decodes)
    encoded, _ = jax.eval_shape(small.model.encode, small.init(jax.random.key(0)), small.batch)
    cache_dims = sorted((B * num_decodes, SMALL["num_heads"], SMALL["head_dim"], encoded.shape[1]))
    body = _while_body_instructions(hlo)
    assert any(" dot(" in line or "ynn_fusion" in line or "__onednn" in line for line in body)  # the steps' matmuls
    transposed = []
    for line in body:
        found = re.search(r"= f32\[([\d,]+)\]\{[\d,]*\} transpose\(", line)
        if found and sorted(int(d) for d in found.group(1).split(",")) == cache_dims:
            transposed.append(line.strip())
    assert not transposed, transposed


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="reads XLA:CPU's compiled loop")
@pytest.mark.parametrize("method, num_decodes", _DECODING_METHODS)
def test_decoding_steps_read_a_transposed_token_table_made_before_the_loop(small, method, num_decodes):
    """On CPU the logits read a [emb, vocab] copy of the token table (Embed.attend's transposed_copy),
    made once outside the decoding loop: the loop carries it, and nothing in the loop builds it."""
    hlo = _compiled_decoding(small, method, num_decodes)
    vocab, emb = small.init(jax.random.key(0))["shared_embedding"]["embedding"].shape
    transposed = re.compile(rf"= f32\[{emb},{vocab}\]\{{1,0\}} ([\w-]+)\(")
    body = _while_body_instructions(hlo)
    in_loop = {m.group(1) for m in map(transposed.search, body) if m}
    assert in_loop <= {"get-tuple-element", "parameter"}, in_loop  # read from the loop's state, never built there
    assert "get-tuple-element" in in_loop
    body_lines = set(body)
    made = [line.strip() for line in hlo.splitlines() if line not in body_lines and transposed.search(line)]
    assert any(op in line for line in made for op in (" copy(", " transpose(", " fusion(")), made
