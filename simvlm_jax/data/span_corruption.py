"""T5's span-corruption objective (the paper's objective ablation), as a SeqIO preprocessor.

A window of at most `inputs` tokens of the text is cut into alternating kept and corrupted spans (drawn
kept-first, ending with a corrupted one, as in T5, then rotated by a random offset as T5's
`random_roll=True` does: a caption short enough for one span would otherwise always lose its end).
About `noise_density` of its tokens are corrupted, in spans of `mean_span_length` on average. The
encoder reads the kept spans with each corrupted span replaced by one sentinel id; the decoder predicts
every corrupted span after its sentinel:

    text     the red cube is left of a blue ball
    spans    [the red] [cube is] [left of a blue] [ball]      kept / corrupted / kept / corrupted, say
    inputs   the red <S0> left of a blue <S1>
    targets  <S0> cube is <S1> ball                       (+ EOS from append_eos_after_trim)

Sentinel i is id `vocab_size - 1 - i`, T5's convention: the vocabulary needs `extra_ids` (e.g.
`embedded_vocabulary(extra_ids=100)`) and the model an embedding row for each. Span lengths are drawn as
T5 draws them (a random partition of the corrupted and of the kept token counts into the same number of
positive parts). Images, when present, stay in the encoder untouched: only the text is corrupted.
"""

from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf


def _random_partition(total: tf.Tensor, parts: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """int32 [parts] of positive lengths summing to `total` (>= parts >= 1), uniformly chosen."""
    boundaries = tf.cast(tf.range(total - 1) < parts - 1, tf.int32)  # parts - 1 cut points among total - 1
    boundaries = tf.random.experimental.stateless_shuffle(boundaries, seed=seed)
    segment = tf.cumsum(tf.concat([[0], boundaries], axis=0))  # [total]: the part each token falls in
    return tf.math.unsorted_segment_sum(tf.ones_like(segment), segment, parts)


def corrupted_mask(length: tf.Tensor, noise_density: float, mean_span_length: float, seed: tf.Tensor) -> tf.Tensor:
    """bool [length]: which tokens of a `length`-token window are corrupted (see the module docstring).
    At least one token is corrupted and one kept when length >= 2; nothing is corrupted below that."""
    original_length = tf.cast(length, tf.int32)
    length = tf.maximum(original_length, 2)  # drawn for 2 tokens at least, then cut (as T5 does)
    corrupted = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    corrupted = tf.clip_by_value(corrupted, 1, tf.maximum(length - 1, 1))
    spans = tf.cast(tf.round(tf.cast(corrupted, tf.float32) / mean_span_length), tf.int32)
    spans = tf.clip_by_value(spans, 1, tf.minimum(corrupted, tf.maximum(length - corrupted, 1)))
    seeds = tf.random.experimental.stateless_split(seed, 3)
    kept_lengths = _random_partition(length - corrupted, spans, seeds[0])
    corrupted_lengths = _random_partition(corrupted, spans, seeds[1])
    interleaved = tf.reshape(tf.stack([kept_lengths, corrupted_lengths], axis=1), [-1])  # kept first
    span_of_token = tf.repeat(tf.range(2 * spans), interleaved)  # [length]
    mask = span_of_token % 2 == 1
    # Rolled by a random offset (T5's random_roll=True): otherwise a text short enough for one span, as a
    # caption is, would always lose its last tokens.
    offset = tf.random.stateless_uniform((), seed=seeds[2], minval=0, maxval=tf.maximum(length, 1), dtype=tf.int32)
    mask = tf.roll(mask, offset, axis=0)[:original_length]
    return mask & (original_length >= 2)


def corrupt_spans(tokens: tf.Tensor, mask: tf.Tensor, first_sentinel: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(inputs, targets) of tokens [n] whose maximal runs of `mask` are the corrupted spans: the k-th run
    (k = 0, 1, ...) is replaced in the inputs by sentinel id first_sentinel - k, and the targets are each
    run preceded by its sentinel."""
    previous = tf.concat([[False], mask[:-1]], axis=0)
    run_start = mask & ~previous
    sentinel = first_sentinel - (tf.cumsum(tf.cast(run_start, tf.int32)) - 1)  # [n], meaningful at run starts
    inputs = tf.boolean_mask(tf.where(run_start, sentinel, tokens), ~mask | run_start)
    none = tf.fill(tf.shape(tokens), -1)
    paired = tf.stack([tf.where(run_start, sentinel, none), tf.where(mask, tokens, none)], axis=1)  # [n, 2]
    paired = tf.reshape(paired, [-1])
    return inputs, tf.boolean_mask(paired, paired >= 0)


def span_corruption(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
) -> tf.data.Dataset:
    """`text_tokens` -> `inputs` (kept spans and sentinels) and `targets` (sentinels and corrupted spans).

    The window is the whole text when it has at most `inputs` tokens, else `inputs` tokens from a uniformly
    drawn start (so every part of a long document is used). Draws use SeqIO's per-example stateless seeds
    (deterministic given the dataset seed).
    """
    vocabulary = output_features["targets"].vocabulary
    extra_ids = getattr(vocabulary, "extra_ids", 0)
    if extra_ids < 1:
        raise ValueError(
            "span_corruption needs sentinel ids: give the task a vocabulary with extra_ids "
            f"(e.g. embedded_vocabulary(extra_ids=100)); {vocabulary!r} has none"
        )
    first_sentinel = vocabulary.vocab_size - 1
    window = int(sequence_length["inputs"])
    most_spans = max(1, round(max(1, round(window * noise_density)) / mean_span_length))
    if most_spans > extra_ids:
        raise ValueError(f"span_corruption: up to {most_spans} spans per example but only {extra_ids} sentinel ids")

    @seqio.map_over_dataset(num_seeds=2)
    def corrupt(ex, seeds):
        tokens = ex.pop("text_tokens")
        n = tf.size(tokens)
        start = tf.random.stateless_uniform(
            (), seed=seeds[0], minval=0, maxval=tf.maximum(n - window, 0) + 1, dtype=tf.int32
        )
        tokens = tokens[start : start + window]
        mask = corrupted_mask(tf.size(tokens), noise_density, mean_span_length, seeds[1])
        inputs, targets = corrupt_spans(tokens, mask, first_sentinel)
        return {**ex, "inputs": inputs, "targets": targets}

    return corrupt(dataset)
