"""The image stem: raw pixels -> a grid of features.

`num_conv_blocks = 0` is a ViT linear patch embedding (a conv with kernel = stride = patch_size that
outputs emb_dim channels). `num_conv_blocks = k >= 1` is a ResNet root (7x7 stride-2 conv, norm, relu,
3x3 stride-2 max pool) followed by the first k bottleneck stages of a ResNet (the paper uses k = 3,
overall stride 16: a 224x224 image gives a 14x14 grid).

Normalisation: GroupNorm with weight-standardised convolutions (as in BiT, Kolesnikov et al. 2020)
instead of BatchNorm, because
  * the network then has no mutable batch statistics: `apply` is a pure function of the params, the
    same in training and evaluation, with no 'batch_stats' collection to shard, sync or checkpoint;
  * examples do not influence each other: a batch mixes image-text pairs with text-only examples whose
    image is all zeros, and those blank images would pollute batch statistics (and leak across
    examples, breaking the guarantee that a text-only example is blind to every image);
  * GroupNorm does not depend on the per-device batch size, which varies with the sharding.
Weight standardisation restores the optimisation benefit BatchNorm would have given.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from simvlm_jax.network.configs import SimVLMConfig
from simvlm_jax.network.layers import DType, drop_path, param_with_axes

Array = jax.Array

_CONV_AXES = ("conv_height", "conv_width", "conv_in", "conv_out")
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


class Conv(nn.Module):
    """2D convolution [batch, H, W, C_in] -> [batch, H', W', features] with an optional standardised kernel.

    With `weight_standardization` the kernel is normalised to zero mean and unit variance over
    (height, width, in) for every output channel before use; such convs are followed by a norm, so they
    have no bias.
    """

    features: int
    kernel_size: int
    strides: int = 1
    padding: str = "SAME"
    weight_standardization: bool = True
    use_bias: bool = False
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = param_with_axes("kernel", nn.initializers.lecun_normal(), shape, jnp.float32, axes=_CONV_AXES)
        if self.weight_standardization:
            mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
            var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
            kernel = (kernel - mean) * jax.lax.rsqrt(var + 1e-10)
        x, kernel = jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype)
        if self.kernel_size == 1:
            # A 1x1 conv is a matmul over channels (the stride subsamples first); written as one so
            # its gradients are matmuls too: XLA:CPU's backward 1x1 convs are several times slower.
            y = jnp.einsum("bhwc,co->bhwo", x[:, :: self.strides, :: self.strides, :], kernel[0, 0])
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(self.strides, self.strides),
                padding=self.padding,
                dimension_numbers=_DIMENSIONS,
            )
        if self.use_bias:
            bias = param_with_axes("bias", nn.initializers.zeros, (self.features,), jnp.float32, axes=("conv_out",))
            y = y + jnp.asarray(bias, self.dtype)
        return y


def num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides `channels` (32 for every width >= 32 we use)."""
    return math.gcd(channels, max_groups)


