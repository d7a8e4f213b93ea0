"""Autoregressive decoding over a step function with a key/value cache (pure JAX, jit-friendly).

A step function has the signature

    step_fn(tokens int32 [N, 1], position int32 scalar, cache PyTree) -> (logits float32 [N, V], cache)

and computes the distribution of the token at output position `position` given the token before it
(at position 0 the input is the BOS id, 0 by T5's convention), updating its cache. N is the batch
size for greedy search and sampling, batch * beam_size for beam search.

Conventions shared by every decoder here (B = batch, L = max_length, V = vocabulary):
  * tokens come back int32 with 0 (padding) after EOS; EOS itself is kept.
  * `pad_id` (default None, as T5X): when set, that id is never generated. In our data 0 only means
    "nothing here" (after EOS, in `score_batch`'s weights, in the decoder's masks), so a 0 generated
    mid-sequence cannot be scored or read back; trained models never predict it, but random ones
    (tests) often do, so `pad_id=0` bans it. Scores still use the model's unmodified distribution.
  * `forced_prefix` int32 [B, P], right-padded with 0: every non-zero entry is forced, so a
    right-padded prompt of length n forces output positions 0..n-1 and decoding continues after it
    (T5X's `inputs` semantics, without its BOS column). Forced tokens stay in the returned tokens and
    their log-probabilities are left out of the scores, which are thus log p(continuation | prompt).
    Entries beyond max_length are ignored; a forced EOS ends the sequence.
  * an encoder-side prompt (e.g. "a picture of") needs nothing here: it is the batch's
    `encoder_input_tokens`, which the encoder has already read before decoding starts.

Example (greedy, eos_id 1, forced_prefix [[7, 8, 0, 0]], max_length 5): the step at position 0 sees
BOS and its choice is replaced by 7, position 1 sees 7 and is forced to 8, position 2 sees 8 and picks
freely, say 9, position 3 picks EOS; tokens = [[7, 8, 9, 1, 0]], score = log p(9) + log p(EOS).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from simvlm_jax.network.attention import CROSS_CACHE_NAMES

StepFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]

# A finite stand-in for -inf: sums of it stay finite (no inf - inf = NaN) and far below any real score.
NEG_INF = -1.0e9


# ---------------------------------------------------------------------------------------------------
# Cache helpers: expand a batch-B cache to B * beam rows and gather rows by beam.
# ---------------------------------------------------------------------------------------------------
def expand_to_beams(x: jax.Array, beam_size: int) -> jax.Array:
    """[B, ...] -> [B * beam_size, ...], each example's copies adjacent: [e0, e0, e1, e1] for 2."""
    return jnp.repeat(x, beam_size, axis=0)


# Cache leaves (by name) whose rows are equal within each beam group because they derive from the
# example, not from the tokens decoded so far: the cross-attention keys/values of the encoder output.
# Beam search never gathers them (a gather would copy each row onto an equal row).
BEAM_CONSTANT_LEAVES = frozenset(CROSS_CACHE_NAMES)


def _map_batch_leaves(
    fn: Callable[[jax.Array], jax.Array], cache: Any, rows: int, skip: frozenset[str] = frozenset()
) -> Any:
    """Applies `fn` to every cache leaf that has a leading batch axis of `rows`, except leaves named in `skip`.

    Scalar leaves (our cache's `cache_index` counters: one step count shared by all rows) are left
    as they are; any other shape means a cache layout this code does not know, so it raises.
    """

    def apply(path, leaf):
        if jnp.ndim(leaf) == 0 or getattr(path[-1], "key", None) in skip:
            return leaf
        if leaf.shape[0] != rows:
            raise ValueError(f"cache leaf of shape {leaf.shape} has no leading batch axis of {rows}")
        return fn(leaf)

    return jax.tree_util.tree_map_with_path(apply, cache)


def expand_cache(cache: Any, batch_size: int, beam_size: int) -> Any:
    """The cache of B rows -> B * beam_size rows (see `expand_to_beams`)."""
    return _map_batch_leaves(lambda leaf: expand_to_beams(leaf, beam_size), cache, batch_size)


