"""Stochastic depth (the paper's fine-tuning regulariser): per-example branch drops in the encoder and the
conv stem, none in the decoder, nothing at all outside training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from simvlm_jax.network import SimVLMNetwork, tiny_config
from simvlm_jax.network.layers import drop_path
from tests.helpers import S, make_batch

FEATURES = ("encoder_image", "encoder_image_mask", "encoder_input_tokens", "decoder_input_tokens")


class _DropPath(nn.Module):
    rate: float

    @nn.compact
    def __call__(self, x, enable_dropout):
        return drop_path(x, self.rate, enable_dropout)


def test_drop_path_drops_whole_examples_and_keeps_the_mean():
    x = jnp.ones((4000, 3, 5))
    out = np.asarray(_DropPath(0.25).apply({}, x, True, rngs={"dropout": jax.random.key(0)}))
    per_example = out.reshape(4000, -1)
    assert np.all((per_example == 0.0).all(axis=1) | np.isclose(per_example, 1 / 0.75).all(axis=1))
    assert abs((per_example[:, 0] == 0).mean() - 0.25) < 0.03
    assert abs(out.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(_DropPath(0.25).apply({}, x, False), x)  # not training: the identity


def _network_and_params(rate, **overrides):
    cfg = tiny_config(vocab_size=50, image_size=S, stem_width=8, stochastic_depth_rate=rate, **overrides)
    batch = make_batch()
    module = SimVLMNetwork(cfg)
    params = module.init(jax.random.key(0), *(batch[k] for k in FEATURES), None)["params"]
    # The stem's last norm starts at zero (each block starts as its shortcut); give its branch a value.
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.5 if "norm3" in jax.tree_util.keystr(path) else p, params
    )
    return module, params, batch


def test_off_in_evaluation_and_random_per_example_in_training():
    module, params, batch = _network_and_params(0.3)
    plain_module, _, _ = _network_and_params(0.0)
    inputs = [batch[k] for k in FEATURES]
    evaluated = module.apply({"params": params}, *inputs, None)
    np.testing.assert_array_equal(evaluated, plain_module.apply({"params": params}, *inputs, None))

    def train(seed):
        return module.apply(
            {"params": params}, *inputs, None, enable_dropout=True, rngs={"dropout": jax.random.key(seed)}
        )

    draws = [np.asarray(train(seed)) for seed in range(4)]
    assert any(np.abs(draws[0] - d).max() > 1e-4 for d in draws[1:])


def test_the_stem_and_the_encoder_drop_branches_and_the_decoder_does_not():
    module, params, batch = _network_and_params(0.3)
    images = jnp.asarray(batch["encoder_image"])[:, None]

    def stem(seed):
        return module.apply(
            {"params": params}, images, True, method=SimVLMNetwork.embed_images, rngs={"dropout": jax.random.key(seed)}
        )[0]

    assert any(np.abs(np.asarray(stem(0)) - np.asarray(stem(s))).max() > 1e-4 for s in range(1, 4))
    # With a patch embedding (no stem blocks) the encoder alone draws.
    patch_module, patch_params, _ = _network_and_params(0.3, num_conv_blocks=0, patch_size=S // 2)

    def encoder(seed):
        return patch_module.apply(
            {"params": patch_params},
            *(batch[k] for k in FEATURES[:3]),
            enable_dropout=True,
            method=SimVLMNetwork.encode,
            rngs={"dropout": jax.random.key(seed)},
        )[0]

    assert any(np.abs(np.asarray(encoder(0)) - np.asarray(encoder(s))).max() > 1e-4 for s in range(1, 4))
    encoded, mask = module.apply({"params": params}, *(batch[k] for k in FEATURES[:3]), method=SimVLMNetwork.encode)

    def decoder(seed):
        return module.apply(
            {"params": params},
            encoded,
            mask,
            batch["decoder_input_tokens"],
            enable_dropout=True,
            method=SimVLMNetwork.decode,
            rngs={"dropout": jax.random.key(seed)},
        )

    for seed in range(1, 4):  # dropout_rate is 0: with no stochastic depth in the decoder, nothing is random
        np.testing.assert_array_equal(decoder(0), decoder(seed))


def test_the_rate_is_checked():
    with pytest.raises(ValueError, match="stochastic_depth_rate must be in"):
        tiny_config(stochastic_depth_rate=1.0)