class GroupNorm(nn.Module):
    """GroupNorm over [batch, H, W, C]: statistics per example and per group of channels (in float32)."""

    max_groups: int = 32
    epsilon: float = 1e-5
    scale_init: nn.initializers.Initializer = nn.initializers.ones
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, channels = x.shape
        groups = num_groups(channels, self.max_groups)
        count = height * width * (channels // groups)

        def group_mean(t: Array) -> Array:
            """[batch, H, W, C] -> [batch, 1, 1, C]: the mean over H, W and each channel's group.
            Spatial sums first, then the small per-group sum: XLA:CPU runs this (and its gradient)
            about 10x faster than one reduction over a [.., groups, C / groups] reshape."""
            sums = jnp.sum(t, axis=(1, 2)).reshape(batch, groups, channels // groups)
            means = jnp.sum(sums, axis=-1, keepdims=True) / count  # [batch, groups, 1]
            return jnp.broadcast_to(means, sums.shape).reshape(batch, 1, 1, channels)

        x32 = jnp.asarray(x, jnp.float32)
        centred = x32 - group_mean(x32)
        inv_std = jax.lax.rsqrt(group_mean(jnp.square(centred)) + self.epsilon)
        scale = param_with_axes("scale", self.scale_init, (channels,), jnp.float32, axes=("conv_out",))
        bias = param_with_axes("bias", nn.initializers.zeros, (channels,), jnp.float32, axes=("conv_out",))
        return jnp.asarray(centred * (inv_std * scale) + bias, self.dtype)


def max_pool_3x3_stride_2(x: Array) -> Array:
    """ResNet's root max pool (3x3 window, stride 2, SAME padding): [batch, H, W, C] ->
    [batch, ceil(H / 2), ceil(W / 2), C]. Equal to `nn.max_pool(x, (3, 3), (2, 2), "SAME")`, written
    as the maximum of nine strided slices because XLA:CPU's gradient of a pooling window
    (select-and-scatter) is about 7x slower than the slices' gradients."""
    _, height, width, _ = x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    pad_h, pad_w = max(2 * out_h + 1 - height, 0), max(2 * out_w + 1 - width, 0)
    padded = jnp.pad(
        x,
        ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        constant_values=-jnp.inf,
    )
    windows = [padded[:, i : i + 2 * out_h - 1 : 2, j : j + 2 * out_w - 1 : 2, :] for i in range(3) for j in range(3)]
    return functools.reduce(jnp.maximum, windows)


def space_to_depth(x: Array, factor: int) -> Array:
    """[batch, h, w, C] -> [batch, ceil(h / f), ceil(w / f), f * f * C]: each f x f neighbourhood becomes one
    position (zero-padded at the bottom and right edges); f = 1 returns x."""
    if factor == 1:
        return x
    batch, height, width, channels = x.shape
    out_h, out_w = -(-height // factor), -(-width // factor)
    x = jnp.pad(x, ((0, 0), (0, out_h * factor - height), (0, out_w * factor - width), (0, 0)))
    x = x.reshape(batch, out_h, factor, out_w, factor, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, out_h, out_w, factor * factor * channels)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (carries the stride) -> 1x1 with 4x wider output.

    The last GroupNorm's scale starts at zero, so every block starts as its shortcut (helps a deep
    stem such as the 36-block stage of ResNet-152 train from scratch).
    """

    width: int  # inner width; the output has 4 * width channels
    strides: int = 1
    max_groups: int = 32
    dtype: DType = jnp.float32
    stochastic_depth_rate: float = 0.0  # drop probability of the residual branch (training only)

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        """[batch, H, W, C_in] -> [batch, H / strides, W / strides, 4 * width]."""
        out_features = 4 * self.width
        residual = x
        y = Conv(self.width, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(GroupNorm(self.max_groups, dtype=self.dtype, name="norm1")(y))
        y = Conv(self.width, 3, self.strides, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(GroupNorm(self.max_groups, dtype=self.dtype, name="norm2")(y))
        y = Conv(out_features, 1, dtype=self.dtype, name="conv3")(y)
        y = GroupNorm(self.max_groups, scale_init=nn.initializers.zeros, dtype=self.dtype, name="norm3")(y)
        if x.shape[-1] != out_features or self.strides != 1:
            residual = Conv(out_features, 1, self.strides, dtype=self.dtype, name="proj")(x)
            residual = GroupNorm(self.max_groups, dtype=self.dtype, name="proj_norm")(residual)
        return nn.relu(residual + drop_path(y, self.stochastic_depth_rate, enable_dropout))


class ConvStem(nn.Module):
    """Pixels [batch, H, W, C] -> features [batch, h, w, config.stem_features].

    Grid size: H // patch_size for num_conv_blocks = 0, else ceil(H / 2**(num_conv_blocks + 1))
    (see SimVLMConfig.image_grid).
    """

    config: SimVLMConfig

    @nn.compact
    def __call__(self, images: Array, enable_dropout: bool = False) -> Array:
        """enable_dropout: stochastic depth on the bottleneck blocks (config.stochastic_depth_rate)."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        if cfg.num_conv_blocks == 0:
            return Conv(
                cfg.emb_dim,
                cfg.patch_size,
                strides=cfg.patch_size,
                padding="VALID",
                weight_standardization=False,
                use_bias=True,
                dtype=dtype,
                name="patch_embedding",
            )(images)  # [batch, H / patch, W / patch, emb_dim]

        x = Conv(cfg.stem_width, 7, strides=2, dtype=dtype, name="root_conv")(images)
        x = nn.relu(GroupNorm(cfg.stem_norm_groups, dtype=dtype, name="root_norm")(x))
        x = max_pool_3x3_stride_2(x)  # [batch, H / 4, W / 4, stem_width]
        stride = 4
        for stage in range(cfg.num_conv_blocks):
            stage_stride = 2 if stage > 0 and stride < cfg.conv_stride else 1
            stride *= stage_stride
            for block in range(cfg.stem_blocks_per_stage[stage]):
                x = Bottleneck(
                    width=cfg.stem_width * 2**stage,
                    strides=stage_stride if block == 0 else 1,
                    max_groups=cfg.stem_norm_groups,
                    dtype=dtype,
                    stochastic_depth_rate=cfg.stochastic_depth_rate,
                    name=f"stage{stage + 1}_block{block + 1}",
                )(x, enable_dropout)
        # [batch, H / conv_stride, W / conv_stride, 4 * stem_width * 2**(num_conv_blocks - 1)]
        return space_to_depth(x, cfg.stem_stride // cfg.conv_stride)