def gather_beams(cache: Any, beam_index: jax.Array, batch_size: int, beam_size: int) -> Any:
    """Row (b, k) of the new cache is row (b, beam_index[b, k]) of the old; beam_index int32 [B, K].
    Leaves in `BEAM_CONSTANT_LEAVES` are returned as they are (their rows are equal within each group)."""
    rows = (jnp.arange(batch_size)[:, None] * beam_size + beam_index).reshape(-1)  # [B*K]
    return _map_batch_leaves(
        lambda leaf: jnp.take(leaf, rows, axis=0), cache, batch_size * beam_size, skip=BEAM_CONSTANT_LEAVES
    )


def _forced_table(forced_prefix: Optional[jax.Array], batch_size: int, max_length: int) -> Optional[jax.Array]:
    """forced_prefix [B, P] -> int32 [B, max_length] (0 = free), cut or 0-padded to max_length."""
    if forced_prefix is None:
        return None
    forced = jnp.asarray(forced_prefix, jnp.int32)
    if forced.ndim != 2 or forced.shape[0] != batch_size:
        raise ValueError(f"forced_prefix must be [{batch_size}, P], got {forced.shape}")
    forced = forced[:, :max_length]
    return jnp.pad(forced, ((0, 0), (0, max_length - forced.shape[1])))


def _ban_pad(logits: jax.Array, pad_id: Optional[int]) -> jax.Array:
    """logits [..., V] with the padding id made (finitely) impossible."""
    if pad_id is None:
        return logits
    return logits.at[..., pad_id].set(NEG_INF)


# ---------------------------------------------------------------------------------------------------
# Greedy search and temperature sampling: one token per row per step.
# ---------------------------------------------------------------------------------------------------
Chooser = Callable[[jax.Array, jax.Array], jax.Array]  # (logits [B, V], rng) -> tokens [B]


def _decode_one_per_step(
    step_fn: StepFn,
    cache: Any,
    rng: jax.Array,
    batch_size: int,
    max_length: int,
    eos_id: int,
    choose: Chooser,
    bos_id: int,
    forced_prefix: Optional[jax.Array],
    pad_id: Optional[int],
) -> tuple[jax.Array, jax.Array]:
    """The loop behind greedy search and sampling; `choose` picks each step's tokens."""
    forced = _forced_table(forced_prefix, batch_size, max_length)

    def cond(state):
        position, _, _, done, _, _, _ = state
        return (position < max_length) & ~jnp.all(done)

    def body(state):
        position, previous, cache, done, tokens, scores, rng = state
        logits, cache = step_fn(previous[:, None], position, cache)
        logits = logits.astype(jnp.float32)  # [B, V]
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        rng, step_rng = jax.random.split(rng)
        chosen = choose(_ban_pad(logits, pad_id), step_rng).astype(jnp.int32)  # [B]
        chosen_log_prob = jnp.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0]
        if forced is not None:
            forced_now = forced[:, position]  # [B]
            chosen = jnp.where(forced_now > 0, forced_now, chosen)
            chosen_log_prob = jnp.where(forced_now > 0, 0.0, chosen_log_prob)
        chosen = jnp.where(done, 0, chosen)
        scores = scores + jnp.where(done, 0.0, chosen_log_prob)
        tokens = tokens.at[:, position].set(chosen)
        done = done | (chosen == eos_id)
        return position + 1, chosen, cache, done, tokens, scores, rng

    state = (
        jnp.asarray(0, jnp.int32),
        jnp.full((batch_size,), bos_id, jnp.int32),
        cache,
        jnp.zeros((batch_size,), bool),
        jnp.zeros((batch_size, max_length), jnp.int32),
        jnp.zeros((batch_size,), jnp.float32),
        rng,
    )
    _, _, _, _, tokens, scores, _ = jax.lax.while_loop(cond, body, state)
    return tokens, scores


