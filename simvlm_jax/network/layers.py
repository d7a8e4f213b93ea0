"""Basic layers whose parameters carry logical axis names.

Every parameter is created with `flax.linen.partitioning.param_with_axes`, which also records its
logical axes in the `params_axes` collection (what T5X and our partitioner read). Parameters are stored
in float32; computations run in the module's `dtype`.

Logical names used by the network (the only ones allowed):
  vocab, embed, mlp, heads, kv, conv_height, conv_width, conv_in, conv_out,
  image_positions, text_positions, image_index.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning

param_with_axes = nn_partitioning.param_with_axes
with_sharding_constraint = nn_partitioning.with_sharding_constraint

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# Additive attention bias for a masked key: large but finite, so fully masked rows give no NaNs.
NEG_INF = -1e10

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def get_activation(name: str) -> Callable[[Array], Array]:
    """The activation function called `name` (see _ACTIVATIONS)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def dropout(x: Array, rate: float, enable_dropout: bool) -> Array:
    """Dropout on `x`; the identity unless enable_dropout and rate > 0.

    Call it inside a compact method (it creates an `nn.Dropout` there); it draws from the 'dropout'
    rng stream, which `apply(..., rngs={'dropout': key})` must provide when dropout is enabled.
    """
    if rate == 0.0 or not enable_dropout:
        return x
    return nn.Dropout(rate=rate)(x, deterministic=False)


def drop_path(x: Array, rate: float, enable_dropout: bool) -> Array:
    """Stochastic depth on a residual branch x [batch, ...]: each example's whole branch is zeroed with
    probability `rate` and kept ones are scaled by 1 / (1 - rate); the identity unless enable_dropout and
    rate > 0. Draws from the 'dropout' rng stream, like `dropout`."""
    if rate == 0.0 or not enable_dropout:
        return x
    return nn.Dropout(rate=rate, broadcast_dims=tuple(range(1, x.ndim)))(x, deterministic=False)


def contract(x: Array, kernel: Array, contract_dims: int) -> Array:
    """x [..., *in] . kernel [*in, *out] -> [..., *out] (the last `contract_dims` axes of x against the
    first ones of kernel). On XLA:CPU with the hand-written backward pass of `contract_cpu_backward`,
    elsewhere plain `dot_general` (XLA:GPU/TPU were not measured to need it, and the plain form keeps
    forward-mode autodiff working); the choice is made when the function is traced."""
    if hand_written_backward(jax.default_backend()):
        return contract_cpu_backward(x, kernel, contract_dims)
    return _dot(x, kernel, contract_dims)


def hand_written_backward(backend: str) -> bool:
    """Whether `contract` uses the hand-written backward pass on `backend` (a per-backend workaround,
    measured on XLA:CPU only: docs/performance.md)."""
    return backend == "cpu"


def _dot(x: Array, kernel: Array, contract_dims: int) -> Array:
    n = x.ndim
    dims = ((tuple(range(n - contract_dims, n)), tuple(range(contract_dims))), ((), ()))
    return jax.lax.dot_general(x, kernel, dims)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def contract_cpu_backward(x: Array, kernel: Array, contract_dims: int) -> Array:
    """`contract` with a hand-written backward pass (the XLA:CPU workaround).

    The gradient is the textbook one; only its formulation differs from what JAX's dot_general
    transpose rule emits. JAX writes the kernel gradient as (dy^T x)^T, and XLA:CPU then makes a
    transposed copy of dy for its matmul and fuses the whole upstream gradient computation into that
    copy: through the residual stream that is every LayerNorm backward of every later layer,
    recomputed once per weight gradient (quadratic in depth; a fifth of a 6+6-layer train step).
    Here both gradients are plain 2-D matmuls over the flattened tokens, kernel gradient = x^T dy,
    so the copy is of x, an activation already in memory. See docs/performance.md.
    """
    return _dot(x, kernel, contract_dims)


def _contract_fwd(x: Array, kernel: Array, contract_dims: int):
    return _dot(x, kernel, contract_dims), (x, kernel)


