"""Every performance switch computes the same thing: scan over layers, remat, bfloat16, fused
attention and gradient accumulation over microbatches (docs/performance.md)."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simvlm_jax.network.transformer import stack_layer_params
from simvlm_jax.training import grad_accumulation
from tests.helpers import B, make_batch, make_model

# The switches act on the Transformer layers, so these tests use the linear patch stem (the conv stem's
# gradient is what makes the tiny model slow to compile on CPU, and it is the same under every switch).
PATCH_STEM = dict(num_conv_blocks=0, patch_size=8)


def _params(model, seed=0):
    shapes = {k: v.shape for k, v in make_batch().items()}
    return model.get_initial_variables(jax.random.key(seed), shapes)["params"]


def _restacked(params, model):
    """Unrolled params -> the scanned layout (layers_i stacked on a leading axis)."""
    cfg = model.module.config
    params = flax.core.unfreeze(params)
    params["encoder"] = stack_layer_params(params["encoder"], cfg.num_encoder_layers)
    params["decoder"] = stack_layer_params(params["decoder"], cfg.num_decoder_layers)
    return params


def _grads(model, params, batch):
    return jax.jit(jax.grad(lambda p: model.loss_fn(p, batch, None)[0]))(params)


def _assert_trees_close(a, b, rtol, atol):
    a = flax.traverse_util.flatten_dict(flax.core.unfreeze(a))
    b = flax.traverse_util.flatten_dict(flax.core.unfreeze(b))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=rtol, atol=atol, err_msg=str(name))


@pytest.fixture(scope="module")
def reference():
    model = make_model(**PATCH_STEM)
    params = _params(model)
    batch = make_batch()
    return model, params, batch, model._compute_logits(params, batch), _grads(model, params, batch)


def test_scanned_layers_give_the_unrolled_logits_and_grads(reference):
    model, params, batch, logits, grads = reference
    scanned = make_model(scan_layers=True, **PATCH_STEM)
    stacked = _restacked(params, model)
    # Same parameter tree as scanned init makes, with the stacked `layers` axis named.
    abstract = flax.traverse_util.flatten_dict(flax.core.unfreeze(jax.eval_shape(lambda: _params(scanned))))
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(stacked))
    assert {k: v.shape for k, v in abstract.items()} == {k: v.shape for k, v in flat.items()}
    axes = scanned.get_initial_variables(jax.random.key(0), {k: v.shape for k, v in batch.items()})["params_axes"]
    assert axes["encoder"]["layers"]["mlp"]["wi"]["kernel_axes"].names == ("layers", "embed", "mlp")
    np.testing.assert_allclose(scanned._compute_logits(stacked, batch), logits, rtol=1e-5, atol=1e-5)
    _assert_trees_close(_grads(scanned, stacked, batch), _restacked(grads, model), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("policy,scan", [("full", False), ("dots", False), ("full", True)])
def test_remat_gives_the_same_grads(reference, policy, scan):
    model, params, batch, _, grads = reference
    remat = make_model(remat_policy=policy, scan_layers=scan, **PATCH_STEM)
    if scan:
        params, grads = _restacked(params, model), _restacked(grads, model)
    _assert_trees_close(_grads(remat, params, batch), grads, rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_is_close_to_float32(reference):
    """bf16 has an 8-bit mantissa: logits of this random tiny model agree to ~2% of their spread."""
    model, params, batch, logits, _ = reference
    bf16 = make_model(dtype="bfloat16", **PATCH_STEM)
    low = bf16._compute_logits(params, batch)
    assert low.dtype == jnp.float32  # logits and loss stay float32
    assert jax.tree.leaves(params)[0].dtype == jnp.float32
    spread = float(jnp.std(logits))
    assert float(jnp.max(jnp.abs(low - logits))) < 0.05 * spread
    loss32 = float(model.loss_fn(params, batch, None)[0])
    np.testing.assert_allclose(float(bf16.loss_fn(params, batch, None)[0]), loss32, rtol=2e-2)


def test_fused_attention_equals_einsum_attention(reference):
    """make_batch has padded prefixes, padded targets and a text-only example: every mask kind."""
    _, params, batch, logits, grads = reference
    fused = make_model(attention_impl="fused", **PATCH_STEM)
    np.testing.assert_allclose(fused._compute_logits(params, batch), logits, rtol=1e-5, atol=1e-5)
    _assert_trees_close(_grads(fused, params, batch), grads, rtol=1e-4, atol=1e-6)
    reference_tokens = make_model(**PATCH_STEM).predict_batch_with_aux(params, make_batch(1))[0]
    np.testing.assert_array_equal(fused.predict_batch_with_aux(params, make_batch(1))[0], reference_tokens)


@pytest.mark.parametrize("normalizing_factor", ["NUM_REAL_TARGET_TOKENS", None])
def test_microbatched_gradients_equal_full_batch_gradients(reference, normalizing_factor):
    model, params, _, _, _ = reference
    model.loss_normalizing_factor = normalizing_factor
    try:
        # Four examples whose target lengths differ, so per-microbatch token counts differ.
        batch = {k: np.concatenate([v, make_batch(3)[k]]) for k, v in make_batch().items()}
        batch["decoder_loss_weights"][1, 2:] = 0
        full = jax.jit(lambda p: grad_accumulation.loss_and_grads(model, p, batch, None, 1))(params)
        micro = jax.jit(lambda p: grad_accumulation.loss_and_grads(model, p, batch, None, 2 * B // 2))(params)
    finally:
        model.loss_normalizing_factor = "NUM_REAL_TARGET_TOKENS"
    (loss_full, metrics_full), grads_full = full
    (loss_micro, metrics_micro), grads_micro = micro
    np.testing.assert_allclose(loss_micro, loss_full, rtol=1e-5)
    _assert_trees_close(grads_micro, grads_full, rtol=1e-4, atol=1e-5)  # sum loss: grads ~10x
    for name in ("loss", "z_loss", "accuracy", "num_target_tokens", "num_examples", "loss_per_token/text_only"):
        np.testing.assert_allclose(metrics_micro[name].compute(), metrics_full[name].compute(), rtol=1e-5)


def test_microbatches_must_divide_the_batch(reference):
    model, params, batch, _, _ = reference
    with pytest.raises(ValueError, match="not divisible by num_microbatches=3"):
        grad_accumulation.loss_and_grads(model, params, batch, None, 3)


def test_scanned_remat_shrinks_the_step_temporaries():
    """With scanned layers, remat keeps less than the plain step (measured in benchmarks as
    peak_memory_mib; unrolled remat does not shrink on XLA:CPU, see docs/performance.md)."""
    from benchmarks import measure
    from simvlm_jax.network import get_config

    cfg = get_config(
        "tiny", num_conv_blocks=0, patch_size=8, num_encoder_layers=3, num_decoder_layers=3, scan_layers=True
    )
    sizes = {
        policy: measure.step_temp_mib(dataclasses.replace(cfg, remat_policy=policy), measure.Shapes(16, 32, 32))
        for policy in ("none", "full")
    }
    assert sizes["full"] < 0.6 * sizes["none"], sizes