def greedy_search(
    step_fn: StepFn,
    cache: Any,
    batch_size: int,
    max_length: int,
    eos_id: int,
    bos_id: int = 0,
    forced_prefix: Optional[jax.Array] = None,
    pad_id: Optional[int] = None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy decoding of up to `max_length` tokens.

    Returns:
      tokens int32 [B, max_length]: the argmax tokens (forced ones where `forced_prefix` says), EOS
        included, 0 after EOS;
      scores float32 [B]: the sum of the chosen free tokens' log-probabilities, up to and including EOS.
    The loop stops early once every sequence has produced EOS.
    """

    def choose(logits, rng):
        del rng
        return jnp.argmax(logits, axis=-1)

    return _decode_one_per_step(
        step_fn, cache, jax.random.key(0), batch_size, max_length, eos_id, choose, bos_id, forced_prefix, pad_id
    )


def _sampling_chooser(temperature: Any, top_k: int, top_p: float) -> Chooser:
    """Draws from softmax(logits / temperature), cut to the top_k ids, then to the top_p nucleus."""

    def choose(logits, rng):
        greedy = jnp.argmax(logits, axis=-1)
        if isinstance(temperature, (int, float)) and temperature == 0:
            return greedy
        t = jnp.asarray(temperature, jnp.float32)
        scaled = logits / jnp.maximum(t, 1e-6)  # [B, V]
        if top_k > 0 or top_p < 1.0:
            # Sort the top ids (all of them when only top_p is set) and sample a rank among them.
            values, ids = jax.lax.top_k(scaled, top_k if top_k > 0 else scaled.shape[-1])  # [B, k]
            if top_p < 1.0:
                probs = jax.nn.softmax(values, axis=-1)
                mass_before = jnp.cumsum(probs, axis=-1) - probs
                # Keep the smallest prefix whose mass reaches top_p (the best id always stays).
                keep = (mass_before < top_p) | (jnp.arange(values.shape[-1]) == 0)
                values = jnp.where(keep, values, NEG_INF)
            rank = jax.random.categorical(rng, values, axis=-1)  # [B]
            sampled = jnp.take_along_axis(ids, rank[:, None], axis=-1)[:, 0]
        else:
            sampled = jax.random.categorical(rng, scaled, axis=-1)
        return jnp.where(t > 0, sampled, greedy)

    return choose


def temperature_sample(
    step_fn: StepFn,
    cache: Any,
    rng: jax.Array,
    batch_size: int,
    max_length: int,
    eos_id: int,
    temperature: Any = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    bos_id: int = 0,
    forced_prefix: Optional[jax.Array] = None,
    pad_id: Optional[int] = None,
) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling of up to `max_length` tokens, one independent draw per row.

    Args:
      temperature: scalar (a Python number or a traced array); 0 means greedy (argmax).
      top_k: static int; > 0 keeps only the k most likely ids (0 = no cut).
      top_p: static float in (0, 1]; < 1 keeps the smallest set of most likely ids whose probability
        (after temperature and the top_k cut) reaches top_p, always at least one (nucleus sampling).
        Both cuts may be combined: top_k first, then top_p on the renormalised rest.
    Returns:
      tokens int32 [B, max_length] with 0 after EOS;
      scores float32 [B]: log-probabilities of the sampled free tokens under the model's unmodified
        distribution (no temperature, no cuts), summed up to and including EOS.
    """
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    choose = _sampling_chooser(temperature, top_k, top_p)
    return _decode_one_per_step(
        step_fn, cache, rng, batch_size, max_length, eos_id, choose, bos_id, forced_prefix, pad_id
    )


# ---------------------------------------------------------------------------------------------------
# Beam search.
# ---------------------------------------------------------------------------------------------------
def length_penalty(length: jax.Array, alpha: Any) -> jax.Array:
    """GNMT's ((5 + length) / 6) ** alpha; exactly 1 when alpha = 0."""
    return jnp.power((5.0 + length.astype(jnp.float32)) / 6.0, alpha)


class BeamState(NamedTuple):
    """The loop state of `beam_search` (B examples x K hypotheses, L = max_length)."""

    position: jax.Array  # int32 []: the position being decoded
    last: jax.Array  # int32 [B, K]: the last token of each hypothesis
    tokens: jax.Array  # int32 [B, K, L]
    raw: jax.Array  # float32 [B, K]: summed log-probabilities
    keys: jax.Array  # float32 [B, K]: raw / length penalty, the ranking (best first after top_k)
    finished: jax.Array  # bool [B, K]
    lengths: jax.Array  # int32 [B, K]: tokens so far, or up to EOS once finished
    cache: Any  # the decoder's cache for B * K rows


def beam_search(
    step_fn: StepFn,
    cache: Any,
    batch_size: int,
    max_length: int,
    eos_id: int,
    beam_size: int,
    alpha: Any = 0.0,
    bos_id: int = 0,
    forced_prefix: Optional[jax.Array] = None,
    pad_id: Optional[int] = None,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with `beam_size` hypotheses per example.

    `cache` is for B rows; it is expanded here to B * beam_size rows (scalar leaves untouched) and
    `step_fn` must therefore run on B * beam_size rows: the caller expands whatever else the step
    reads, such as the encoder outputs, with `expand_to_beams`.

    The beam holds live and finished hypotheses together. Each step, a live hypothesis offers its V
    one-token extensions and a finished one offers only itself (score kept, a 0 appended); the K best
    candidates form the next beam. Candidates are ranked by score / length_penalty(length), where a
    live candidate's length is the number of tokens so far (forced ones included) and a finished
    one's is its length up to EOS. A hypothesis also ends, unfinished, at max_length. The loop runs
    until every hypothesis has finished or max_length is reached; it does not stop as soon as no live
    hypothesis can beat the finished ones, since the whole beam is returned. With beam_size = 1 this
    is exactly greedy search.

    Returns:
      tokens int32 [B, beam_size, max_length], best first, 0 after EOS;
      scores float32 [B, beam_size]: the summed log-probabilities of the free tokens divided by the
        length penalty (the plain log-probability when alpha = 0), best first; -inf for a slot that
        no real hypothesis could fill (possible only when V or the free positions are too few).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    batch, beams = batch_size, beam_size
    forced = _forced_table(forced_prefix, batch, max_length)
    cache = expand_cache(cache, batch, beams)

    def cond(state: BeamState):
        return (state.position < max_length) & ~jnp.all(state.finished)

    def body(state: BeamState) -> BeamState:
        position, last, tokens, raw, _, finished, lengths, cache = state
        logits, cache = step_fn(last.reshape(batch * beams, 1), position, cache)
        vocab = logits.shape[-1]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, beams, vocab)
        ids = jnp.arange(vocab)
        step_scores = _ban_pad(log_probs, pad_id)  # [B, K, V]: what each extension adds
        if forced is not None:
            forced_now = forced[:, position]  # [B]
            only_forced = jnp.where(ids[None, :] == forced_now[:, None], 0.0, NEG_INF)  # [B, V]
            step_scores = jnp.where((forced_now > 0)[:, None, None], only_forced[:, None, :], step_scores)
        stay = jnp.where(ids == 0, 0.0, NEG_INF)  # a finished hypothesis: itself, 0 appended
        step_scores = jnp.where(finished[..., None], stay, step_scores)

        candidate_raw = raw[..., None] + step_scores  # [B, K, V]
        candidate_lengths = jnp.where(finished, lengths, position + 1)  # [B, K]
        candidate_keys = candidate_raw / length_penalty(candidate_lengths, alpha)[..., None]
        keys, flat = jax.lax.top_k(candidate_keys.reshape(batch, beams * vocab), beams)  # [B, K]
        origin, token = flat // vocab, (flat % vocab).astype(jnp.int32)

        raw = jnp.take_along_axis(candidate_raw.reshape(batch, beams * vocab), flat, axis=-1)
        was_finished = jnp.take_along_axis(finished, origin, axis=-1)
        lengths = jnp.where(was_finished, jnp.take_along_axis(lengths, origin, axis=-1), position + 1)
        tokens = jnp.take_along_axis(tokens, origin[..., None], axis=1).at[:, :, position].set(token)
        finished = was_finished | (token == eos_id)
        cache = gather_beams(cache, origin, batch, beams)
        return BeamState(position + 1, token, tokens, raw, keys, finished, lengths, cache)

    # Only beam 0 is alive at first: the others would duplicate it.
    first = jnp.where(jnp.arange(beams) == 0, 0.0, NEG_INF)
    first = jnp.broadcast_to(first, (batch, beams))
    state = BeamState(
        position=jnp.asarray(0, jnp.int32),
        last=jnp.full((batch, beams), bos_id, jnp.int32),
        tokens=jnp.zeros((batch, beams, max_length), jnp.int32),
        raw=first,
        keys=first,
        finished=jnp.zeros((batch, beams), bool),
        lengths=jnp.zeros((batch, beams), jnp.int32),
        cache=cache,
    )
    final = jax.lax.while_loop(cond, body, state)
    return final.tokens, jnp.where(final.raw <= NEG_INF / 2, -jnp.inf, final.keys)
