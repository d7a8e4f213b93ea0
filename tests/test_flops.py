"""The analytic FLOP count (simvlm_jax/model/flops.py): by hand for one config, and against XLA."""

import jax
import numpy as np
import pytest

from benchmarks import measure
from simvlm_jax.model import flops
from simvlm_jax.network import tiny_config


def test_step_flops_by_hand():
    # D = 8, A = heads * head_dim = 2 * 4 = 8, M = 16, V = 10, one encoder and one decoder layer;
    # a 32x32 image in 16x16 patches -> 4 image tokens; 3 prefix tokens -> Le = 7; Ld = 2.
    cfg = tiny_config(
        emb_dim=8,
        num_heads=2,
        head_dim=4,
        mlp_dim=16,
        vocab_size=10,
        num_encoder_layers=1,
        num_decoder_layers=1,
        num_conv_blocks=0,
        patch_size=16,
        image_size=32,
    )
    counted = flops.step_flops(cfg, text_length=3, decoder_length=2)
    patch_conv = 2 * (2 * 2) * (16 * 16 * 3) * 8  # 2 * outputs * kernel volume * out channels = 49,152
    encoder = 2 * 7 * 8 * 24 + 2 * 7 * 8 * 8 + 4 * 7 * 7 * 8 + 4 * 7 * 8 * 16  # qkv, out, scores+values, MLP
    decoder_self = 2 * 2 * 8 * 24 + 2 * 2 * 8 * 8 + 4 * 2 * 2 * 8 + 4 * 2 * 8 * 16
    cross = 2 * 2 * 8 * 8 + 2 * 7 * 8 * 16 + 2 * 2 * 8 * 8 + 4 * 2 * 7 * 8  # q, k+v of Le tokens, out, attention
    logits = 2 * 2 * 8 * 10
    assert (patch_conv, encoder, decoder_self, cross, logits) == (49152, 8736, 2176, 2752, 320)
    assert counted.conv_stem == counted.first_conv == patch_conv
    assert counted.image_projection == 0
    assert (counted.encoder, counted.decoder_self, counted.cross_attention, counted.logits) == (
        encoder,
        decoder_self,
        cross,
        logits,
    )
    forward = patch_conv + encoder + decoder_self + cross + logits
    assert counted.forward == forward == 63136
    assert counted.train == 3 * forward - patch_conv  # no input gradient for the pixels


def test_conv_stem_flops_by_hand():
    # Root 7x7/2 conv 3 -> 4 channels on 16x16 (-> 8x8), max pool -> 4x4, one bottleneck of width 4
    # (16 output channels, projection shortcut).
    cfg = tiny_config(num_conv_blocks=1, stem_width=4, stem_blocks_per_stage=(1,), image_size=16)
    total, first = flops.conv_stem_flops(cfg, 16, 16)
    root = 2 * 8 * 8 * 49 * 3 * 4
    block = 2 * 16 * (4 * 4 + 9 * 4 * 4 + 4 * 16 + 4 * 16)  # conv1, conv2, conv3, projection on 4x4
    assert first == root
    assert total == root + block


@pytest.mark.parametrize("num_conv_blocks", [0, 1])
def test_analytic_train_flops_match_xla_cost_analysis(num_conv_blocks):
    """XLA also counts elementwise work (norms, softmax, Adam), so agreement within 10% is expected."""
    cfg = tiny_config(
        emb_dim=256,
        num_heads=4,
        head_dim=64,
        mlp_dim=1024,
        vocab_size=4000,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_conv_blocks=num_conv_blocks,
        patch_size=8,
        stem_width=16,
        stem_blocks_per_stage=(1,),
        image_size=32,
    )
    shapes = measure.Shapes(batch=4, text_length=16, decoder_length=16)
    init, step = measure.train_step_fn(cfg)
    batch = jax.eval_shape(lambda: jax.tree.map(jax.numpy.asarray, measure.random_batch(cfg, shapes)))
    state = jax.eval_shape(init, jax.random.key(0), batch)
    from_xla = measure.xla_flops(step.lower(state, batch).compile())
    analytic = flops.step_flops(cfg, 16, 16).train * shapes.batch
    assert from_xla is not None
    np.testing.assert_allclose(analytic / from_xla, 1.0, atol=0.1)
