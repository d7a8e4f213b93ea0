"""The stem's pieces written for speed equal their textbook formulations, values and gradients:
the root max pool (nine strided slices) vs `flax.linen.max_pool`, GroupNorm (spatial sums first) vs
one reduction over a [..., groups, C / groups] reshape, and 1x1 convs (a channel matmul) vs
`jax.lax.conv_general_dilated`, for even and odd sizes and both strides."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from simvlm_jax.network.conv_stem import Conv, GroupNorm, max_pool_3x3_stride_2


def _random(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 2), (32, 32)])
def test_max_pool_equals_flax_max_pool_with_gradients(size):
    x = _random((2, *size, 3))
    reference = lambda t: nn.max_pool(t, (3, 3), strides=(2, 2), padding="SAME")  # noqa: E731
    _close(max_pool_3x3_stride_2(x), reference(x), tol=0)
    assert max_pool_3x3_stride_2(x).shape == (2, -(-size[0] // 2), -(-size[1] // 2), 3)
    weights = _random(reference(x).shape, seed=1)
    grad = lambda fn: jax.grad(lambda t: jnp.sum(fn(t) * weights))(x)  # noqa: E731
    _close(grad(max_pool_3x3_stride_2), grad(reference), tol=0)


def _reference_group_norm(x, scale, bias, groups, epsilon=1e-5):
    b, h, w, c = x.shape
    grouped = x.reshape(b, h, w, groups, c // groups)
    mean = jnp.mean(grouped, axis=(1, 2, 4), keepdims=True)
    var = jnp.var(grouped, axis=(1, 2, 4), keepdims=True)
    return ((grouped - mean) / jnp.sqrt(var + epsilon)).reshape(x.shape) * scale + bias


@pytest.mark.parametrize("channels,max_groups", [(64, 32), (24, 32), (16, 4)])
def test_group_norm_equals_reshape_formulation_with_gradients(channels, max_groups):
    x = 3.0 * _random((2, 5, 6, channels)) + 2.0  # a non-zero mean: the centring matters
    module = GroupNorm(max_groups)
    params = {"params": {"scale": _random((channels,), 1), "bias": _random((channels,), 2)}}
    groups = np.gcd(channels, max_groups)
    reference = lambda p, t: _reference_group_norm(t, p["params"]["scale"], p["params"]["bias"], groups)  # noqa: E731
    _close(module.apply(params, x), reference(params, x), tol=1e-4)
    weights = _random(x.shape, 3)
    grads = lambda fn: jax.grad(lambda p, t: jnp.sum(fn(p, t) * weights), argnums=(0, 1))(params, x)  # noqa: E731
    for ours, theirs in zip(jax.tree.leaves(grads(module.apply)), jax.tree.leaves(grads(reference))):
        _close(ours, theirs, tol=1e-4)


@pytest.mark.parametrize("strides,size", [(1, 8), (2, 8), (2, 7)])
def test_one_by_one_conv_equals_lax_conv_with_gradients(strides, size):
    x = _random((2, size, size, 6))
    module = Conv(5, 1, strides, weight_standardization=True)
    params = module.init(jax.random.key(0), x)

    def reference(p, t):
        kernel = p["params"]["kernel"]
        kernel = (kernel - kernel.mean((0, 1, 2), keepdims=True)) / jnp.sqrt(
            kernel.var((0, 1, 2), keepdims=True) + 1e-10
        )
        return jax.lax.conv_general_dilated(
            t, kernel, (strides, strides), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    _close(module.apply(params, x), reference(params, x), tol=1e-5)
    weights = _random(reference(params, x).shape, 4)
    grads = lambda fn: jax.grad(lambda p, t: jnp.sum(fn(p, t) * weights), argnums=(0, 1))(params, x)  # noqa: E731
    for ours, theirs in zip(jax.tree.leaves(grads(module.apply)), jax.tree.leaves(grads(reference))):
        _close(ours, theirs, tol=1e-4)
