"""The decoder-only ablation: one stack, a prefix-LM mask, and cached decoding equal to full passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simvlm_jax.network import SimVLMNetwork, tiny_config
from simvlm_jax.network.decoder_only import prefix_lm_mask
from tests.helpers import L_DEC, B, S, make_batch, make_model

FEATURES = ("encoder_image", "encoder_image_mask", "encoder_input_tokens", "decoder_input_tokens")


def test_prefix_lm_mask_reads_the_prefix_both_ways_and_the_targets_causally():
    prefix_valid = np.array([[True, True, False]])  # two prefix tokens and a padding slot
    target_valid = np.array([[True, True]])
    mask = np.asarray(prefix_lm_mask(prefix_valid, target_valid))[0, 0].astype(int)
    expected = [
        # p0 p1 pad t0 t1
        [1, 1, 0, 0, 0],  # p0 sees p1 (bidirectional), no target
        [1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0],  # a padding query sees nothing
        [1, 1, 0, 1, 0],  # t0: the whole prefix and itself
        [1, 1, 0, 1, 1],
    ]
    np.testing.assert_array_equal(mask, expected)


@pytest.fixture(scope="module")
def model_and_params():
    model = make_model(decoder_only=True)
    batch = make_batch()
    params = model.get_initial_variables(jax.random.key(0), {k: v.shape for k, v in batch.items()})["params"]
    return model, params


def test_one_stack_of_both_depths_and_no_encoder_or_cross_attention(model_and_params):
    model, params = model_and_params
    cfg = model.module.config
    assert "encoder" not in params
    layers = [k for k in params["decoder"] if k.startswith("layers_")]
    assert len(layers) == cfg.num_encoder_layers + cfg.num_decoder_layers
    assert set(params["decoder"]["layers_0"]) >= {"attention", "mlp"}
    assert "encoder_decoder_attention" not in params["decoder"]["layers_0"]


def test_a_target_sees_the_prefix_and_earlier_targets_only(model_and_params):
    model, params = model_and_params
    batch = make_batch()
    logits = np.asarray(model._compute_logits(params, batch))
    later = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"].copy())
    later["decoder_input_tokens"][:, 3] = 11  # changes what positions >= 3 see
    changed = np.asarray(model._compute_logits(params, later))
    np.testing.assert_array_equal(changed[:, :3], logits[:, :3])
    assert np.abs(changed[:, 3] - logits[:, 3]).max() > 1e-4
    prefix = dict(batch, encoder_input_tokens=batch["encoder_input_tokens"].copy())
    prefix["encoder_input_tokens"][:, 1] = 12  # every valid target sees the whole prefix
    moved = np.abs(np.asarray(model._compute_logits(params, prefix)) - logits).max(axis=-1)  # [B, L]
    valid = batch["decoder_target_tokens"] > 0
    assert np.all(moved[valid] > 1e-5)


def test_every_parameter_gets_a_gradient(model_and_params):
    model, params = model_and_params
    grads = jax.grad(lambda p: model.loss_fn(p, make_batch(), None)[0])(params)
    norms = {
        jax.tree_util.keystr(path): float(jnp.linalg.norm(g)) for path, g in jax.tree_util.tree_leaves_with_path(grads)
    }
    assert all(np.isfinite(n) for n in norms.values())
    # Zero at initialisation, as in the encoder-decoder: the stem blocks behind their zero-initialised
    # last norm. And by construction: the last layer's relative positions only change image-token outputs,
    # which nothing reads after the last layer.
    last = f"['layers_{len([k for k in params['decoder'] if k.startswith('layers_')]) - 1}']"
    unexpected = [
        k for k, n in norms.items() if n == 0.0 and "image_stem" not in k and not (last in k and "relative" in k)
    ]
    assert unexpected == []
    assert norms["['decoder']['layers_0']['image_relative_position']['rel_embedding']"] > 0


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_cached_decoding_equals_rerunning_the_whole_stack(model_and_params, method):
    model, params = model_and_params
    batch = make_batch(1)
    settings = {"method": method, "pad_id": 0, "alpha": 0.0} if method == "beam" else {"pad_id": 0}
    tokens, aux = model.predict_batch_with_aux(
        params, batch, decoder_params=settings, num_decodes=2 if method == "beam" else 1
    )
    tokens = np.asarray(tokens)
    if method == "greedy":
        prefix = np.zeros((B, L_DEC), np.int32)
        for t in range(L_DEC):  # the slow reference: the whole stack over the tokens so far
            logits = np.array(model._compute_logits(params, dict(batch, decoder_input_tokens=prefix)))[:, t]
            logits[:, 0] = -np.inf
            chosen = logits.argmax(-1)
            if t + 1 < L_DEC:
                prefix[:, t + 1] = chosen
        expected = np.concatenate([prefix[:, 1:], chosen[:, None]], axis=1)
        expected = np.where(np.cumsum(expected == 1, axis=1) - (expected == 1) > 0, 0, expected)
        np.testing.assert_array_equal(tokens, expected)
    # Beam or greedy, the decodes' scores are what score_batch (no cache) gives them.
    weights = (tokens > 0).astype(np.int32)
    scoring = {k: batch[k] for k in FEATURES[:3]}
    scoring.update(
        decoder_target_tokens=tokens,
        decoder_input_tokens=np.pad(tokens[:, :-1], ((0, 0), (1, 0))),
        decoder_loss_weights=weights,
    )
    np.testing.assert_allclose(model.score_batch(params, scoring), aux["scores"], rtol=1e-4, atol=1e-4)


def test_images_of_another_size_are_refused():
    cfg = tiny_config(decoder_only=True, vocab_size=50, image_size=S)
    images = jnp.zeros((1, 2 * S, 2 * S, 3))
    with pytest.raises(ValueError, match="decoder_only needs 1 image"):
        SimVLMNetwork(cfg).init(
            jax.random.key(0), images, jnp.ones((1,)), jnp.ones((1, 3), jnp.int32), jnp.zeros((1, 4), jnp.int32), None
        )
