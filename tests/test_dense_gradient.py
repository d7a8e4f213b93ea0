"""layers.contract_cpu_backward: the hand-written backward pass equals JAX's own gradient of dot_general;
it is used on XLA:CPU only. Likewise the broadcast bias and scale (`add_broadcast`, `scale_broadcast`), whose
XLA:CPU gradients sum over the broadcast axes with a matmul."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simvlm_jax.network.layers import add_cpu_backward, hand_written_backward, scale_cpu_backward
from simvlm_jax.network.layers import contract_cpu_backward as contract


def _reference(x, kernel, contract_dims):
    n = x.ndim
    dims = ((tuple(range(n - contract_dims, n)), tuple(range(contract_dims))), ((), ()))
    return jax.lax.dot_general(x, kernel, dims)


@pytest.mark.parametrize(
    "x_shape, kernel_shape, contract_dims",
    [
        ((5, 7), (7, 3), 1),  # plain matmul
        ((2, 5, 7), (7, 4, 3), 1),  # q/k/v projection: embed -> (heads, kv)
        ((2, 5, 4, 3), (4, 3, 7), 2),  # output projection: (heads, kv) -> embed
        ((2, 3, 5, 6), (6, 9), 1),  # several batch axes (images x patches)
    ],
)
def test_values_and_gradients_match_autodiff(x_shape, kernel_shape, contract_dims):
    kx, kk, kc = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape)
    kernel = jax.random.normal(kk, kernel_shape)
    out_shape = x_shape[: len(x_shape) - contract_dims] + kernel_shape[contract_dims:]
    cotangent = jax.random.normal(kc, out_shape)

    def loss(fn):
        return lambda x, k: jnp.sum(fn(x, k, contract_dims) * cotangent)

    np.testing.assert_allclose(
        contract(x, kernel, contract_dims), _reference(x, kernel, contract_dims), rtol=1e-6, atol=1e-6
    )
    ours = jax.jit(jax.grad(loss(contract), argnums=(0, 1)))(x, kernel)
    theirs = jax.grad(loss(_reference), argnums=(0, 1))(x, kernel)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_dtypes_and_values():
    x = jax.random.normal(jax.random.key(1), (3, 4, 8), jnp.bfloat16)
    kernel = jax.random.normal(jax.random.key(2), (8, 6), jnp.bfloat16)
    grads = jax.grad(lambda x, k: jnp.sum(contract(x, k, 1).astype(jnp.float32) ** 2), argnums=(0, 1))(x, kernel)
    expected = jax.grad(lambda x, k: jnp.sum(_reference(x, k, 1).astype(jnp.float32) ** 2), argnums=(0, 1))(x, kernel)
    for a, b in zip(grads, expected):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2e-2, atol=2e-2)


def test_second_use_under_remat_and_vmap():
    """The custom gradient composes with jax.checkpoint and vmap (scan/remat paths of the network)."""
    x = jax.random.normal(jax.random.key(3), (4, 2, 5))
    kernel = jax.random.normal(jax.random.key(4), (5, 3))

    def loss(fn):
        body = jax.checkpoint(lambda x, k: jnp.tanh(fn(x, k, 1)))
        return lambda x, k: jnp.sum(jax.vmap(body, in_axes=(0, None))(x, k) ** 2)

    ours = jax.grad(loss(contract), argnums=(0, 1))(x, kernel)
    theirs = jax.grad(loss(_reference), argnums=(0, 1))(x, kernel)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_the_workaround_is_chosen_per_backend():
    import jax

    from simvlm_jax.network import layers

    assert hand_written_backward("cpu") and not hand_written_backward("gpu") and not hand_written_backward("tpu")
    # On this CPU backend DenseGeneral's contraction is the hand-written one, so forward mode cannot pass it;
    # the plain form used elsewhere can.
    x, k = jnp.ones((2, 3)), jnp.ones((3, 4))
    assert jax.default_backend() == "cpu"
    with pytest.raises(TypeError):
        jax.jvp(lambda a: layers.contract(a, k, 1), (x,), (x,))
    jax.jvp(lambda a: layers._dot(a, k, 1), (x,), (x,))


@pytest.mark.parametrize(
    "x_shape, bias_shape",
    [
        ((16, 8, 12, 12), (1, 8, 12, 12)),  # the relative-position bias over the batch
        ((2, 5, 7), (7,)),  # a Dense / LayerNorm bias over the tokens
        ((2, 5, 3, 4), (3, 4)),  # a q/k/v projection's bias [heads, kv]
    ],
)
def test_broadcast_bias_and_scale_gradients_match_autodiff(x_shape, bias_shape):
    kx, kb, kc = jax.random.split(jax.random.key(5), 3)
    x = jax.random.normal(kx, x_shape)
    bias = jax.random.normal(kb, bias_shape)
    cotangent = jax.random.normal(kc, x_shape)
    for ours_fn, reference_fn in ((add_cpu_backward, jnp.add), (scale_cpu_backward, jnp.multiply)):

        def loss(fn):
            return lambda x, b: jnp.sum(jnp.tanh(fn(x, b)) * cotangent)

        np.testing.assert_array_equal(ours_fn(x, bias), reference_fn(x, bias))
        ours = jax.jit(jax.grad(loss(ours_fn), argnums=(0, 1)))(x, bias)
        theirs = jax.grad(loss(reference_fn), argnums=(0, 1))(x, bias)
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        # under vmap (an unbatched bias, as when the network is vmapped) and remat
        batched = jax.grad(lambda x, b: jnp.sum(jax.vmap(jax.checkpoint(loss(ours_fn)), (0, None))(x[None], b)), (0, 1))
        for a, b in zip(batched(x, bias), theirs):
            np.testing.assert_allclose(np.asarray(a).reshape(b.shape), b, rtol=1e-5, atol=1e-5)


def test_broadcast_bias_gradient_keeps_bfloat16():
    x = jax.random.normal(jax.random.key(6), (4, 6, 8), jnp.bfloat16)
    bias = jax.random.normal(jax.random.key(7), (8,), jnp.bfloat16)
    gx, gb = jax.grad(lambda x, b: jnp.sum(add_cpu_backward(x, b).astype(jnp.float32) ** 2), (0, 1))(x, bias)
    assert gx.dtype == jnp.bfloat16 and gb.dtype == jnp.bfloat16
    expected = jax.grad(lambda b: jnp.sum((x.astype(jnp.float32) + b.astype(jnp.float32)) ** 2))(bias)
    np.testing.assert_allclose(np.asarray(gb, np.float32), np.asarray(expected), rtol=2e-2, atol=2e-1)