def _contract_bwd(contract_dims: int, residuals: tuple[Array, Array], dy: Array):
    x, kernel = residuals
    fan_in = math.prod(kernel.shape[:contract_dims])
    fan_out = math.prod(kernel.shape[contract_dims:])
    x_2d = x.reshape(-1, fan_in)  # [tokens, in]
    dy_2d = dy.reshape(-1, fan_out)  # [tokens, out]
    kernel_2d = kernel.reshape(fan_in, fan_out)
    dx = jax.lax.dot_general(dy_2d, kernel_2d, (((1,), (1,)), ((), ())))  # [tokens, in]
    dkernel = jax.lax.dot_general(x_2d, dy_2d, (((0,), (0,)), ((), ())))  # [in, out]
    return dx.reshape(x.shape).astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)


contract_cpu_backward.defvjp(_contract_fwd, _contract_bwd)


def add_broadcast(x: Array, bias: Array) -> Array:
    """x + bias, where bias has x's trailing shape (leading axes absent or 1) and is broadcast over the
    leading ones: a Dense or LayerNorm bias over the tokens, the relative-position bias over the batch.
    On XLA:CPU its gradient is summed over the broadcast axes by `_sum_to_trailing` (see there)."""
    if hand_written_backward(jax.default_backend()):
        return add_cpu_backward(x, bias)
    return x + bias


def scale_broadcast(x: Array, scale: Array) -> Array:
    """x * scale, broadcast as in `add_broadcast` (LayerNorm's scale), with the same XLA:CPU gradient sum."""
    if hand_written_backward(jax.default_backend()):
        return scale_cpu_backward(x, scale)
    return x * scale


