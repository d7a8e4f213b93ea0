"""The 2D relative position bias among image patches: buckets, equal results when zero, gradients, reach."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from simvlm_jax.network import SimVLMNetwork, tiny_config
from simvlm_jax.network.relative_position import bucket_index, num_buckets

# 32x32 images in a 4x4 grid of patches (ViT stem, patch 8), a prefix of 3 and a decoder of 4 tokens.
CONFIG = dict(num_conv_blocks=0, patch_size=8, image_size=32, vocab_size=40, num_encoder_layers=2, num_decoder_layers=1)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    image_mask = np.array([1.0, 0.0], np.float32)  # example 1 is text-only
    prefix = np.array([[4, 5, 0], [6, 7, 8]], np.int32)
    targets = np.array([[9, 10, 11, 1], [12, 13, 1, 0]], np.int32)
    return images, image_mask, prefix, np.pad(targets[:, :-1], ((0, 0), (1, 0))), targets


def _init(cfg):
    return SimVLMNetwork(cfg).init(jax.random.PRNGKey(0), *_inputs())["params"]


def _with_tables(params, fn):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {k: (fn(k, v) if "image_relative_position" in k else v) for k, v in flat.items()}
    )


def test_buckets_are_shared_by_equal_offsets_and_absent_elsewhere():
    index = np.asarray(bucket_index((3, 4), 2, 5, (3, 4)))
    none = num_buckets((3, 4))
    assert index.shape == (2 * 12 + 5, 2 * 12 + 5) and none == 5 * 7
    patch = lambda n, r, c: n * 12 + r * 4 + c  # noqa: E731
    # (0,0)->(1,2) and (1,1)->(2,3) have the same offset; (0,0)->(1,3) another; the self-pair its own.
    assert index[patch(0, 0, 0), patch(0, 1, 2)] == index[patch(0, 1, 1), patch(0, 2, 3)]
    assert index[patch(0, 0, 0), patch(0, 1, 3)] != index[patch(0, 0, 0), patch(0, 1, 2)]
    assert index[patch(1, 0, 0), patch(1, 1, 2)] == index[patch(0, 0, 0), patch(0, 1, 2)]  # same in image 1
    assert len(np.unique(index[:12, :12])) == none  # every offset of a 3x4 grid occurs
    assert np.all(index[:12, 12:24] == none) and np.all(index[24:, :] == none) and np.all(index[:, 24:] == none)
    # A larger grid than the table's clips its long offsets to the edge buckets.
    assert int(bucket_index((5, 5), 1, 0, (3, 4)).max()) < none


def test_zero_tables_give_exactly_the_model_without_the_term():
    with_term, without = tiny_config(**CONFIG), tiny_config(**CONFIG, image_relative_position=False)
    params = _init(with_term)
    tables = [v for k, v in traverse_util.flatten_dict(params).items() if "image_relative_position" in k]
    assert len(tables) == 2 and all(t.shape == (7 * 7, with_term.num_heads) and not t.any() for t in tables)
    stripped = traverse_util.unflatten_dict(
        {k: v for k, v in traverse_util.flatten_dict(params).items() if "image_relative_position" not in k}
    )
    logits = SimVLMNetwork(with_term).apply({"params": params}, *_inputs())
    plain = SimVLMNetwork(without).apply({"params": stripped}, *_inputs())
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(plain))


def test_the_bias_moves_image_examples_only_and_gets_gradients():
    cfg = tiny_config(**CONFIG)
    model = SimVLMNetwork(cfg)
    params = _init(cfg)
    rng = np.random.default_rng(3)
    biased = _with_tables(params, lambda k, v: jnp.asarray(rng.normal(size=v.shape), jnp.float32))
    base = model.apply({"params": params}, *_inputs())
    moved = model.apply({"params": biased}, *_inputs())
    assert not np.allclose(base[0], moved[0], atol=1e-4)  # the image example attends with the bias
    np.testing.assert_array_equal(np.asarray(base[1]), np.asarray(moved[1]))  # the text-only one never sees it

    def loss(tables_params):
        logits = model.apply({"params": tables_params}, *_inputs())
        return jnp.sum(jax.nn.log_softmax(logits[0]) * jax.nn.one_hot(_inputs()[4][0], cfg.vocab_size))

    grads = jax.grad(loss)(biased)
    flat = traverse_util.flatten_dict(grads)
    table_grads = [np.asarray(v) for k, v in flat.items() if "image_relative_position" in k]
    assert all(np.abs(g).sum() > 0 for g in table_grads)
    # Against a central finite difference along the gradient of the first table.
    key = next(k for k in flat if "image_relative_position" in k)
    direction = np.asarray(flat[key]) / np.linalg.norm(flat[key])
    eps = 1e-2

    def shifted(sign):
        return _with_tables(biased, lambda k, v: v + sign * eps * direction if k == key else v)

    numeric = (loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * eps)
    np.testing.assert_allclose(float(numeric), float(np.linalg.norm(flat[key])), rtol=2e-2)
