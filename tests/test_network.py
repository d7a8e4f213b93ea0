"""Tests of simvlm_jax.network: shapes, masks, information flow, axis names, sizes, cached decoding.

Kept fast on a 2-core CPU, where XLA compile time dominates: parameters are shaped with
`jax.eval_shape(model.init)` and filled with numpy random numbers (compiling ~150 random initialisers
takes longer than everything else together), functions are jitted without backend optimisation and
compiled once per shape, and only `test_real_init_and_dropout` compiles an actual `init`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from flax.linen import partitioning as nn_partitioning

from simvlm_jax.network import SimVLMConfig, SimVLMNetwork, get_config, tiny_config
from simvlm_jax.network.attention import (
    cross_mask,
    decoder_causal_mask,
    encoder_self_mask,
    encoder_valid_mask,
)

ALLOWED_AXES = {
    "vocab", "embed", "mlp", "heads", "kv", "conv_height", "conv_width", "conv_in", "conv_out",
    "image_positions", "text_positions", "image_index", "relpos_buckets",
}  # fmt: skip

# Backend optimisation off: compiles 2-4x faster, and these tiny programs run in milliseconds anyway.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

TINY = tiny_config()
TINY2 = tiny_config(max_images=2)


# ----------------------------------------------------------------------------- helpers


def _inputs(cfg: SimVLMConfig, batch: int = 2, num_images: int = 0, size: int | None = None, seed: int = 0):
    """Random image(s), a text prefix with padding, and decoder inputs/targets with padding."""
    rng = np.random.default_rng(seed)
    size = cfg.image_size if size is None else size
    image_shape = (batch, size, size, 3) if num_images == 0 else (batch, num_images, size, size, 3)
    images = rng.normal(size=image_shape).astype(np.float32)
    image_mask = np.ones((batch,) if num_images == 0 else (batch, num_images), np.float32)
    enc_tokens = rng.integers(1, cfg.vocab_size, size=(batch, 5)).astype(np.int32)
    enc_tokens[:, 4] = 0  # one pad in every prefix
    targets = rng.integers(1, cfg.vocab_size, size=(batch, 6)).astype(np.int32)
    targets[1, 4:] = 0  # second example's suffix is shorter
    dec_inputs = np.concatenate([np.zeros((batch, 1), np.int32), targets[:, :-1]], axis=1)
    return images, image_mask, enc_tokens, dec_inputs, targets


@functools.cache
def _abstract_variables(cfg: SimVLMConfig, batch: int = 2, num_images: int = 0):
    """Shapes (and axis metadata) of every variable, allocating nothing."""
    args = _inputs(cfg, batch, num_images)
    return jax.eval_shape(SimVLMNetwork(cfg).init, jax.random.PRNGKey(0), *args)


@functools.cache
def _params(cfg: SimVLMConfig, num_images: int = 0):
    """Random parameters of the right shapes (numpy-filled: no XLA random initialisers to compile)."""
    shapes = _abstract_variables(cfg, num_images=num_images)["params"]
    rng = np.random.default_rng(1)
    flat = {}
    for path, leaf in traverse_util.flatten_dict(shapes).items():
        shape, name = leaf.shape, path[-1]
        if name == "scale":
            value = 1.0 + 0.1 * rng.normal(size=shape)
        elif name in ("bias", "embedding"):
            value = (0.1 if name == "bias" else 0.5) * rng.normal(size=shape)
        else:  # kernels, fan-in scaled: [H, W, in, out] convs, [heads, kv, embed] attention outputs
            in_dims = 3 if len(shape) == 4 else 2 if path[-2] == "out" else 1
            value = rng.normal(size=shape) / np.sqrt(math.prod(shape[:in_dims]))
        flat[path] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(flat)


@functools.cache
def _run(cfg: SimVLMConfig):
    """One compiled function per config: (encoded, encoder_mask, logits) of a full forward pass."""
    model = SimVLMNetwork(cfg)

    def run(module: SimVLMNetwork, images, image_mask, enc, dec_in, targets):
        encoded, encoder_mask = module.encode(images, image_mask, enc)
        return encoded, encoder_mask, module(images, image_mask, enc, dec_in, targets)

    return _jit(lambda params, *args: model.apply({"params": params}, *args, method=run))


def _count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


# ----------------------------------------------------------------------------- shapes


def test_forward_shapes_one_image():
    encoded, mask, logits = _run(TINY)(_params(TINY), *_inputs(TINY))
    assert logits.shape == (2, 6, TINY.vocab_size) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    assert TINY.num_image_tokens == 16
    assert encoded.shape == (2, 16 + 5, TINY.emb_dim) and mask.shape == (2, 16 + 5)
    assert mask.dtype == jnp.bool_ and mask.sum() == 2 * (16 + 4)


def test_forward_shapes_two_images_and_image_index():
    images, image_mask, enc, dec_in, targets = _inputs(TINY2, num_images=2)
    params = _params(TINY2, num_images=2)
    assert params["image_index_embedding"]["embedding"].shape == (2, TINY2.emb_dim)
    run = functools.partial(_run(TINY2), params)
    encoded, mask, logits = run(images, image_mask, enc, dec_in, targets)
    assert encoded.shape == (2, 2 * 16 + 5, TINY2.emb_dim) and mask.shape == (2, 2 * 16 + 5)
    assert logits.shape == (2, 6, TINY2.vocab_size)
    # The image-index embedding tells the images apart: swapping them changes the output.
    swapped = run(images[:, ::-1], image_mask, enc, dec_in, targets)[2]
    assert not np.allclose(logits, swapped, atol=1e-4)
    # An absent second image is invisible to every valid position; the present first one is not.
    image_mask[:, 1] = 0
    valid = targets > 0  # padding positions hold garbage that the loss masks out
    base = run(images, image_mask, enc, dec_in, targets)[2][valid]
    other = images.copy()
    other[:, 1] += 1.0
    changed = run(other, image_mask, enc, dec_in, targets)[2][valid]
    np.testing.assert_array_equal(base, changed)
    other[:, 0] += 1.0
    changed = run(other, image_mask, enc, dec_in, targets)[2][valid]
    assert not np.allclose(base, changed, atol=1e-4)


@pytest.mark.parametrize("blocks, tokens", [(0, 16), (1, 256), (2, 64), (3, 16), (4, 4)])
def test_stem_depths_build_with_documented_token_counts(blocks, tokens):
    # 64x64 tiny images: patch 16 -> 4x4; k blocks -> stride 2**(k+1).
    cfg = tiny_config(num_conv_blocks=blocks)
    assert cfg.num_image_tokens == tokens
    variables = _abstract_variables(cfg)
    args = _inputs(cfg)[:3]
    encoded, mask = jax.eval_shape(
        functools.partial(SimVLMNetwork(cfg).apply, method=SimVLMNetwork.encode), variables, *args
    )
    assert encoded.shape == (2, tokens + 5, cfg.emb_dim) and mask.shape == (2, tokens + 5)
    assert ("image_projection" in variables["params"]) == (blocks > 0)


@pytest.mark.parametrize("blocks", [0, 1, 2, 3, 4])
def test_every_stem_depth_gives_16_tokens_at_image_token_stride_16(blocks):
    """The conv-block ablation at equal compute in the Transformer: 64x64 images -> a 4x4 grid whatever k
    (k = 1, 2 merge 4x4 / 2x2 neighbourhoods of their finer grid; k = 4 runs its last stage at stride 1)."""
    cfg = tiny_config(num_conv_blocks=blocks, image_token_stride=16)
    assert cfg.num_image_tokens == 16 and cfg.image_grid() == (4, 4)
    variables = _abstract_variables(cfg)
    encoded, _ = jax.eval_shape(
        functools.partial(SimVLMNetwork(cfg).apply, method=SimVLMNetwork.encode), variables, *_inputs(cfg)[:3]
    )
    assert encoded.shape == (2, 16 + 5, cfg.emb_dim)
    if blocks:
        projection = variables["params"]["image_projection"]["kernel"]
        assert projection.shape == (cfg.stem_features, cfg.emb_dim)
    assert _count(variables["params"]) == expected_param_count(cfg)


def test_space_to_depth_keeps_every_value_in_its_neighbourhood():
    from simvlm_jax.network.conv_stem import space_to_depth

    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    y = space_to_depth(x, 2)
    assert y.shape == (2, 2, 3, 12)
    np.testing.assert_array_equal(y[1, 1, 2].reshape(2, 2, 3), x[1, 2:4, 4:6])
    assert space_to_depth(jnp.ones((1, 5, 5, 1)), 2).shape == (1, 3, 3, 4)  # zero-padded edges


def test_bfloat16_compute_keeps_float32_params_and_logits():
    cfg = tiny_config(dtype="bfloat16")
    variables = _abstract_variables(cfg)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables["params"])} == {np.dtype("float32")}
    encoded, _, logits = jax.eval_shape(_run(cfg), variables["params"], *_inputs(cfg))
    assert encoded.dtype == jnp.bfloat16 and logits.dtype == jnp.float32


def test_base_grid_is_14x14():
    assert get_config("base").num_image_tokens == 196
    assert get_config("base").image_grid(384, 384) == (24, 24)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="num_conv_blocks"):
        tiny_config(num_conv_blocks=5)
    with pytest.raises(ValueError, match="Unknown SimVLM size"):
        get_config("giant")
    images, image_mask, enc, _, _ = _inputs(TINY, num_images=2)
    with pytest.raises(ValueError, match="max_images"):
        SimVLMNetwork(TINY).apply({"params": _params(TINY)}, images, image_mask, enc, method=SimVLMNetwork.encode)


# ----------------------------------------------------------------------------- masks


def test_masks_on_worked_example():
    # [img0, img1, a, b, <pad>]; example 0 has its image, example 1 is text-only.
    valid = encoder_valid_mask(jnp.array([[1.0], [0.0]]), 2, jnp.array([[7, 8, 0], [7, 8, 0]]))
    np.testing.assert_array_equal(valid, [[1, 1, 1, 1, 0], [0, 0, 1, 1, 0]])
    with_image = [[1, 1, 1, 1, 0]] * 4 + [[0, 0, 0, 0, 0]]
    text_only = [[0, 0, 0, 0, 0]] * 2 + [[0, 0, 1, 1, 0]] * 2 + [[0, 0, 0, 0, 0]]
    enc_mask = encoder_self_mask(valid)
    assert enc_mask.shape == (2, 1, 5, 5) and enc_mask.dtype == jnp.bool_
    np.testing.assert_array_equal(enc_mask[0, 0], with_image)
    np.testing.assert_array_equal(enc_mask[1, 0], text_only)

    # Suffix "c d": targets [c d <pad>], inputs [0 c d].
    targets = jnp.array([[11, 12, 0]])
    inputs = jnp.array([[0, 11, 12]])
    dec_mask = decoder_causal_mask(inputs, targets)
    assert dec_mask.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(dec_mask[0, 0], [[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(decoder_causal_mask(inputs)[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    x_mask = cross_mask(targets > 0, valid[:1])
    assert x_mask.shape == (1, 1, 3, 5)
    np.testing.assert_array_equal(x_mask[0, 0], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]])


# ----------------------------------------------------------------------------- information flow


def test_text_only_example_is_blind_to_its_image():
    images, image_mask, enc, dec_in, targets = _inputs(TINY)
    image_mask[0] = 0.0  # example 0 is text-only, example 1 has an image
    params = _params(TINY)
    logits = _run(TINY)(params, images, image_mask, enc, dec_in, targets)[2]
    changed = _run(TINY)(params, images + 1.0, image_mask, enc, dec_in, targets)[2]
    assert np.all(targets[0] > 0)  # every position of example 0 is a valid target
    np.testing.assert_array_equal(logits[0], changed[0])
    assert not np.allclose(logits[1], changed[1], atol=1e-4)


def test_an_empty_encoder_contributes_exactly_nothing():
    """A text-only example with an empty prefix (k = 0: plain LM) has no valid encoder token: its logits
    equal those of a decoder whose cross-attention is removed, whatever its pixels, padding tokens or
    encoder parameters; an attention whose mask row is all False returns exactly zero."""
    from simvlm_jax.network.attention import MultiHeadAttention

    images, image_mask, enc, dec_in, targets = _inputs(TINY)
    image_mask[0] = 0.0
    enc[0] = 0  # no prefix at all
    params = _params(TINY)
    logits = _run(TINY)(params, images, image_mask, enc, dec_in, targets)[2]
    changed = _run(TINY)(params, images + 3.0, image_mask, enc, dec_in, targets)[2]
    np.testing.assert_array_equal(logits[0], changed[0])
    # Zeroing every cross-attention output projection (kernel and bias) changes nothing for example 0.
    flat = traverse_util.flatten_dict(params)
    no_cross = traverse_util.unflatten_dict(
        {k: (jnp.zeros_like(v) if "encoder_decoder_attention" in k else v) for k, v in flat.items()}
    )
    without = _run(TINY)(no_cross, images, image_mask, enc, dec_in, targets)[2]
    np.testing.assert_array_equal(logits[0], without[0])
    assert not np.allclose(logits[1], without[1], atol=1e-4)  # example 1 does use its encoder

    attention = MultiHeadAttention(num_heads=2, head_dim=4)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 8)), jnp.float32)
    mask = jnp.ones((2, 1, 3, 3), bool).at[0].set(False)
    variables = attention.init(jax.random.PRNGKey(0), x, x, mask)
    variables = jax.tree.map(lambda v: v + 0.3, variables)  # nonzero biases too
    out = attention.apply(variables, x, x, mask)
    assert np.all(np.asarray(out[0]) == 0.0) and np.all(np.abs(np.asarray(out[1])) > 0)


def test_prefix_is_bidirectional_and_suffix_causal():
    images, image_mask, enc, dec_in, targets = _inputs(TINY)
    params = _params(TINY)
    run = functools.partial(_run(TINY), params)
    # Encoder: changing the last text token changes the encoding of earlier tokens (images included).
    encoded, _, logits = run(images, image_mask, enc, dec_in, targets)
    enc2 = enc.copy()
    enc2[:, 3] = enc[:, 3] % (TINY.vocab_size - 1) + 1
    encoded2 = run(images, image_mask, enc2, dec_in, targets)[0]
    earlier = TINY.num_image_tokens + 3  # image tokens and the first three text tokens
    assert not np.allclose(encoded[:, :earlier], encoded2[:, :earlier], atol=1e-4)
    # Decoder: changing input token 3 leaves logits 0..2 untouched and changes logits 3.
    dec2 = dec_in.copy()
    dec2[:, 3] = dec_in[:, 3] % (TINY.vocab_size - 1) + 1
    logits2 = run(images, image_mask, enc, dec2, targets)[2]
    np.testing.assert_allclose(logits[:, :3], logits2[:, :3], atol=1e-6)
    assert not np.allclose(logits[:, 3], logits2[:, 3], atol=1e-4)


# ----------------------------------------------------------------------------- axis names


def _check_axes(variables) -> None:
    params = traverse_util.flatten_dict(variables["params"])
    axes = traverse_util.flatten_dict(
        nn_partitioning.get_axis_names(variables["params_axes"]),
        is_leaf=lambda _, x: isinstance(x, jax.sharding.PartitionSpec),
    )
    assert set(params) == set(axes), set(params) ^ set(axes)
    for path, leaf in params.items():
        names = tuple(axes[path])
        assert len(names) == leaf.ndim, (path, names, leaf.shape)
        assert set(names) <= ALLOWED_AXES, (path, names)


def test_every_param_has_allowed_logical_axes():
    _check_axes(_abstract_variables(TINY2, num_images=2))
    _check_axes(_abstract_variables(tiny_config(num_conv_blocks=0)))


def test_activation_constraints_trace_under_axis_rules():
    # Under a mesh and rules the constraints become real: a logical spec longer than the array's
    # rank, or an unknown mesh axis, fails while tracing.
    rules = [("batch", "data"), ("length", None), ("embed", None), ("mlp", "model"),
             ("heads", "model"), ("kv", None), ("vocab", "model")]  # fmt: skip
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    with jax.set_mesh(mesh), nn_partitioning.axis_rules(rules):
        variables = _abstract_variables(TINY)
        logits = jax.eval_shape(SimVLMNetwork(TINY).apply, variables, *_inputs(TINY))
    assert logits.shape == (2, 6, TINY.vocab_size)


# ----------------------------------------------------------------------------- sizes


def expected_param_count(cfg: SimVLMConfig) -> int:
    """Parameter count derived from the config (every Dense and conv-free projection has a bias)."""
    d, hk, m = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim
    attention = 4 * d * hk + 3 * hk + d  # q, k, v [d, h, k] + out [h, k, d] kernels; their biases
    mlp = 2 * d * m + m + d  # wi [d, m] + wo [m, d] kernels; their biases
    norm = 2 * d  # scale + bias
    grid_h, grid_w = cfg.image_grid()
    relative = (2 * grid_h - 1) * (2 * grid_w - 1) * cfg.num_heads if cfg.image_relative_position else 0
    encoder = cfg.num_encoder_layers * (2 * norm + attention + mlp + relative) + norm
    decoder = cfg.num_decoder_layers * (3 * norm + 2 * attention + mlp) + norm
    tables = (cfg.vocab_size + 2 * cfg.max_text_length + cfg.num_image_tokens) * d
    tables += d * cfg.max_images if cfg.max_images > 1 else 0
    # Stem: weight-standardised convs have no bias; each GroupNorm has scale + bias.
    w, channels = cfg.stem_width, cfg.num_channels
    if cfg.num_conv_blocks == 0:
        stem = cfg.patch_size**2 * channels * d + d  # patch conv straight to the model width
    else:
        stem = 7 * 7 * channels * w + 2 * w  # root conv + norm
        prev = w
        for stage in range(cfg.num_conv_blocks):
            inner, out = w * 2**stage, 4 * w * 2**stage
            for block in range(cfg.stem_blocks_per_stage[stage]):
                c_in = prev if block == 0 else out
                stem += c_in * inner + 9 * inner * inner + inner * out  # 1x1, 3x3, 1x1 convs
                stem += 2 * inner + 2 * inner + 2 * out  # their norms
                if block == 0:  # projection shortcut (width or stride changes) + norm
                    stem += c_in * out + 2 * out
            prev = out
        stem += cfg.stem_features * d + d  # Dense projection of the (merged) stem features to emb_dim
    return encoder + decoder + tables + stem


@pytest.mark.parametrize("name", ["base", "large", "huge"])
def test_full_size_param_counts(name):
    cfg = get_config(name)
    model = SimVLMNetwork(cfg)
    # Tiny inputs: the parameter shapes depend on the config only (the image table is resized).
    args = (
        jnp.zeros((1, 32, 32, 3)), jnp.ones((1,)), jnp.ones((1, 4), jnp.int32),
        jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32),
    )  # fmt: skip
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)["params"]
    count = _count(shapes)
    print(f"SimVLM-{name}: {count:,} parameters")
    assert count == expected_param_count(cfg)
    if name == "huge":
        assert 1.3e9 <= count <= 1.7e9


def test_tiny_param_count_matches_formula():
    assert _count(_params(TINY)) == expected_param_count(TINY)
    assert _count(_params(TINY2, num_images=2)) == expected_param_count(TINY2)


# ----------------------------------------------------------------------------- decoding cache


@pytest.mark.parametrize(
    "cfg",
    [TINY, tiny_config(scan_layers=True), tiny_config(attention_impl="fused")],
    ids=["unrolled", "scanned", "fused_attention"],
)
def test_cached_decoding_matches_full_causal_pass(cfg):
    model = SimVLMNetwork(cfg)
    params = _params(cfg)
    images, image_mask, enc, dec_in, targets = _inputs(cfg)
    encoded, enc_mask, full = _run(cfg)(params, images, image_mask, enc, dec_in, targets)
    decode = functools.partial(model.apply, method=SimVLMNetwork.decode)

    # The cache-creating call, as decoding code makes it: full-length input, mutable cache. It zeroes
    # the self-attention caches and stores the encoder output's cross-attention keys and values.
    _, state = decode({"params": params}, encoded, enc_mask, jnp.zeros_like(dec_in), decode=True, mutable=["cache"])
    if cfg.scan_layers:  # one stacked cache, batch axis first
        layer_cache = state["cache"]["decoder"]["layers"]
        layer_shape = (2, cfg.num_decoder_layers)
    else:
        layer_cache = state["cache"]["decoder"]["layers_0"]
        layer_shape = (2,)
    heads = (cfg.num_heads, cfg.head_dim)
    assert layer_cache["self_attention"]["cached_key"].shape == (*layer_shape, *heads, 6)  # length last
    assert not np.any(layer_cache["self_attention"]["cached_key"])
    assert layer_cache["encoder_decoder_attention"]["cross_key"].shape == (*layer_shape, *heads, encoded.shape[1])
    cache = state["cache"]

    @_jit
    def step(cache, token, encoder_output):
        return decode(
            {"params": params, "cache": cache}, encoder_output, enc_mask, token, decode=True, mutable=["cache"]
        )

    for i in range(dec_in.shape[1]):
        # Steps get zeros for the encoder output: they must read its keys and values from the cache.
        logits, state = step(cache, dec_in[:, i : i + 1], jnp.zeros_like(encoded))
        cache = state["cache"]
        # Padding targets only follow the valid ones, so for valid positions the padding-aware full
        # pass equals plain causal attention.
        valid = targets[:, i] > 0
        np.testing.assert_allclose(logits[valid, 0], full[valid, i], atol=1e-5, rtol=1e-5)
    assert int(cache["decoder"]["cache_index"]) == 6


# ----------------------------------------------------------------------------- resolution


def test_image_position_table_is_resized_for_larger_images():
    params = _params(TINY)
    images, image_mask, enc, dec_in, targets = _inputs(TINY, size=96)  # 96 / 16 -> 6x6 grid
    encoded, mask, logits = _run(TINY)(params, images, image_mask, enc, dec_in, targets)
    assert encoded.shape == (2, 36 + 5, TINY.emb_dim) and mask.shape == (2, 41)
    assert logits.shape == (2, 6, TINY.vocab_size) and np.all(np.isfinite(logits))

    table = params["image_position_embedding"]["embedding"]  # [16, embed] for the 4x4 grid
    positions = functools.partial(
        SimVLMNetwork(TINY).apply, {"params": params}, method=lambda m, h, w: m._image_positions(h, w)
    )
    np.testing.assert_array_equal(positions(4, 4), table)
    resized = positions(6, 6)
    expected = jax.image.resize(table.reshape(4, 4, -1), (6, 6, TINY.emb_dim), "bilinear")
    np.testing.assert_allclose(resized, expected.reshape(36, -1), atol=1e-6)


# ----------------------------------------------------------------------------- real init, dropout


def test_real_init_and_dropout():
    # A patch stem and one layer each keep XLA's compile of the random initialisers short.
    cfg = tiny_config(num_encoder_layers=1, num_decoder_layers=1, num_conv_blocks=0, dropout_rate=0.5)
    model = SimVLMNetwork(cfg)
    args = _inputs(cfg, size=32)
    variables = _jit(model.init)(jax.random.PRNGKey(0), *args)
    assert _count(variables["params"]) == expected_param_count(cfg)
    apply = _jit(model.apply, static_argnames="enable_dropout")
    key1, key2 = jax.random.split(jax.random.PRNGKey(1))
    plain = apply(variables, *args, enable_dropout=False, rngs={"dropout": key1})
    assert np.all(np.isfinite(plain))
    # enable_dropout=False ignores the dropout rng; enable_dropout=True depends on it.
    np.testing.assert_array_equal(plain, apply(variables, *args, enable_dropout=False, rngs={"dropout": key2}))
    dropped1 = apply(variables, *args, enable_dropout=True, rngs={"dropout": key1})
    dropped2 = apply(variables, *args, enable_dropout=True, rngs={"dropout": key2})
    assert not np.allclose(dropped1, dropped2) and not np.allclose(dropped1, plain)
