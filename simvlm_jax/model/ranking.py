"""Rank classification: choose each example's answer from a fixed list of candidates by the model's score.

This is VQA's closed-set setting (the K = 3,129 most frequent training answers) and any multiple-choice
evaluation: every candidate is scored as the example's decoder target, exactly as `score_batch` scores a
target (the sum of its tokens' log-probabilities, EOS included), and the best wins.

The encoder runs once per example; only the decoder runs per candidate. Candidates are processed in
chunks of C (about `TOKENS_PER_CHUNK` decoder tokens per chunk over the batch), so memory stays that of a
B x C-row decoder pass whatever K is, and an evaluation holds one example per question rather than K.

Shapes: B examples, K candidates, L = the longest candidate's tokens + EOS, T_enc encoder positions.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Decoder tokens (batch rows x candidates x L) per chunk: the logits of a chunk are this x vocab floats.
TOKENS_PER_CHUNK = 2048

# decode_logits(encoded [N, T_enc, D], encoder_mask [N, T_enc], decoder_input_tokens [N, L],
#               decoder_target_tokens [N, L]) -> logits [N, L, V]
DecodeLogits = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def candidate_targets(vocabulary, candidates: Sequence[str], eos_id: int) -> np.ndarray:
    """int32 [K, L]: each candidate's tokens then EOS, 0-padded to the longest (L = its length + 1)."""
    encoded = [list(vocabulary.encode(text)) for text in candidates]
    empty = [text for text, ids in zip(candidates, encoded) if not ids]
    if empty:
        raise ValueError(f"Candidates with no tokens: {empty[:5]}")
    targets = np.zeros((len(encoded), max(map(len, encoded)) + 1), np.int32)
    for row, ids in zip(targets, encoded):
        row[: len(ids) + 1] = ids + [eos_id]
    return targets


def chunk_size(batch_size: int, length: int, num_candidates: int) -> int:
    """Candidates per chunk: about TOKENS_PER_CHUNK decoder tokens over the batch, at least 1."""
    return int(min(num_candidates, max(1, TOKENS_PER_CHUNK // (batch_size * length))))


def score_candidates(
    decode_logits: DecodeLogits, encoded: jax.Array, encoder_mask: jax.Array, targets: np.ndarray
) -> jax.Array:
    """Log-likelihood of every candidate for every example: float32 [B, K].

    Args:
      decode_logits: the decoder's full (teacher-forced) pass, see DecodeLogits.
      encoded: [B, T_enc, D] and encoder_mask [B, T_enc], from the encoder.
      targets: int32 [K, L] from `candidate_targets`.
    """
    batch_size = encoded.shape[0]
    num_candidates, length = targets.shape
    per_chunk = chunk_size(batch_size, length, num_candidates)
    num_chunks = -(-num_candidates // per_chunk)
    padded = np.zeros((num_chunks * per_chunk, length), np.int32)  # padding rows: no tokens, score 0
    padded[:num_candidates] = targets
    chunks = jnp.asarray(padded.reshape(num_chunks, per_chunk, length))
    rows_encoded = jnp.repeat(encoded, per_chunk, axis=0)  # row b * C + c: example b, candidate c
    rows_mask = jnp.repeat(encoder_mask, per_chunk, axis=0)

    def score_chunk(chunk: jax.Array) -> jax.Array:  # [C, L] -> [B, C]
        rows_targets = jnp.tile(chunk, (batch_size, 1))  # [B * C, L]
        rows_inputs = jnp.pad(rows_targets[:, :-1], ((0, 0), (1, 0)))  # shifted right, BOS = 0
        logits = decode_logits(rows_encoded, rows_mask, rows_inputs, rows_targets).astype(jnp.float32)
        target_logits = jnp.take_along_axis(logits, rows_targets[..., None], axis=-1)[..., 0]
        token_scores = target_logits - jax.nn.logsumexp(logits, axis=-1)  # [B * C, L]
        scores = jnp.sum(jnp.where(rows_targets > 0, token_scores, 0.0), axis=-1)
        return scores.reshape(batch_size, per_chunk)

    scores = jax.lax.map(score_chunk, chunks)  # [num_chunks, B, C]
    return jnp.moveaxis(scores, 0, 1).reshape(batch_size, -1)[:, :num_candidates]


def best_candidates(scores: jax.Array, targets: np.ndarray, num_best: int) -> tuple[jax.Array, jax.Array]:
    """(tokens int32 [B, n, L], scores float32 [B, n]) of the n best candidates, best first (the first
    listed of equal scores first)."""
    best_scores, best = jax.lax.top_k(scores, num_best)  # [B, n]
    return jnp.asarray(targets)[best], best_scores
