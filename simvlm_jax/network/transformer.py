"""Pre-LayerNorm Transformer encoder and decoder stacks.

Encoder layer:  x += drop(SelfAttn(LN(x), mask));  x += drop(MLP(LN(x)))
Decoder layer:  x += drop(CausalSelfAttn(LN(x)));  x += drop(CrossAttn(LN(x), encoded));
                x += drop(MLP(LN(x)))
Both stacks end with a final LayerNorm and dropout. The decoder embeds its own tokens with the shared
token table, adds a learned position embedding and turns its output into logits with the same table.

Layers are either unrolled (parameters under layers_0 .. layers_{n-1}) or, with config.scan_layers,
one `nn.scan` over a layer body whose parameters are stacked on a leading `layers` axis (under
`layers`; `stack_layer_params` converts the first layout into the second). config.remat_policy wraps
each layer in `nn.remat`. Scanned decoding caches are [batch, layers, max_len, heads, kv], keeping
the batch axis first for the beam-search helpers.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning

from simvlm_jax.network.attention import MultiHeadAttention, cross_mask, decoder_causal_mask
from simvlm_jax.network.configs import SimVLMConfig
from simvlm_jax.network.layers import Embed, LayerNorm, MlpBlock, drop_path, dropout, with_sharding_constraint
from simvlm_jax.network.relative_position import ImageRelativePositionBias, bucket_index

Array = jax.Array

_ACTIVATION_AXES = ("batch", "length", "embed")


_REMAT_POLICIES = {
    "full": None,  # save nothing but the layer inputs
    "dots": jax.checkpoint_policies.checkpoint_dots,  # save matmul outputs
}


def _attention(cfg: SimVLMConfig, name: str) -> MultiHeadAttention:
    return MultiHeadAttention(
        num_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        dropout_rate=cfg.dropout_rate,
        dtype=jnp.dtype(cfg.dtype),
        impl=cfg.attention_impl,
        name=name,
    )


def _call_arguments(layer_cls: type) -> tuple[int, tuple[int, ...]]:
    """(arguments of `layer_cls.__call__` after x, positions of its Python-bool flags counted with self = 0
    and x = 1, as nn.remat's static_argnums expects), read from the signature."""
    parameters = list(inspect.signature(layer_cls.__call__).parameters.values())
    flags = tuple(i for i, p in enumerate(parameters) if p.annotation in (bool, "bool"))
    return len(parameters) - 2, flags


def layer_stack(cfg: SimVLMConfig, layer_cls: type, num_layers: int):
    """The layer class to instantiate: `layer_cls` wrapped in nn.remat (its bool flags static) and/or
    scanned over layers (every argument after x broadcast to each layer)."""
    num_args, static_argnums = _call_arguments(layer_cls)
    if cfg.remat_policy != "none":
        layer_cls = nn.remat(
            layer_cls,
            policy=_REMAT_POLICIES[cfg.remat_policy],
            prevent_cse=not cfg.scan_layers,  # scan already keeps XLA from merging recomputation
            static_argnums=static_argnums,
        )
    if cfg.scan_layers:
        layer_cls = nn_partitioning.scan_with_axes(
            layer_cls,
            variable_axes={"params": 0, "cache": 1},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * num_args,
            length=num_layers,
            axis_name="layers",
        )
    return layer_cls


def stack_layer_params(stack_params: dict, num_layers: int) -> dict:
    """Unrolled stack params {layers_0: t0, ..., layers_{n-1}: t_{n-1}, ...} -> scanned layout
    {layers: tree of [n, ...] arrays, ...} (other entries, e.g. the final norm, are kept)."""
    names = [f"layers_{i}" for i in range(num_layers)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(stack_params[n] for n in names))
    rest = {k: v for k, v in stack_params.items() if k not in names}
    return {**rest, "layers": stacked}


def decoder_position_table(cfg: SimVLMConfig) -> Embed:
    """The decoder's learned position table [max_text_length, embed] (module name `position_embedding`)."""
    return Embed(
        cfg.max_text_length,
        cfg.emb_dim,
        axes=("text_positions", "embed"),
        dtype=jnp.dtype(cfg.dtype),
        embedding_init=nn.initializers.normal(stddev=0.02),
        name="position_embedding",
    )


def _mlp(cfg: SimVLMConfig) -> MlpBlock:
    return MlpBlock(
        mlp_dim=cfg.mlp_dim,
        activation=cfg.mlp_activation,
        dropout_rate=cfg.dropout_rate,
        dtype=jnp.dtype(cfg.dtype),
        name="mlp",
    )


def norm(cfg: SimVLMConfig, name: str) -> LayerNorm:
    return LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=jnp.dtype(cfg.dtype), name=name)


