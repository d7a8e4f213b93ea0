"""SimVLMNetwork: conv stem + bidirectional encoder over [image tokens ; text prefix] + causal decoder.

Data flow (B = batch, N = images per example, T = image tokens per image, L = text-prefix length):

  encoder_image [B, N, H, W, C] --stem--> [B*N, h, w, C_stem] --flatten, Dense--> [B*N, T, D]
      + image position embedding (bilinearly resized when h, w differ from config.image_size's grid)
      + image-index embedding row n (only when max_images > 1)  --> [B, N*T, D]
  encoder_input_tokens [B, L] --shared table--> [B, L, D] + text position embedding
  encoder input = concat --> [B, N*T + L, D], full attention among valid tokens --> encoded

  decoder_input_tokens [B, L_dec] --shared table + positions--> causal self-attention, cross-attention
      to `encoded` --> final LayerNorm --> @ table^T * D**-0.5 --> logits [B, L_dec, vocab] float32

With config.decoder_only (the architecture ablation, network/decoder_only.py) `encode` stops after the
embeddings and `decode` runs one prefix-LM stack over [those embeddings ; decoder inputs].

The network is built in setup() so that `encode` and `decode` can be called on their own with
`module.apply(variables, ..., method=SimVLMNetwork.encode)`. Initialise with `__call__` so that every
parameter exists.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from simvlm_jax.network.attention import encoder_self_mask, encoder_valid_mask
from simvlm_jax.network.configs import SimVLMConfig
from simvlm_jax.network.conv_stem import ConvStem
from simvlm_jax.network.decoder_only import PrefixDecoderStack
from simvlm_jax.network.layers import DenseGeneral, Embed, with_sharding_constraint
from simvlm_jax.network.transformer import Decoder, Encoder

Array = jax.Array


class SimVLMNetwork(nn.Module):
    """The SimVLM encoder-decoder (see the module docstring for shapes)."""

    config: SimVLMConfig

    def setup(self) -> None:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        small_init = nn.initializers.normal(stddev=0.02)
        # One token table for encoder inputs, decoder inputs and the output logits.
        self.shared_embedding = Embed(
            cfg.vocab_size,
            cfg.emb_dim,
            axes=("vocab", "embed"),
            dtype=dtype,
            embedding_init=nn.initializers.normal(stddev=1.0),
        )
        self.image_stem = ConvStem(cfg)
        if cfg.num_conv_blocks > 0:  # the patch conv of a 0-block stem already outputs emb_dim
            self.image_projection = DenseGeneral(cfg.emb_dim, ("conv_out", "embed"), dtype=dtype)
        self.image_position_embedding = Embed(
            cfg.num_image_tokens,
            cfg.emb_dim,
            axes=("image_positions", "embed"),
            dtype=dtype,
            embedding_init=small_init,
        )
        if cfg.max_images > 1:
            self.image_index_embedding = Embed(
                cfg.max_images,
                cfg.emb_dim,
                axes=("image_index", "embed"),
                dtype=dtype,
                embedding_init=small_init,
            )
        self.text_position_embedding = Embed(
            cfg.max_text_length,
            cfg.emb_dim,
            axes=("text_positions", "embed"),
            dtype=dtype,
            embedding_init=small_init,
        )
        if cfg.decoder_only:
            layout = (*cfg.image_grid(), cfg.max_images)
            self.decoder = PrefixDecoderStack(cfg, shared_embedding=self.shared_embedding, image_layout=layout)
        else:
            self.encoder = Encoder(cfg)
            self.decoder = Decoder(cfg, shared_embedding=self.shared_embedding)

    # ------------------------------------------------------------------ image tokens

    def _image_positions(self, grid_h: int, grid_w: int) -> Array:
        """Image position table for a grid_h x grid_w grid: [grid_h * grid_w, embed].

        The parameter is laid out for config.image_size's grid; another grid (e.g. higher-resolution
        fine-tuning) gets the table bilinearly resized as a 2D image.
        """
        table = self.image_position_embedding.embedding  # [param_h * param_w, embed] float32
        param_h, param_w = self.config.image_grid()
        if (grid_h, grid_w) != (param_h, param_w):
            table = table.reshape(param_h, param_w, -1)
            table = jax.image.resize(table, (grid_h, grid_w, table.shape[-1]), method="bilinear")
            table = table.reshape(grid_h * grid_w, -1)
        return jnp.asarray(table, jnp.dtype(self.config.dtype))

    def embed_images(self, images: Array, enable_dropout: bool = False) -> tuple[Array, tuple[int, int]]:
        """images [B, N, H, W, C] -> (image tokens [B, N * T, embed], the feature grid (h, w), T = h * w);
        enable_dropout turns on the stem's stochastic depth."""
        cfg = self.config
        batch, num_images, height, width, channels = images.shape
        features = self.image_stem(images.reshape(batch * num_images, height, width, channels), enable_dropout)
        _, grid_h, grid_w, stem_features = features.shape  # [B*N, h, w, C_stem]
        tokens = features.reshape(batch * num_images, grid_h * grid_w, stem_features)
        if cfg.num_conv_blocks > 0:
            tokens = self.image_projection(tokens)  # [B*N, T, embed]
        tokens = tokens + self._image_positions(grid_h, grid_w)[None]
        tokens = tokens.reshape(batch, num_images, grid_h * grid_w, cfg.emb_dim)
        if cfg.max_images > 1:
            index = self.image_index_embedding(jnp.arange(num_images))  # [N, embed]
            tokens = tokens + index[None, :, None, :]
        tokens = tokens.reshape(batch, num_images * grid_h * grid_w, cfg.emb_dim)
        return with_sharding_constraint(tokens, ("batch", "length", "embed")), (grid_h, grid_w)

    # ------------------------------------------------------------------ public API

    def encode(
        self,
        encoder_image: Array,
        encoder_image_mask: Array,
        encoder_input_tokens: Array,
        enable_dropout: bool = False,
    ) -> tuple[Array, Array]:
        """Encode the images and the text prefix.

        Args:
          encoder_image: [B, H, W, C] (one image) or [B, N, H, W, C] float pixels.
          encoder_image_mask: [B] or [B, N] bool/float, 1 = image present, 0 = absent (a text-only
            example: its image tokens are masked out of every attention; pass zeros as its pixels).
          encoder_input_tokens: [B, L_enc] int text prefix, 0 = padding.
          enable_dropout: apply dropout (needs a 'dropout' rng).

        Returns:
          (encoded [B, T_img + L_enc, D], encoder_mask [B, T_img + L_enc] bool valid-token mask),
          where T_img = N * config.image_grid(H, W) tokens.
        """
        cfg = self.config
        images = jnp.asarray(encoder_image)
        if images.ndim == 4:
            images = images[:, None]  # [B, 1, H, W, C]
        if images.ndim != 5:
            raise ValueError(f"encoder_image must be [B, H, W, C] or [B, N, H, W, C], got {images.shape}")
        batch, num_images = images.shape[:2]
        if num_images > cfg.max_images:
            raise ValueError(f"{num_images} images per example but config.max_images={cfg.max_images}")
        image_present = jnp.asarray(encoder_image_mask)
        if image_present.ndim == 1:
            image_present = image_present[:, None]
        if image_present.shape != (batch, num_images):
            raise ValueError(
                f"encoder_image_mask shape {jnp.shape(encoder_image_mask)} does not match "
                f"{num_images} image(s) for batch {batch}"
            )
        text_length = encoder_input_tokens.shape[1]
        if text_length > cfg.max_text_length:
            raise ValueError(f"text prefix length {text_length} > max_text_length {cfg.max_text_length}")

        image_tokens, grid = self.embed_images(images, enable_dropout)  # [B, N*T, D], (h, w)
        tokens_per_image = image_tokens.shape[1] // num_images
        text_tokens = (
            self.shared_embedding(encoder_input_tokens) + self.text_position_embedding(jnp.arange(text_length))[None]
        )  # [B, L_enc, D]
        x = jnp.concatenate([image_tokens, text_tokens], axis=1)  # [B, N*T + L_enc, D]
        encoder_mask = encoder_valid_mask(image_present, tokens_per_image, encoder_input_tokens)
        if cfg.decoder_only:  # the prefix's layers are the decoder's own (decode runs them)
            if (*grid, num_images) != (*cfg.image_grid(), cfg.max_images):
                raise ValueError(
                    f"decoder_only needs {cfg.max_images} image(s) of {cfg.image_size}x{cfg.image_size} pixels "
                    f"per example (grid {cfg.image_grid()}), got {num_images} with grid {grid}"
                )
            return x, encoder_mask
        encoded = self.encoder(x, encoder_self_mask(encoder_mask), (*grid, num_images), enable_dropout)
        return encoded, encoder_mask

    def decode(
        self,
        encoded: Array,
        encoder_mask: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        decoder_positions: Array | None = None,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        """Decoder logits.

        Args:
          encoded: [B, L_e, D] from `encode` (decoder_only: the embedded prefix).
          encoder_mask: [B, L_e] bool from `encode`.
          decoder_input_tokens: [B, L_dec] int, targets shifted right with start id 0 at position 0.
          decoder_target_tokens: [B, L_dec] int or None; > 0 marks valid positions (T5X convention).
          decoder_positions: [B, L_dec] int rows of the position table; None = arange, or in cached
            decoding the number of tokens decoded so far.
          enable_dropout: apply dropout (needs a 'dropout' rng).
          decode: cached autoregressive decoding. The first call (no 'cache' yet, made with
            mutable=['cache'] and the full-length input [B, max_decode_length]) creates the cache;
            later calls take one token [B, 1].
          max_decode_length: only checked against max_text_length; the cache length is the length
            of the input that created it.

        Returns:
          logits [B, L_dec, vocab] float32.
        """
        limit = self.config.max_text_length
        length = decoder_input_tokens.shape[1] if max_decode_length is None else max_decode_length
        if length > limit:
            raise ValueError(f"decoder length {length} > max_text_length {limit}")
        if self.config.decoder_only:  # positions are implicit: the stack keeps its own step count
            return self.decoder(
                encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens, enable_dropout, decode
            )
        return self.decoder(
            encoded,
            encoder_mask,
            decoder_input_tokens,
            decoder_target_tokens,
            decoder_positions,
            enable_dropout,
            decode,
        )

    def __call__(
        self,
        encoder_image: Array,
        encoder_image_mask: Array,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        """encode + decode: logits [B, L_dec, vocab] float32 (arguments as in encode and decode)."""
        encoded, encoder_mask = self.encode(encoder_image, encoder_image_mask, encoder_input_tokens, enable_dropout)
        return self.decode(
            encoded,
            encoder_mask,
            decoder_input_tokens,
            decoder_target_tokens,
            enable_dropout=enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )
