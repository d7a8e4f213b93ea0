"""Hyper-parameters of the SimVLM network and the named size presets.

`SimVLMConfig` is a frozen dataclass: hashable, so it can be a Flax module attribute and a static
argument of `jax.jit`. Presets come from `get_config(name, **overrides)`; `tiny_config(**overrides)` is
the CPU-sized model used by tests and smoke runs.

Parameter counts of the presets (vocab 32000, max_text_length 512, image 224 -> 196 image tokens;
measured with `jax.eval_shape` in tests/test_network.py, which also derives them from a formula):

| preset | conv stem | encoder | decoder | embeddings, positions, projection | total                  |
|--------|-----------|---------|---------|-----------------------------------|------------------------|
| base   |  27.5M    |  85.1M  | 113.4M  |  26.3M                            | 252.3M (252,314,432)   |
| large  |  27.5M    | 302.3M  | 403.1M  |  35.1M                            | 768.0M (768,035,904)   |
| huge   |  43.2M    | 629.7M  | 839.6M  |  43.8M                            | 1.556B (1,556,334,912) |

Where the numbers come from (D = emb_dim, M = mlp_dim, H*K = heads * head_dim, biases included):
  * attention block: 4*D*H*K (q, k, v, out kernels) + 3*H*K + D (biases);
  * MLP block: 2*D*M + M + D;  LayerNorm: 2*D;
  * encoder layer = 2 LayerNorms + self-attention + MLP; decoder layer adds cross-attention and a third
    LayerNorm; each stack ends with a final LayerNorm;
  * embeddings: vocab*D (one shared table) + 2*512*D (encoder-text and decoder position tables)
    + 196*D (image positions) + C_stem*D + D (projection of the stem features, C_stem = 16*stem_width);
  * stem: the root 7x7 conv and the first three bottleneck stages of a ResNet-101 (3, 4, 23 blocks,
    base/large) or ResNet-152 (3, 8, 36 blocks, huge), weight-standardised convs without biases,
    GroupNorm scale and bias.
Huge: the 32+32 layer Transformer alone is 1.469B, so no stem keeps the total at "about 1.4B" as the
paper says; we keep the plain stem width 64 (a 1.5x wider stem, stem_width=96, gives 1,610,860,384).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLS = ("einsum", "fused")


# THE table of model sizes: the only place a preset's widths and depths are written. SimVLMConfig fills
# every size field left unset from its `preset` row; gin files bind `network.SimVLMConfig.preset` and
# override single fields. Sizes follow ViT, as in the SimVLM paper (arXiv 2108.10904); stems follow the
# paper's "first three blocks of a ResNet", a ResNet-101 for Base/Large and a ResNet-152 for Huge (assumed).
PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: the tests, the embedded benchmark and smoke runs (1.77M parameters with the 2k vocabulary).
    "tiny": dict(
        vocab_size=2000,
        emb_dim=128,
        num_heads=4,
        head_dim=32,
        mlp_dim=512,
        num_encoder_layers=2,
        num_decoder_layers=2,
        stem_width=32,
        stem_blocks_per_stage=(1, 1, 1, 1),
        image_size=64,  # -> 4x4 = 16 image tokens with 3 conv blocks
        max_text_length=64,
    ),
    "base": dict(
        vocab_size=32000,
        emb_dim=768,
        num_heads=12,
        head_dim=64,
        mlp_dim=3072,
        num_encoder_layers=12,
        num_decoder_layers=12,
        stem_width=64,
        stem_blocks_per_stage=(3, 4, 23, 3),  # ResNet-101
        image_size=224,
        max_text_length=512,
    ),
    "large": dict(
        vocab_size=32000,
        emb_dim=1024,
        num_heads=16,
        head_dim=64,
        mlp_dim=4096,
        num_encoder_layers=24,
        num_decoder_layers=24,
        stem_width=64,
        stem_blocks_per_stage=(3, 4, 23, 3),  # ResNet-101
        image_size=224,
        max_text_length=512,
    ),
    "huge": dict(
        vocab_size=32000,
        emb_dim=1280,
        num_heads=16,
        head_dim=80,
        mlp_dim=5120,
        num_encoder_layers=32,
        num_decoder_layers=32,
        stem_width=64,
        stem_blocks_per_stage=(3, 8, 36, 3),  # ResNet-152
        image_size=224,
        max_text_length=512,
    ),
}


@dataclasses.dataclass(frozen=True)
class SimVLMConfig:
    """Every hyper-parameter of `SimVLMNetwork`. Size fields left None come from the `preset` row of
    PRESETS (by default Base); every other field has its default here."""

    # The row of PRESETS that fills the size fields below that are left unset.
    preset: str = "base"
    # Size of the SentencePiece vocabulary; id 0 is padding (and the decoder's start id).
    vocab_size: Optional[int] = None
    # Transformer width: token, image and position embeddings all have this size.
    emb_dim: Optional[int] = None
    # Attention heads and the width of each head (heads * head_dim need not equal emb_dim).
    num_heads: Optional[int] = None
    head_dim: Optional[int] = None
    # Hidden width of the Transformer MLP blocks.
    mlp_dim: Optional[int] = None
    # Depth of the bidirectional encoder and of the causal decoder.
    num_encoder_layers: Optional[int] = None
    num_decoder_layers: Optional[int] = None
    # Image stem: 0 = ViT linear patch embedding, k in 1..4 = ResNet root + first k bottleneck stages.
    num_conv_blocks: int = 3
    # Inner width of the first ResNet stage (stage s has stem_width * 2**s inner, 4x that output).
    stem_width: Optional[int] = None
    # Bottleneck blocks per ResNet stage; only the first num_conv_blocks entries are used.
    stem_blocks_per_stage: Optional[tuple[int, ...]] = None
    # Kernel and stride of the linear patch embedding (used only when num_conv_blocks == 0).
    patch_size: int = 16
    # Pixels per image token, made equal whatever num_conv_blocks (the conv-block ablation at equal token
    # counts): None keeps each stem's own stride (2**(k+1); patch_size for k = 0); 16 merges the s x s
    # neighbourhoods of a finer grid into one token (k = 1, 2: space-to-depth by 16 / stride) and runs
    # the stages past that stride at stride 1 (k = 4). Must equal patch_size when num_conv_blocks == 0.
    image_token_stride: Optional[int] = None
    # Square image side the image position table is built for (other sizes resize the table).
    image_size: Optional[int] = None
    # Colour channels of the input image.
    num_channels: int = 3
    # Rows of the encoder-text and of the decoder position tables (longest text sequence).
    max_text_length: Optional[int] = None
    # Images per example; above 1 a learned image-index embedding tells the images apart.
    max_images: int = 1
    # A learned 2D relative position bias among the patches of each image in every encoder layer
    # (network/relative_position.py); False removes it (an ablation).
    image_relative_position: bool = True
    # The architecture ablation: one stack of num_encoder_layers + num_decoder_layers self-attention layers
    # over [image ; prefix ; targets] with a prefix-bidirectional, target-causal mask and no cross-attention
    # (network/decoder_only.py). Images must then have image_size and max_images images per example.
    decoder_only: bool = False
    # Dropout on embeddings, attention probabilities, MLP hidden units and residual branches.
    dropout_rate: float = 0.0
    # Stochastic depth: the probability that a residual branch is dropped for an example, in training, in
    # every encoder layer (attention and MLP) and every conv-stem bottleneck block, never in the decoder; the
    # same rate everywhere (assumed: the paper fine-tunes with 0.1 "on the stem and encoder").
    stochastic_depth_rate: float = 0.0
    # Compute dtype of activations ('float32' or 'bfloat16'); parameters are always float32.
    dtype: str = "float32"
    # Activation of the Transformer MLP: 'gelu' (exact), 'gelu_tanh', 'relu' or 'silu'.
    mlp_activation: str = "gelu"
    # Epsilon of the Transformer LayerNorms.
    layer_norm_epsilon: float = 1e-6
    # Largest group count of the stem GroupNorms (fewer when the channel count is small).
    stem_norm_groups: int = 32
    # Performance knobs (docs/performance.md); none of them changes the maths.
    # Scan over the layers of each stack with one compiled layer body (params stacked on a leading
    # `layers` axis under encoder/layers and decoder/layers) instead of unrolling layers_0..layers_{n-1}.
    scan_layers: bool = False
    # Rematerialisation of each layer in the backward pass: 'none', 'full' (save only the layer
    # inputs) or 'dots' (save matmul outputs, recompute the elementwise work).
    remat_policy: str = "none"
    # Attention kernel: 'einsum' (plain XLA einsums + softmax) or 'fused' (jax.nn.dot_product_attention,
    # cuDNN flash attention on GPUs with bfloat16; the XLA lowering elsewhere). Dropout on attention
    # probabilities always uses 'einsum'.
    attention_impl: str = "einsum"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"SimVLMConfig.preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in (
            "vocab_size",
            "emb_dim",
            "num_heads",
            "head_dim",
            "mlp_dim",
            "num_encoder_layers",
            "num_decoder_layers",
            "stem_width",
            "patch_size",
            "image_size",
            "num_channels",
            "max_text_length",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SimVLMConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("dropout_rate", "stochastic_depth_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SimVLMConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.num_conv_blocks <= 4:
            raise ValueError(f"num_conv_blocks must be in 0..4, got {self.num_conv_blocks}")
        if len(self.stem_blocks_per_stage) < self.num_conv_blocks:
            raise ValueError(
                f"stem_blocks_per_stage {self.stem_blocks_per_stage} has fewer than "
                f"num_conv_blocks={self.num_conv_blocks} stages"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        stride = self.image_token_stride
        if stride is not None:
            if self.num_conv_blocks == 0 and stride != self.patch_size:
                raise ValueError("image_token_stride must equal patch_size for the patch stem (num_conv_blocks=0)")
            if self.num_conv_blocks > 0 and (not isinstance(stride, int) or stride < 4 or stride & (stride - 1)):
                raise ValueError(f"image_token_stride must be a power of 2 of at least 4, got {stride!r}")
        if self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        # Lists (e.g. from gin) become tuples so that the config stays hashable.
        object.__setattr__(self, "stem_blocks_per_stage", tuple(self.stem_blocks_per_stage))

    @property
    def stem_stride(self) -> int:
        """Pixels per image token along each side: patch_size for the ViT stem; for k conv blocks
        2**(k + 1) (stride-2 root conv, stride-2 max pool, stride 2 in every stage after the first)."""
        if self.image_token_stride is not None:
            return self.image_token_stride
        return self.patch_size if self.num_conv_blocks == 0 else 2 ** (self.num_conv_blocks + 1)

    @property
    def conv_stride(self) -> int:
        """The stride the conv stages themselves reach (<= stem_stride); the rest is space-to-depth."""
        natural = 2 ** (self.num_conv_blocks + 1)
        return min(natural, self.stem_stride) if self.num_conv_blocks > 0 else self.patch_size

    def image_grid(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """Feature-grid size (h, w) the stem makes of a height x width image (default image_size)."""
        height = self.image_size if height is None else height
        width = self.image_size if width is None else width
        if self.num_conv_blocks == 0:  # VALID patch conv, kernel = stride = patch_size
            return height // self.stem_stride, width // self.stem_stride
        # SAME padding throughout: every halving rounds up.
        return math.ceil(height / self.stem_stride), math.ceil(width / self.stem_stride)

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per image at config.image_size (h * w of the stem's grid)."""
        grid_h, grid_w = self.image_grid()
        return grid_h * grid_w

    @property
    def stem_features(self) -> int:
        """Channels of the stem's output grid (before the projection to emb_dim)."""
        if self.num_conv_blocks == 0:
            return self.emb_dim  # the patch conv projects straight to the model width
        merged = (self.stem_stride // self.conv_stride) ** 2  # space-to-depth of a finer grid
        return 4 * self.stem_width * 2 ** (self.num_conv_blocks - 1) * merged


def get_config(name: str, **overrides: Any) -> SimVLMConfig:
    """The preset `name` ('tiny', 'base', 'large' or 'huge') with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"Unknown SimVLM size {name!r}; expected one of {sorted(PRESETS)}")
    return SimVLMConfig(preset=name, **overrides)


def tiny_config(**overrides: Any) -> SimVLMConfig:
    """A model that initialises and runs in well under a second on CPU (tests, smoke runs)."""
    return get_config("tiny", **overrides)