class EncoderLayer(nn.Module):
    """One bidirectional layer: [batch, len, embed] -> [batch, len, embed]."""

    config: SimVLMConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, relpos_index: Array | None, enable_dropout: bool = False):
        """mask: [batch, 1, len, len] bool (encoder_self_mask); relpos_index: [len, len] int32 image
        relative-position buckets (`relative_position.bucket_index`), or None when the config has no such
        term. Returns x, or (x, None) when scanned."""
        cfg = self.config
        bias = None
        if cfg.image_relative_position:
            bias = ImageRelativePositionBias(cfg.num_heads, cfg.image_grid(), name="image_relative_position")(
                relpos_index
            )
        depth_rate = cfg.stochastic_depth_rate
        h = norm(cfg, "pre_attention_layer_norm")(x)
        h = _attention(cfg, "attention")(h, h, mask, bias, enable_dropout=enable_dropout)
        x = x + drop_path(dropout(h, cfg.dropout_rate, enable_dropout), depth_rate, enable_dropout)
        h = norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, enable_dropout=enable_dropout)
        x = x + drop_path(dropout(h, cfg.dropout_rate, enable_dropout), depth_rate, enable_dropout)
        x = with_sharding_constraint(x, _ACTIVATION_AXES)
        return (x, None) if cfg.scan_layers else x


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
        decode_index: Array | None = None,
    ):
        """encoded [batch, enc_len, embed]; self_mask [batch, 1, dec_len, dec_len] or None (decode);
        enc_dec_mask [batch, 1, dec_len, enc_len]; decode_index: the decoded token's position (scalar).
        Returns x, or (x, None) when scanned."""
        cfg = self.config
        h = norm(cfg, "pre_self_attention_layer_norm")(x)
        h = _attention(cfg, "self_attention")(
            h, h, self_mask, enable_dropout=enable_dropout, decode=decode, decode_index=decode_index
        )
        x = x + dropout(h, cfg.dropout_rate, enable_dropout)
        h = norm(cfg, "pre_cross_attention_layer_norm")(x)
        h = _attention(cfg, "encoder_decoder_attention")(
            h, encoded, enc_dec_mask, enable_dropout=enable_dropout, decode=decode, static_kv=True
        )
        x = x + dropout(h, cfg.dropout_rate, enable_dropout)
        h = norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, enable_dropout=enable_dropout)
        x = x + dropout(h, cfg.dropout_rate, enable_dropout)
        x = with_sharding_constraint(x, _ACTIVATION_AXES)
        return (x, None) if cfg.scan_layers else x


class Encoder(nn.Module):
    """The encoder stack over already-embedded inputs (image tokens followed by the text prefix)."""

    config: SimVLMConfig

    @nn.compact
    def __call__(
        self, x: Array, mask: Array, image_layout: tuple[int, int, int] = (0, 0, 0), enable_dropout: bool = False
    ) -> Array:
        """x [batch, len, embed], mask [batch, 1, len, len] -> [batch, len, embed]. `image_layout` is
        (grid_h, grid_w, num_images) of the image tokens at the start of x (for the relative positions)."""
        cfg = self.config
        x = dropout(x, cfg.dropout_rate, enable_dropout)
        x = with_sharding_constraint(jnp.asarray(x, jnp.dtype(cfg.dtype)), _ACTIVATION_AXES)
        relpos_index = None
        if cfg.image_relative_position:
            grid_h, grid_w, num_images = image_layout
            text_length = x.shape[1] - num_images * grid_h * grid_w
            relpos_index = bucket_index((grid_h, grid_w), num_images, text_length, cfg.image_grid())
        layer = layer_stack(cfg, EncoderLayer, cfg.num_encoder_layers)
        if cfg.scan_layers:
            x, _ = layer(cfg, name="layers")(x, mask, relpos_index, enable_dropout)
        else:
            for i in range(cfg.num_encoder_layers):
                x = layer(cfg, name=f"layers_{i}")(x, mask, relpos_index, enable_dropout)
        x = norm(cfg, "encoder_norm")(x)
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
        the decoder's 'cache' variable `cache_index`, which also tells every layer where to write the
        new key and value; a scalar, as T5X's `cache_map` expects of leaves named `cache_index`).
        """
        cfg = self.config
        batch, length = decoder_input_tokens.shape
        positions, decode_index = self._positions(batch, length, decoder_positions, decode)
        x = self.shared_embedding(decoder_input_tokens) + decoder_position_table(cfg)(positions)
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
                jnp.ones((batch, length), bool) if decoder_target_tokens is None else decoder_target_tokens > 0
            )
        enc_dec_mask = cross_mask(decoder_valid, encoder_mask)  # [batch, 1, dec_len, enc_len]

        layer = layer_stack(cfg, DecoderLayer, cfg.num_decoder_layers)
        args = (encoded, self_mask, enc_dec_mask, enable_dropout, decode, decode_index)
        if cfg.scan_layers:
            x, _ = layer(cfg, name="layers")(x, *args)
        else:
            for i in range(cfg.num_decoder_layers):
                x = layer(cfg, name=f"layers_{i}")(x, *args)
        x = norm(cfg, "decoder_norm")(x)
        x = dropout(x, cfg.dropout_rate, enable_dropout)
        # Logits through the shared table, scaled by emb_dim**-0.5 as in T5 (the table has unit variance);
        # the scale goes on the [B, L, D] input, not on the [B, L, vocab] logits: one small pass, not two large.
        # Decoding on CPU reads a transposed copy of the table (Embed.attend); GPUs and TPUs read it as it is.
        transposed_copy = decode and jax.default_backend() == "cpu"
        logits = self.shared_embedding.attend(x * cfg.emb_dim**-0.5, transposed_copy).astype(jnp.float32)
        return with_sharding_constraint(logits, ("batch", "length", "vocab"))  # [batch, dec_len, vocab]

    def _positions(
        self, batch: int, length: int, decoder_positions: Array | None, decode: bool
    ) -> tuple[Array, Array | None]:
        """Position ids [batch, length] used to read the decoder position table, and in cached
        decoding the step count before this call (scalar int32: where the layers write the new
        keys and values), else None."""
        decode_index = None
        if decode:
            initialized = self.has_variable("cache", "cache_index")
            index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            if initialized:
                decode_index = index.value
                if decoder_positions is None:
                    decoder_positions = jnp.full((batch, length), decode_index, jnp.int32)
                index.value = decode_index + length
        if decoder_positions is None:
            decoder_positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        return decoder_positions, decode_index
