"""The decoder-only variant (the paper's architecture ablation): one stack over [image ; prefix ; targets].

With `SimVLMConfig.decoder_only=True`, `SimVLMNetwork.encode` only embeds the image and the text prefix
(no layers run), and `SimVLMNetwork.decode` hands those embeddings to `PrefixDecoderStack`, which appends
the embedded decoder inputs and runs num_encoder_layers + num_decoder_layers self-attention layers (the
encoder's layer, 2D relative positions among image patches included) under a prefix-LM mask:

  query \\ key     prefix (image + text)     targets
  prefix          valid keys                 none
  target t        valid keys                 targets <= t

so the prefix is read bidirectionally, exactly as by an encoder, and each target sees the whole prefix and
the targets before it. There is no cross-attention; at equal depth the stack has the encoder-decoder's
layer count and about 1/3 fewer decoder parameters (no cross-attention projections).

Cached decoding keeps the generated tokens, not keys and values: 'cache' holds `decoded_tokens`
[batch, max_len] and `cache_index`; each step writes its token and reruns the stack over the prefix and
the tokens so far (cost per token: one forward pass over T_enc + max_len positions). That is slower than
the encoder-decoder's key/value cache, and fine for an ablation at the sizes it is run at.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from simvlm_jax.network.configs import SimVLMConfig
from simvlm_jax.network.layers import Embed, dropout, with_sharding_constraint
from simvlm_jax.network.relative_position import bucket_index
from simvlm_jax.network.transformer import EncoderLayer, decoder_position_table, layer_stack, norm

Array = jax.Array


def prefix_lm_mask(prefix_valid: Array, target_valid: Array) -> Array:
    """prefix_valid [B, P], target_valid [B, L] bool -> mask [B, 1, P + L, P + L] (see the module docstring)."""
    prefix_length, target_length = prefix_valid.shape[1], target_valid.shape[1]
    valid = jnp.concatenate([prefix_valid, target_valid], axis=1)  # [B, P + L]
    position = jnp.arange(prefix_length + target_length)
    key_is_prefix = position[None, :] < prefix_length  # [1, P + L] over keys
    query_is_target = position[:, None] >= prefix_length  # [P + L, 1] over queries
    causal = position[None, :] <= position[:, None]
    allowed = key_is_prefix | (query_is_target & causal)  # [P + L, P + L]
    return (valid[:, :, None] & valid[:, None, :] & allowed[None])[:, None]


class PrefixDecoderStack(nn.Module):
    """[embedded prefix ; decoder input tokens] -> logits of the decoder positions.

    Attributes:
      config: the network config (decoder_only=True).
      shared_embedding: the token table shared with the prefix embedding and the output logits.
      image_layout: (grid_h, grid_w, num_images) of the image tokens at the start of the prefix.
    """

    config: SimVLMConfig
    shared_embedding: Embed
    image_layout: tuple[int, int, int]

    @nn.compact
    def __call__(
        self,
        prefix: Array,
        prefix_valid: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        enable_dropout: bool = False,
        decode: bool = False,
    ) -> Array:
        """prefix [B, P, D] (embedded, no layers run), prefix_valid [B, P] bool, decoder_input_tokens
        [B, L] -> logits [B, L, vocab] float32 ([B, 1, vocab] for a cached decoding step)."""
        cfg = self.config
        step_index = None
        if decode:
            decoder_input_tokens, step_index = self._decoded_tokens(decoder_input_tokens)
        batch, length = decoder_input_tokens.shape
        positions = decoder_position_table(cfg)(jnp.arange(length))
        targets = self.shared_embedding(decoder_input_tokens) + positions[None]  # [B, L, D]
        x = jnp.concatenate([prefix.astype(targets.dtype), targets], axis=1)  # [B, P + L, D]
        x = dropout(x, cfg.dropout_rate, enable_dropout)
        x = with_sharding_constraint(x, ("batch", "length", "embed"))
        target_valid = jnp.ones((batch, length), bool) if decoder_target_tokens is None else decoder_target_tokens > 0
        mask = prefix_lm_mask(prefix_valid, target_valid)
        relpos_index = None
        if cfg.image_relative_position:
            grid_h, grid_w, num_images = self.image_layout
            text_length = x.shape[1] - num_images * grid_h * grid_w
            relpos_index = bucket_index((grid_h, grid_w), num_images, text_length, cfg.image_grid())
        num_layers = cfg.num_encoder_layers + cfg.num_decoder_layers
        layer = layer_stack(cfg, EncoderLayer, num_layers)
        if cfg.scan_layers:
            x, _ = layer(cfg, name="layers")(x, mask, relpos_index, enable_dropout)
        else:
            for i in range(num_layers):
                x = layer(cfg, name=f"layers_{i}")(x, mask, relpos_index, enable_dropout)
        x = norm(cfg, "decoder_norm")(x[:, prefix.shape[1] :])  # [B, L, D]
        x = dropout(x, cfg.dropout_rate, enable_dropout)
        if step_index is not None:
            x = jax.lax.dynamic_slice_in_dim(x, step_index, 1, axis=1)  # [B, 1, D]
        logits = self.shared_embedding.attend(x * cfg.emb_dim**-0.5).astype(jnp.float32)
        return with_sharding_constraint(logits, ("batch", "length", "vocab"))

    def _decoded_tokens(self, tokens: Array) -> tuple[Array, Array | None]:
        """Cached decoding: the first call (full length [B, max_len]) creates the token buffer and runs
        an ordinary pass; later calls take [B, 1], write it at `cache_index` and return the buffer and
        that index."""
        initialized = self.has_variable("cache", "decoded_tokens")
        buffer = self.variable("cache", "decoded_tokens", jnp.zeros, tokens.shape, jnp.int32)
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialized:
            return tokens, None
        if tokens.shape[1] != 1:
            raise ValueError(f"Cached decoding takes one token per call, got {tokens.shape[1]}")
        step = index.value
        buffer.value = jax.lax.dynamic_update_slice(buffer.value, tokens.astype(jnp.int32), (0, step))
        index.value = step + 1
        return buffer.value, step
