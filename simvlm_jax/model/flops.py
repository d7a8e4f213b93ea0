"""Analytic FLOP count of one SimVLM training step (matmuls and convolutions only).

A multiply-add is 2 FLOPs. For one example with encoder length Le = T_img + L_enc (T_img image
tokens), decoder length Ld, width D, attention width A = heads * head_dim, MLP width M, vocabulary V:

  encoder layer      2*Le*D*3A (q, k, v) + 2*Le*A*D (out) + 2*2*Le*Le*A (scores, values) + 2*2*Le*D*M (MLP)
  decoder layer      self-attention   2*Ld*D*3A + 2*Ld*A*D + 2*2*Ld*Ld*A
                     cross-attention  2*Ld*D*A (q) + 2*Le*D*2A (k, v) + 2*Ld*A*D (out) + 2*2*Ld*Le*A
                     MLP              2*2*Ld*D*M
  logits             2*Ld*D*V (tied embedding)
  image projection   2*T_img*C_stem*D (conv stems only)
  conv stem          sum over convolutions of 2*h_out*w_out*k*k*C_in*C_out (ViT stem: the patch conv)

Attention counts the full score matrices: the causal and padding masks are applied as biases, so
masked entries are computed too. Training is 3x the forward pass (the backward pass computes the
gradients of both the inputs and the weights of every matmul), except the first convolution on the
pixels, which needs no input gradient: 2x. Norms, softmax, activations, the optimizer and embedding
look-ups are left out (they are O(D) per token, well under 1% for the sizes benchmarked).
"""

from __future__ import annotations

import dataclasses
import math

from simvlm_jax.network.configs import SimVLMConfig


@dataclasses.dataclass(frozen=True)
class StepFlops:
    """Forward FLOPs of one example by part; `train` is the whole training step of one example."""

    conv_stem: float  # the first conv (root or patch) and the bottleneck convs
    first_conv: float  # of which the conv on the pixels (its backward is weight-gradient only)
    image_projection: float
    encoder: float
    decoder_self: float  # decoder self-attention and MLP
    cross_attention: float
    logits: float

    @property
    def forward(self) -> float:
        return (
            self.conv_stem
            + self.image_projection
            + self.encoder
            + self.decoder_self
            + self.cross_attention
            + self.logits
        )

    @property
    def train(self) -> float:
        return 3 * self.forward - self.first_conv


def _conv(h_out: int, w_out: int, k: int, c_in: int, c_out: int) -> float:
    return 2.0 * h_out * w_out * k * k * c_in * c_out


def conv_stem_flops(cfg: SimVLMConfig, height: int, width: int) -> tuple[float, float]:
    """(all stem conv FLOPs, the first conv's FLOPs) of one image of height x width."""
    if cfg.num_conv_blocks == 0:
        first = _conv(height // cfg.patch_size, width // cfg.patch_size, cfg.patch_size, cfg.num_channels, cfg.emb_dim)
        return first, first
    h, w = math.ceil(height / 2), math.ceil(width / 2)  # SAME stride-2 root conv
    first = _conv(h, w, 7, cfg.num_channels, cfg.stem_width)
    total = first
    h, w = math.ceil(h / 2), math.ceil(w / 2)  # max pool
    channels = cfg.stem_width
    for stage in range(cfg.num_conv_blocks):
        inner = cfg.stem_width * 2**stage
        for block in range(cfg.stem_blocks_per_stage[stage]):
            stride = 2 if stage > 0 and block == 0 else 1
            h_out, w_out = math.ceil(h / stride), math.ceil(w / stride)
            total += _conv(h, w, 1, channels, inner)  # conv1 (before the stride)
            total += _conv(h_out, w_out, 3, inner, inner)  # conv2 carries the stride
            total += _conv(h_out, w_out, 1, inner, 4 * inner)  # conv3
            if channels != 4 * inner or stride != 1:
                total += _conv(h_out, w_out, 1, channels, 4 * inner)  # projection shortcut
            channels, h, w = 4 * inner, h_out, w_out
    return total, first


def step_flops(cfg: SimVLMConfig, text_length: int, decoder_length: int, image_size: int | None = None) -> StepFlops:
    """FLOPs of one example with one image of image_size^2 (default cfg.image_size), a text prefix of
    `text_length` tokens and `decoder_length` decoder tokens."""
    size = cfg.image_size if image_size is None else image_size
    grid_h, grid_w = cfg.image_grid(size, size)
    t_img = grid_h * grid_w
    le, ld = t_img + text_length, decoder_length
    d, a, m, v = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
    stem, first = conv_stem_flops(cfg, size, size)
    projection = 2.0 * t_img * cfg.stem_features * d if cfg.num_conv_blocks > 0 else 0.0
    encoder_layer = 2 * le * d * 3 * a + 2 * le * a * d + 4 * le * le * a + 4 * le * d * m
    decoder_self = 2 * ld * d * 3 * a + 2 * ld * a * d + 4 * ld * ld * a + 4 * ld * d * m
    cross = 2 * ld * d * a + 2 * le * d * 2 * a + 2 * ld * a * d + 4 * ld * le * a
    return StepFlops(
        conv_stem=stem,
        first_conv=first,
        image_projection=projection,
        encoder=float(cfg.num_encoder_layers * encoder_layer),
        decoder_self=float(cfg.num_decoder_layers * decoder_self),
        cross_attention=float(cfg.num_decoder_layers * cross),
        logits=2.0 * ld * d * v,
    )
