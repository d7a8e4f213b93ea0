"""The decoder's cross-attention over image patches (model/attention_maps.py), on a tiny model."""

import dataclasses

import jax
import numpy as np
import pytest

from simvlm_jax.model.attention_maps import cross_attention_maps, overlay
from simvlm_jax.network import SimVLMNetwork
from tests.helpers import make_batch, make_model


@pytest.fixture(scope="module")
def tiny():
    model = make_model(vocab_size=64)
    batch = make_batch(0)
    params = model.get_initial_variables(jax.random.key(0), {k: v.shape for k, v in batch.items()})["params"]
    return model, params, batch


def test_a_map_per_image_on_the_stem_grid_summing_to_one(tiny):
    model, params, batch = tiny
    predicted = np.asarray(batch["decoder_target_tokens"])
    maps = cross_attention_maps(model, params, batch, predicted)
    grid = model.module.config.image_grid(batch["encoder_image"].shape[1], batch["encoder_image"].shape[2])
    present = np.asarray(batch["encoder_image_mask"]) > 0
    assert maps.shape == (len(predicted), 1, *grid) and np.all(maps >= 0)
    np.testing.assert_allclose(maps[present].sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    assert np.all(maps[~present] == 0)  # a text-only example: its image tokens are masked out of attention


def test_the_map_is_the_mean_of_the_kept_weights_over_layers_heads_and_written_tokens(tiny):
    """An independent computation from the weights the attention layers keep ('intermediates')."""
    model, params, batch = tiny
    predicted = np.asarray(batch["decoder_target_tokens"])
    network = SimVLMNetwork(dataclasses.replace(model.module.config, attention_impl="einsum"))
    inputs = np.pad(predicted[:, :-1], ((0, 0), (1, 0)))
    args = (batch["encoder_image"], batch["encoder_image_mask"], batch["encoder_input_tokens"], inputs, predicted)
    _, state = network.apply({"params": params}, *args, mutable=["intermediates"])
    layers = [
        v["encoder_decoder_attention"]["attention_weights"][0] for k, v in state["intermediates"]["decoder"].items()
    ]
    example = int(np.argmax(np.asarray(batch["encoder_image_mask"])))
    written = predicted[example] > 0
    weights = np.mean([np.asarray(w)[example].mean(axis=0)[written].mean(axis=0) for w in layers], axis=0)
    tokens = model.module.config.num_image_tokens
    expected = weights[:tokens] / weights[:tokens].sum()
    maps = cross_attention_maps(model, params, batch, predicted)
    np.testing.assert_allclose(maps[example, 0].reshape(-1), expected, rtol=1e-4, atol=1e-7)


def test_overlay_keeps_the_image_size():
    image = np.zeros((64, 64, 3), np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    drawn = overlay(image, heat)
    assert drawn.shape == (64, 64, 3) and drawn.dtype == np.uint8
    assert drawn[:8, :8].mean() > drawn[-8:, -8:].mean()  # hot where the attention is
