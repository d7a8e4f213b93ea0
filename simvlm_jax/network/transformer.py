"""Pre-LayerNorm Transformer encoder and decoder stacks.

Encoder layer:  x += drop(SelfAttn(LN(x), mask));  x += drop(MLP(LN(x)))
Decoder layer:  x += drop(CausalSelfAttn(LN(x)));  x += drop(CrossAttn(LN(x), encoded));
                x += drop(MLP(LN(x)))
Both stacks end with a final LayerNorm and dropout. The decoder embeds its own tokens with the shared
token table, adds a learned position embedding and turns its output into logits with the same table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from simvlm_jax.network.attention import MultiHeadAttention, cross_mask, decoder_causal_mask
from simvlm_jax.network.configs import SimVLMConfig
from simvlm_jax.network.layers import Embed, LayerNorm, MlpBlock, dropout, with_sharding_constraint

Array = jax.Array

_ACTIVATION_AXES = ("batch", "length", "embed")


def _attention(cfg: SimVLMConfig, name: str) -> MultiHeadAttention:
    return MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        dropout_rate=cfg.dropout_rate,
        dtype=jnp.dtype(cfg.dtype),
        name=name,
    )


def _mlp(cfg: SimVLMConfig) -> MlpBlock:
    return MlpBlock(
        mlp_dim=cfg.mlp_dim,
        activation=cfg.mlp_activation,
        dropout_rate=cfg.dropout_rate,
        dtype=jnp.dtype(cfg.dtype),
        name="mlp",
    )


def _norm(cfg: SimVLMConfig, name: str) -> LayerNorm:
    return LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=jnp.dtype(cfg.dtype), name=name)


class EncoderLayer(nn.Module):
    """One bidirectional layer: [batch, len, embed] -> [batch, len, embed]."""

    config: SimVLMConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, enable_dropout: bool = False) -> Array:
        """mask: [batch, 1, len, len] bool (encoder_self_mask)."""
        cfg = self.config
        h = _norm(cfg, "pre_attention_layer_norm")(x)
        h = _attention(cfg, "attention")(h, h, mask, enable_dropout=enable_dropout)
        x = x + dropout(h, cfg.dropout_rate, enable_dropout)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, enable_dropout=enable_dropout)
        x = x + dropout(h, cfg.dropout_rate, enable_dropout)
        return with_sharding_constraint(x, _ACTIVATION_AXES)


class DecoderLayer(nn.Module):
    """One causal layer with cross-attention: [batch, dec_len, embed] -> [batch, dec_len, embed]."""

    config: SimVLMConfig

    @nn.compact
    def __call__(
        self,
        x: Array,
        encoded: Array,
        self_mask: Array | None,
        enc_dec_mask: Array,
        enable_dropout: bool = False,
        decode: bool = False,
    ) -> Array:
        """encoded [batch, enc_len, embed]; self_mask [batch, 1, dec_len, dec_len] or None (decode);
        enc_dec_mask [batch, 1, dec_len, enc_len]."""
        cfg = self.config
        h = _norm(cfg, "pre_self_attention_layer_norm")(x)
        h = _attention(cfg, "self_attention")(
            h, h, self_mask, enable_dropout=enable_dropout, decode=decode
        )
        x = x + dropout(h, cfg.dropout_rate, enable_dropout)
        h = _norm(cfg, "pre_cross_attention_layer_norm")(x)
        h = _attention(cfg, "encoder_decoder_attention")(
            h, encoded, enc_dec_mask, enable_dropout=enable_dropout
        )
        x = x + dropout(h, cfg.dropout_rate, enable_dropout)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, enable_dropout=enable_dropout)
        x = x + dropout(h, cfg.dropout_rate, enable_dropout)
        return with_sharding_constraint(x, _ACTIVATION_AXES)


class Encoder(nn.Module):
    """The encoder stack over already-embedded inputs (image tokens followed by the text prefix)."""

    config: SimVLMConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, enable_dropout: bool = False) -> Array:
        """x [batch, len, embed], mask [batch, 1, len, len] -> [batch, len, embed]."""
        cfg = self.config
        x = dropout(x, cfg.dropout_rate, enable_dropout)
        x = with_sharding_constraint(jnp.asarray(x, jnp.dtype(cfg.dtype)), _ACTIVATION_AXES)
        for i in range(cfg.num_encoder_layers):
            x = EncoderLayer(cfg, name=f"layers_{i}")(x, mask, enable_dropout)
        x = _norm(cfg, "encoder_norm")(x)
        return dropout(x, cfg.dropout_rate, enable_dropout)


class Decoder(nn.Module):
    """Token ids -> logits, attending causally to itself and fully to the encoder output.

    Attributes:
      config: the network config.
      shared_embedding: the token table shared with the encoder (owned by the parent module).
    """

    config: SimVLMConfig
    shared_embedding: Embed

    @nn.compact
    def __call__(
        self,
        encoded: Array,
        encoder_mask: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        decoder_positions: Array | None = None,
        enable_dropout: bool = False,
        decode: bool = False,
    ) -> Array:
        """encoded [batch, enc_len, embed], encoder_mask [batch, enc_len] bool,
        decoder_input_tokens [batch, dec_len] -> logits [batch, dec_len, vocab] float32.

        decode=True: see MultiHeadAttention. The first call (no cache yet) creates the cache from the
        full-length input; later calls take one token [batch, 1]. Its position is
        `decoder_positions` [batch, 1] when given, else the number of tokens decoded so far (kept in
        the decoder's 'cache' variable `cache_index`; named like the attention indices so that
        decoding code that treats `cache_index` leaves as scalars, e.g. T5X's `cache_map`, skips it).
        """
        cfg = self.config
        batch, length = decoder_input_tokens.shape
        positions = self._positions(batch, length, decoder_positions, decode)  # [batch, dec_len]
        position_table = Embed(
            cfg.max_text_length,
            cfg.emb_dim,
            axes=("text_positions", "embed"),
            dtype=jnp.dtype(cfg.dtype),
            embedding_init=nn.initializers.normal(stddev=0.02),
            name="position_embedding",
        )
        x = self.shared_embedding(decoder_input_tokens) + position_table(positions)
        x = dropout(x, cfg.dropout_rate, enable_dropout)
        x = with_sharding_constraint(x, _ACTIVATION_AXES)  # [batch, dec_len, embed]

        if decode:
            # Generated tokens are never padding: causal attention only (built inside the attention
            # from the cache index), and every query may look at every valid encoder token.
            self_mask = None
            decoder_valid = jnp.ones((batch, length), bool)
        else:
            self_mask = decoder_causal_mask(decoder_input_tokens, decoder_target_tokens)
            decoder_valid = (
                jnp.ones((batch, length), bool)
                if decoder_target_tokens is None
                else decoder_target_tokens > 0
            )
        enc_dec_mask = cross_mask(decoder_valid, encoder_mask)  # [batch, 1, dec_len, enc_len]

        for i in range(cfg.num_decoder_layers):
            x = DecoderLayer(cfg, name=f"layers_{i}")(
                x, encoded, self_mask, enc_dec_mask, enable_dropout, decode
            )
        x = _norm(cfg, "decoder_norm")(x)
        x = dropout(x, cfg.dropout_rate, enable_dropout)
        # Logits through the shared table, scaled by emb_dim**-0.5 as in T5 (the table has unit variance).
        logits = self.shared_embedding.attend(x).astype(jnp.float32) * cfg.emb_dim**-0.5
        return with_sharding_constraint(logits, ("batch", "length", "vocab"))  # [batch, dec_len, vocab]

    def _positions(
        self, batch: int, length: int, decoder_positions: Array | None, decode: bool
    ) -> Array:
        """Position ids [batch, length] used to read the decoder position table."""
        if decode:
            initialized = self.has_variable("cache", "cache_index")
            index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            if initialized:
                if decoder_positions is None:
                    decoder_positions = jnp.full((batch, length), index.value, jnp.int32)
                index.value = index.value + length
        if decoder_positions is None:
            decoder_positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        return decoder_positions
