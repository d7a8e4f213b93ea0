"""The training interface: loss only on targets, scoring, and cached greedy decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simvlm_jax.model import simvlm_model as models
from simvlm_jax.network import SimVLMNetwork
from tests.helpers import L_DEC, L_ENC, B, S, make_batch, make_model  # noqa: F401


@pytest.fixture(scope="module")
def model_and_params():
    model = make_model()
    batch = make_batch()
    shapes = {k: v.shape for k, v in batch.items()}
    params = model.get_initial_variables(jax.random.key(0), shapes)["params"]
    return model, params


def test_loss_matches_a_hand_computation_on_target_tokens_only(model_and_params):
    model, params = model_and_params
    batch = make_batch()
    loss, metrics = model.loss_fn(params, batch, None)
    logits = model._compute_logits(params, batch)
    log_probs = jax.nn.log_softmax(logits)
    picked = np.take_along_axis(np.asarray(log_probs), batch["decoder_target_tokens"][..., None], -1)[..., 0]
    w = batch["decoder_loss_weights"]
    z = model.z_loss * np.square(np.asarray(jax.nn.logsumexp(logits, -1)))
    expected = np.sum((-picked + z) * w) / w.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert float(metrics["num_target_tokens"].compute()) == w.sum()
    # Per-source losses split the same tokens: example 0 has the image, example 1 is text-only.
    it = metrics["loss_per_token/image_text"].compute()
    np.testing.assert_allclose(it, np.sum(-picked[0] * w[0]) / w[0].sum(), rtol=1e-5)


def test_padding_targets_do_not_change_the_loss(model_and_params):
    model, params = model_and_params
    batch = make_batch()
    loss = model.loss_fn(params, batch, None)[0]
    changed = dict(batch)
    changed["decoder_target_tokens"] = batch["decoder_target_tokens"].copy()
    changed["decoder_target_tokens"][0, 5] = 17  # a padding position, weight 0 ...
    changed["decoder_loss_weights"] = batch["decoder_loss_weights"]  # ... and it stays weight 0
    np.testing.assert_allclose(model.loss_fn(params, changed, None)[0], loss, rtol=1e-6)
    # while a change to a real target token does change it
    changed["decoder_target_tokens"][1, 2] = (batch["decoder_target_tokens"][1, 2] + 1) % 48 + 2
    assert abs(float(model.loss_fn(params, changed, None)[0]) - float(loss)) > 1e-6


def test_score_batch_is_minus_the_summed_cross_entropy(model_and_params):
    model, params = model_and_params
    batch = make_batch()
    scores = model.score_batch(params, batch)
    assert scores.shape == (B,)
    no_z = models.SimVLMModel(
        model.module,
        model.input_vocabulary,
        model.output_vocabulary,
        model.optimizer_def,
        z_loss=0.0,
        loss_normalizing_factor=None,
    )
    np.testing.assert_allclose(-jnp.sum(scores), no_z.loss_fn(params, batch, None)[0], rtol=1e-5)


def test_label_smoothing_loss_is_zero_for_the_smoothed_target():
    vocab = 7
    targets = jnp.array([[3]])
    smoothing = 0.1
    probs = jnp.full((vocab,), smoothing / (vocab - 1)).at[3].set(1 - smoothing)
    loss, _ = models.cross_entropy_with_z_loss(jnp.log(probs)[None, None], targets, smoothing, 0.0)
    np.testing.assert_allclose(loss, 0.0, atol=1e-5)


def test_cached_greedy_decoding_equals_full_recomputation(model_and_params):
    model, params = model_and_params
    batch = make_batch(1)
    tokens, aux = model.predict_batch_with_aux(params, batch)
    tokens = np.asarray(tokens)
    # Slow reference: rerun the whole decoder on the growing prefix at every step, no cache.
    encoded, mask = model.encode(params, batch)
    prefix = np.zeros((B, L_DEC), np.int32)
    expected = np.zeros((B, L_DEC), np.int32)
    scores = np.zeros(B)
    done = np.zeros(B, bool)
    for t in range(L_DEC):
        logits = model.module.apply({"params": params}, encoded, mask, jnp.asarray(prefix), method=SimVLMNetwork.decode)
        log_probs = np.asarray(jax.nn.log_softmax(logits[:, t]))
        chosen = log_probs.argmax(-1)
        scores += np.where(done, 0.0, log_probs[np.arange(B), chosen])
        expected[:, t] = np.where(done, 0, chosen)
        done |= chosen == 1
        if t + 1 < L_DEC:
            prefix[:, t + 1] = expected[:, t]
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_allclose(aux["scores"], scores, rtol=1e-4, atol=1e-4)


def test_initial_variables_carry_params_axes(model_and_params):
    model, _ = model_and_params
    variables = model.get_initial_variables(jax.random.key(1), {k: v.shape for k, v in make_batch().items()})
    assert set(variables) == {"params", "params_axes"}
