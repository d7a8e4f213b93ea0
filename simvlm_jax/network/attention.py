"""Multi-head attention with an optional autoregressive key/value cache, and the SimVLM masks.

Masks are boolean arrays shaped [batch, 1, q_len, k_len] (the 1 broadcasts over heads): True means
"query i may attend to key j". `mask_to_bias` turns one into an additive bias of 0 / -1e10; a large
finite value, not -inf, so that a query with no valid key gets no NaN; the attention's output for such a
query is then set to exactly zero (bias included), so that nothing reaches it. That matters beyond padding
queries: a text-only example with an empty prefix (k = 0, or plain language modelling) has no valid
encoder token at all, and its decoder's cross-attention must contribute nothing rather than a uniform
average over masked image and padding rows.

Worked example: one image of 2 tokens, then the text prefix "a b" and one pad (id 0). The encoder
sequence is [img0, img1, a, b, <pad>]; a token is valid when it is an image token of a present image
or a text token with id != 0:

  image present (encoder_image_mask = 1)      text-only example (encoder_image_mask = 0)
  valid = [1 1 1 1 0]                         valid = [0 0 1 1 0]
  encoder_self_mask (rows = queries):         encoder_self_mask:
      img0 img1  a  b  pad                        img0 img1  a  b  pad
  img0  1    1   1  1  0                      img0  0    0   0  0  0
  img1  1    1   1  1  0                      img1  0    0   0  0  0
  a     1    1   1  1  0                      a     0    0   1  1  0
  b     1    1   1  1  0                      b     0    0   1  1  0
  pad   0    0   0  0  0                      pad   0    0   0  0  0

The prefix is bidirectional ("a" sees "b"). In the text-only case no query ever sees an image key, so
the model is exactly a text PrefixLM encoder-decoder and the (zero) pixels cannot matter.

The decoder predicts the suffix "c d" (targets [c d <pad>], inputs shifted right [0 c d], where id 0 at
position 0 is the start token). Validity comes from the targets (T5X convention): [1 1 0].

  decoder_causal_mask:                        cross_mask (decoder queries x encoder keys, image present):
       0  c  d                                     img0 img1  a  b  pad
  0    1  0  0                                0     1    1   1  1  0
  c    1  1  0                                c     1    1   1  1  0
  d    0  0  0   (query d is padding)         d     0    0   0  0  0

Without targets (e.g. while decoding) the decoder mask is causal only.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from simvlm_jax.network.layers import NEG_INF, DenseGeneral, DType, add_broadcast, dropout, with_sharding_constraint

Array = jax.Array

# The cache leaves that cross-attention keeps while decoding: the encoder output's projected keys and
# values, one copy per decoded row, equal across the rows of a beam group.
CROSS_CACHE_NAMES = ("cross_key", "cross_value")


# ----------------------------------------------------------------------------- mask helpers


def encoder_valid_mask(image_present: Array, tokens_per_image: int, encoder_input_tokens: Array) -> Array:
    """Which encoder positions hold real tokens.

    Args:
      image_present: [batch, num_images] bool/float, 1 = image n of the example is present.
      tokens_per_image: image tokens produced for each image.
      encoder_input_tokens: [batch, text_len] int text prefix, 0 = padding.

    Returns:
      [batch, num_images * tokens_per_image + text_len] bool.
    """
    image_valid = jnp.repeat(jnp.asarray(image_present) > 0, tokens_per_image, axis=1)
    return jnp.concatenate([image_valid, encoder_input_tokens > 0], axis=1)


def encoder_self_mask(encoder_valid: Array) -> Array:
    """Full bidirectional attention among valid tokens: [batch, len] bool -> [batch, 1, len, len]."""
    return encoder_valid[:, None, :, None] & encoder_valid[:, None, None, :]


def decoder_causal_mask(decoder_input_tokens: Array, decoder_target_tokens: Array | None = None) -> Array:
    """Causal self-attention mask of the decoder, [batch, 1, len, len] bool.

    Query i may attend key j iff j <= i and, when `decoder_target_tokens` is given, both positions are
    valid (target > 0, as T5X's make_decoder_mask). Validity comes from the targets, not the inputs,
    because input position 0 holds the start id 0.

    Args:
      decoder_input_tokens: [batch, len] int (only its shape is used).
      decoder_target_tokens: [batch, len] int or None.
    """
    batch, length = decoder_input_tokens.shape
    positions = jnp.arange(length)
    causal = positions[None, :] <= positions[:, None]  # [len(q), len(k)]
    mask = jnp.broadcast_to(causal[None, None], (batch, 1, length, length))
    if decoder_target_tokens is not None:
        valid = decoder_target_tokens > 0
        mask = mask & valid[:, None, :, None] & valid[:, None, None, :]
    return mask


def cross_mask(decoder_valid: Array, encoder_valid: Array) -> Array:
    """Decoder-to-encoder mask: [batch, q_len] and [batch, k_len] bool -> [batch, 1, q_len, k_len]."""
    return decoder_valid[:, None, :, None] & encoder_valid[:, None, None, :]


def mask_to_bias(mask: Array, dtype: DType = jnp.float32) -> Array:
    """Boolean mask -> additive attention bias (0 where True, -1e10 where False)."""
    return jnp.where(mask, jnp.asarray(0.0, dtype), jnp.asarray(NEG_INF, dtype))


# ----------------------------------------------------------------------------- attention


class MultiHeadAttention(nn.Module):
    """Dot-product attention with `num_heads` heads of width `head_dim`.

    q/k/v kernels are [embed, heads, kv]; the output kernel is [heads, kv, embed].

    With `decode=True` the layer keeps a 'cache' collection, in one of two forms. Cached keys and values
    are stored length-last, [batch, heads, kv, length] (as T5X does): XLA's attention dots read them in
    that layout, so a decoding step copies nothing (with [batch, length, heads, kv], XLA:CPU transposed
    every cached tensor at every step, half of a small model's step time).
    - self-attention (`static_kv=False`): cached_key, cached_value [batch, heads, kv, max_len].
      The first call, when the cache does not exist yet, must see the full-length input
      [batch, max_len, embed]; it creates the zeroed cache of that length and returns an ordinary
      causal pass (whose output callers ignore). Every later call takes one token [batch, 1, embed] and
      its position `decode_index` (scalar int32, kept by the Decoder), writes its key/value there and
      attends to the cached positions <= decode_index.
    - cross-attention (`static_kv=True`): cross_key, cross_value [batch, heads, kv, enc_len], the
      projections of `inputs_kv` (the encoder output, fixed while decoding). The first call computes
      and stores them; later calls read them and never project `inputs_kv` again. Every row of a beam
      group holds the same values (`CROSS_CACHE_NAMES`: beam search leaves them out of its gather).

    `impl`: 'einsum' computes softmax(q k^T / sqrt(d) + bias) v with XLA einsums (float32 logits);
    'fused' calls jax.nn.dot_product_attention (cuDNN flash attention where the backend has it), except
    with attention dropout, which only the einsum path implements.
    """

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: DType = jnp.float32
    impl: str = "einsum"

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        mask: Array | None = None,
        bias: Array | None = None,
        *,
        enable_dropout: bool = False,
        decode: bool = False,
        decode_index: Array | None = None,
        static_kv: bool = False,
    ) -> Array:
        """inputs_q [batch, q_len, embed], inputs_kv [batch, k_len, embed],
        mask [batch, 1, q_len, k_len] bool or None, bias [1 or batch, heads, q_len, k_len] float (added to
        the logits, e.g. the image relative positions) or None -> [batch, q_len, embed].
        decode / decode_index / static_kv: cached decoding, see the class docstring."""
        projection = functools.partial(
            DenseGeneral,
            features=(self.num_heads, self.head_dim),
            kernel_axes=("embed", "heads", "kv"),
            dtype=self.dtype,
        )
        query = projection(name="query")(inputs_q)  # [batch, q_len, heads, kv]
        if decode and static_kv:
            key, value = self._cross_cache(projection, inputs_kv)
        else:
            key = projection(name="key")(inputs_kv)  # [batch, k_len, heads, kv]
            value = projection(name="value")(inputs_kv)  # [batch, k_len, heads, kv]
        query = with_sharding_constraint(query, ("batch", "length", "heads", "kv"))
        key = with_sharding_constraint(key, ("batch", "length", "heads", "kv"))
        value = with_sharding_constraint(value, ("batch", "length", "heads", "kv"))

        if decode and not static_kv:
            key, value, mask = self._use_cache(key, value, mask, decode_index)

        if self.impl == "fused" and not (enable_dropout and self.dropout_rate > 0):
            out = jax.nn.dot_product_attention(
                query,
                key,
                value,
                bias=None if bias is None else bias.astype(query.dtype),
                mask=mask,
                scale=self.head_dim**-0.5,
            )  # [batch, q_len, heads, kv]
        else:
            out = self._einsum_attention(query, key, value, mask, bias, enable_dropout)
        out = with_sharding_constraint(out, ("batch", "length", "heads", "kv"))
        out = DenseGeneral(
            inputs_q.shape[-1],
            kernel_axes=("heads", "kv", "embed"),
            contract_dims=2,
            dtype=self.dtype,
            name="out",
        )(out)
        if mask is not None:  # a query with no valid key gets exactly zero (see the module docstring)
            has_key = jnp.any(mask, axis=-1)[:, 0, :, None]  # [batch, q_len, 1]
            out = jnp.where(has_key, out, jnp.zeros((), out.dtype))
        return with_sharding_constraint(out, ("batch", "length", "embed"))  # [batch, q_len, embed]

    def _einsum_attention(
        self, query: Array, key: Array, value: Array, mask: Array | None, bias: Array | None, enable_dropout: bool
    ) -> Array:
        """q [b, q, h, d], k and v [b, k, h, d], mask [b, 1, q, k], bias [1 or b, h, q, k] -> [b, q, h, d]."""
        query = query * jnp.asarray(self.head_dim**-0.5, self.dtype)
        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32
        )  # [batch, heads, q_len, k_len]
        if bias is not None:
            bias = bias.astype(jnp.float32)
            logits = add_broadcast(logits, bias) if bias.shape[0] == 1 else logits + bias
        if mask is not None:
            logits = logits + mask_to_bias(mask, jnp.float32)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        # Kept only when the caller asks (`mutable=["intermediates"]`): the evaluation report's attention maps.
        self.sow("intermediates", "attention_weights", probs)  # [batch, heads, q_len, k_len]
        probs = dropout(probs, self.dropout_rate, enable_dropout)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, value)  # [batch, q_len, heads, kv]

    def _cross_cache(self, projection: Callable[..., nn.Module], inputs_kv: Array) -> tuple[Array, Array]:
        """The encoder output's keys and values [batch, enc_len, heads, kv]: projected and stored
        (length-last) on the first decoding call, read back on every later one."""
        key_name, value_name = CROSS_CACHE_NAMES
        if self.has_variable("cache", key_name):
            stored = self.get_variable("cache", key_name), self.get_variable("cache", value_name)
            return tuple(_from_length_last(x) for x in stored)
        key = projection(name="key")(inputs_kv)
        value = projection(name="value")(inputs_kv)
        # The barrier pins the stored tensors as the transposes' own outputs. Without it XLA:CPU's layout
        # assignment made each transpose a free relabelling before a decoding loop and carried the
        # projection's layout through the loop, transposing both tensors back at every step (~2 of a
        # 16 ms step of the benchmark's small model at batch 4).
        stored = jax.lax.optimization_barrier((_to_length_last(key), _to_length_last(value)))
        self.put_variable("cache", key_name, stored[0])
        self.put_variable("cache", value_name, stored[1])
        return key, value

    def _use_cache(
        self, key: Array, value: Array, mask: Array | None, index: Array | None
    ) -> tuple[Array, Array, Array]:
        """Create or advance the key/value cache; returns the keys, values [batch, max_len, heads, kv]
        and the mask to attend with."""
        initialized = self.has_variable("cache", "cached_key")
        batch, length, heads, kv = key.shape
        stored_shape = (batch, heads, kv, length)
        cached_key = self.variable("cache", "cached_key", jnp.zeros, stored_shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, stored_shape, value.dtype)
        if not initialized:
            # Cache creation: a plain causal pass over the full-length input; nothing is decoded.
            causal = decoder_causal_mask(jnp.zeros((batch, length), jnp.int32))
            return key, value, causal if mask is None else mask & causal

        if length != 1:
            raise ValueError(f"Cached decoding takes one token per call, got {length}")
        if index is None:
            raise ValueError("Cached decoding needs decode_index (the position of the token)")
        cached_key.value = jax.lax.dynamic_update_slice(
            cached_key.value, _to_length_last(key).astype(cached_key.value.dtype), (0, 0, 0, index)
        )  # [batch, heads, kv, max_len]
        cached_value.value = jax.lax.dynamic_update_slice(
            cached_value.value, _to_length_last(value).astype(cached_value.value.dtype), (0, 0, 0, index)
        )
        max_len = cached_key.value.shape[-1]
        seen = jnp.arange(max_len) <= index  # [max_len]: positions written so far
        step_mask = jnp.broadcast_to(seen[None, None, None, :], (batch, 1, 1, max_len))
        keys, values = _from_length_last(cached_key.value), _from_length_last(cached_value.value)
        return keys, values, step_mask if mask is None else mask & step_mask


def _to_length_last(x: Array) -> Array:
    """[batch, length, heads, kv] -> [batch, heads, kv, length] (the cache's layout)."""
    return jnp.transpose(x, (0, 2, 3, 1))


def _from_length_last(x: Array) -> Array:
    """[batch, heads, kv, length] -> [batch, length, heads, kv]; XLA folds this into the dots that read it."""
    return jnp.transpose(x, (0, 3, 1, 2))
