"""Autoregressive decoding over a step function with a key/value cache (pure JAX, jit-friendly).

A step function has the signature

    step_fn(tokens int32 [B, 1], position int32 scalar, cache PyTree) -> (logits float32 [B, V], cache)

and computes the distribution of the token at `position + 1` given the token at `position` (position 0
holds the BOS id 0, T5's convention), updating its cache.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

StepFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


def greedy_search(
    step_fn: StepFn, cache: Any, batch_size: int, max_length: int, eos_id: int, bos_id: int = 0
) -> tuple[jax.Array, jax.Array]:
    """Greedy decoding of up to `max_length` tokens.

    Returns:
      tokens int32 [B, max_length]: the argmax tokens, EOS included, 0 (padding) after EOS;
      scores float32 [B]: the sum of the chosen tokens' log-probabilities, up to and including EOS.
    The loop stops early once every sequence has produced EOS.
    """

    def cond(state):
        position, _, _, done, _, _ = state
        return (position < max_length) & ~jnp.all(done)

    def body(state):
        position, previous, cache, done, tokens, scores = state
        logits, cache = step_fn(previous[:, None], position, cache)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        chosen = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)  # [B]
        chosen_log_prob = jnp.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0]
        chosen = jnp.where(done, 0, chosen)
        scores = scores + jnp.where(done, 0.0, chosen_log_prob)
        tokens = tokens.at[:, position].set(chosen)
        done = done | (chosen == eos_id)
        return position + 1, chosen, cache, done, tokens, scores

    state = (
        jnp.asarray(0, jnp.int32),
        jnp.full((batch_size,), bos_id, jnp.int32),
        cache,
        jnp.zeros((batch_size,), bool),
        jnp.zeros((batch_size, max_length), jnp.int32),
        jnp.zeros((batch_size,), jnp.float32),
    )
    _, _, _, _, tokens, scores = jax.lax.while_loop(cond, body, state)
    return tokens, scores
