"""layers.contract_cpu_backward: the hand-written backward pass equals JAX's own gradient of dot_general;
it is used on XLA:CPU only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simvlm_jax.network.layers import contract_cpu_backward as contract
from simvlm_jax.network.layers import hand_written_backward


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