def _sum_to_trailing(g: Array, shape: tuple[int, ...], dtype) -> Array:
    """g [..., *trailing] summed over its leading axes into `shape` (trailing, maybe with leading 1s), as a
    matmul with a row of ones. XLA:CPU's (YNNPACK's) reduction over leading axes runs at a fraction of
    memory speed: summing [16, 8, 96, 96] over the batch took 6.05 ms that way and 0.09 ms as this matmul
    (docs/performance.md); JAX's transpose of a broadcast emits that reduction for every bias gradient."""
    flat = g.reshape(-1, math.prod(shape))
    ones = jnp.ones((1, flat.shape[0]), flat.dtype)
    summed = jax.lax.dot_general(ones, flat, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return summed.reshape(shape).astype(dtype)


@jax.custom_vjp
def add_cpu_backward(x: Array, bias: Array) -> Array:
    return x + bias


def _add_fwd(x: Array, bias: Array):
    return x + bias, (jnp.zeros((0,), x.dtype), bias)  # x's dtype; the bias (small) for its shape


def _add_bwd(residuals: tuple[Array, Array], g: Array):
    x_dtype_of, bias = residuals
    return g.astype(x_dtype_of.dtype), _sum_to_trailing(g, bias.shape, bias.dtype)


add_cpu_backward.defvjp(_add_fwd, _add_bwd)


@jax.custom_vjp
def scale_cpu_backward(x: Array, scale: Array) -> Array:
    return x * scale


def _scale_fwd(x: Array, scale: Array):
    return x * scale, (x, scale)


def _scale_bwd(residuals: tuple[Array, Array], g: Array):
    x, scale = residuals
    return (g * scale).astype(x.dtype), _sum_to_trailing(g * x, scale.shape, scale.dtype)


scale_cpu_backward.defvjp(_scale_fwd, _scale_bwd)


def _flat_fan_in_init(base_init: Initializer, in_rank: int) -> Callable[[jax.Array, tuple[int, ...]], Array]:
    """Initialise an N-d kernel as if it were the 2D matrix [prod(in dims), prod(out dims)]."""

    def init(rng: jax.Array, shape: tuple[int, ...], dtype: DType = jnp.float32) -> Array:
        fan_in = math.prod(shape[:in_rank])
        fan_out = math.prod(shape[in_rank:])
        return base_init(rng, (fan_in, fan_out), dtype).reshape(shape)

    return init


class DenseGeneral(nn.Module):
    """A linear map contracting the last `len(in_axes_names)` axes of x into `features`.

    Attributes:
      features: output dims, e.g. 768 or (heads, kv).
      kernel_axes: logical names of the kernel, input dims first then output dims.
      use_bias: add a bias shaped like `features` (logical names = the output part of kernel_axes).
      contract_dims: how many trailing axes of x are contracted (1 for a plain Dense).
    """

    features: int | Sequence[int]
    kernel_axes: tuple[str, ...]
    use_bias: bool = True
    contract_dims: int = 1
    dtype: DType = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        in_shape = x.shape[x.ndim - self.contract_dims :]
        kernel_shape = tuple(in_shape) + features
        if len(self.kernel_axes) != len(kernel_shape):
            raise ValueError(f"kernel_axes {self.kernel_axes} do not match kernel shape {kernel_shape}")
        kernel = param_with_axes(
            "kernel",
            _flat_fan_in_init(self.kernel_init, self.contract_dims),
            kernel_shape,
            jnp.float32,
            axes=self.kernel_axes,
        )
        x = jnp.asarray(x, self.dtype)
        kernel = jnp.asarray(kernel, self.dtype)
        y = contract(x, kernel, self.contract_dims)
        if self.use_bias:
            bias_axes = self.kernel_axes[self.contract_dims :]
            bias = param_with_axes("bias", nn.initializers.zeros, features, jnp.float32, axes=bias_axes)
            y = add_broadcast(y, jnp.asarray(bias, self.dtype))
        return y


class Embed(nn.Module):
    """A lookup table [num_embeddings, features]; `attend` multiplies by its transpose.

    Uses setup() so that a parent can read `.embedding` (e.g. to resize a position table).
    """

    num_embeddings: int
    features: int
    axes: tuple[str, str] = ("vocab", "embed")
    dtype: DType = jnp.float32
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

    def setup(self) -> None:
        self.embedding = param_with_axes(
            "embedding",
            self.embedding_init,
            (self.num_embeddings, self.features),
            jnp.float32,
            axes=self.axes,
        )

    def __call__(self, ids: Array) -> Array:
        """ids [...] int -> [..., features]."""
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"Embed expects integer ids, got {ids.dtype}")
        return jnp.asarray(jnp.take(self.embedding, ids, axis=0), self.dtype)

    def attend(self, query: Array, transposed_copy: bool = False) -> Array:
        """query [..., features] -> [..., num_embeddings] (dot product with every row).

        transposed_copy: multiply by a [features, num_embeddings] copy of the table rather than by the
        table read row by row. For decoding on XLA:CPU: inside the decoding loop the copy is
        loop-invariant, so XLA hoists it out and makes it once per call, and XLA:CPU's matrix-vector
        products stream that layout faster (the benchmark's small model, greedy, batch 4: +6% tokens/s).
        """
        query = jnp.asarray(query, self.dtype)
        table = jnp.asarray(self.embedding, self.dtype)
        if transposed_copy:
            # The barrier keeps XLA from folding the transpose back into the dot's contraction.
            return jnp.dot(query, jax.lax.optimization_barrier(table.T))
        return jnp.dot(query, table.T)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with scale and bias (statistics in float32)."""

    epsilon: float = 1e-6
    dtype: DType = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        x32 = jnp.asarray(x, jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        scale = param_with_axes("scale", nn.initializers.ones, (features,), jnp.float32, axes=(self.axis_name,))
        bias = param_with_axes("bias", nn.initializers.zeros, (features,), jnp.float32, axes=(self.axis_name,))
        return jnp.asarray(add_broadcast(scale_broadcast(y, scale), bias), self.dtype)


class MlpBlock(nn.Module):
    """Transformer feed-forward block: Dense(emb->mlp), activation, dropout, Dense(mlp->emb)."""

    mlp_dim: int
    activation: str = "gelu"
    dropout_rate: float = 0.0
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        """x [batch, length, embed] -> [batch, length, embed]."""
        emb_dim = x.shape[-1]
        h = DenseGeneral(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name="wi")(x)
        h = get_activation(self.activation)(h)  # [batch, length, mlp]
        h = with_sharding_constraint(h, ("batch", "length", "mlp"))
        h = dropout(h, self.dropout_rate, enable_dropout)
        y = DenseGeneral(emb_dim, ("mlp", "embed"), dtype=self.dtype, name="wo")(h)
        return with_sharding_constraint(y, ("batch", "length", "embed"))  # [batch, length, embed]
