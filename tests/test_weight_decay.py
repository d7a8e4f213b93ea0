"""Weight decay reaches kernels only (and embedding tables when asked), as configured by the model gins."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from simvlm_jax.network import SimVLMNetwork, tiny_config
from simvlm_jax.training.optimizers import weight_decay_mask


def _params():
    cfg = tiny_config(num_conv_blocks=0, patch_size=8, image_size=16, num_encoder_layers=1, num_decoder_layers=1)
    args = (jnp.zeros((1, 16, 16, 3)), jnp.ones((1,)), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32))
    shapes = jax.eval_shape(SimVLMNetwork(cfg).init, jax.random.PRNGKey(0), *args, jnp.ones((1, 3), jnp.int32))
    return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes["params"])


def _decayed(decay_embeddings):
    """{leaf name: whether one AdamW step with zero gradients shrank it} (only the decay moves anything)."""
    params = _params()
    optimizer = optax.adamw(1.0, weight_decay=0.1, mask=weight_decay_mask(decay_embeddings))
    updates, _ = optimizer.update(jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params)
    new = optax.apply_updates(params, updates)
    shrunk = {}
    for path, value in traverse_util.flatten_dict(new).items():
        moved = bool(np.all(np.asarray(value) < 1.0))
        assert moved or bool(np.all(np.asarray(value) == 1.0)), path
        shrunk.setdefault(path[-1], set()).add(moved)
    return shrunk


def test_only_kernels_are_decayed_by_default():
    shrunk = _decayed(False)
    assert shrunk["kernel"] == {True}
    for name in ("bias", "scale", "embedding", "rel_embedding"):
        assert shrunk[name] == {False}, name


def test_the_mask_keeps_the_container_type():
    """T5X hands the mask a FrozenDict: the mask must have the same tree structure."""
    from flax.core import freeze

    params = freeze(_params())
    mask = weight_decay_mask()(params)
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
    optimizer = optax.adamw(1.0, weight_decay=0.1, mask=weight_decay_mask())
    optimizer.update(jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params)


def test_embeddings_are_decayed_when_asked():
    shrunk = _decayed(True)
    assert shrunk["kernel"] == {True} and shrunk["embedding"] == {True}
    assert shrunk["bias"] == shrunk["scale"] == shrunk["rel_embedding"] == {False}


def test_the_model_gins_bind_the_mask(gin_entry_points):
    import gin

    from tests.helpers import GIN_DIR

    gin.parse_config_files_and_bindings([f"{GIN_DIR}/tiny_cpu.gin"], ["MODEL_DIR = '/tmp/x'"], finalize_config=False)
    assert "weight_decay_mask" in repr(gin.query_parameter("optax.adamw.mask"))
    assert "DECAY_EMBEDDINGS" in repr(gin.query_parameter("simvlm_optimizers.weight_decay_mask.decay_embeddings"))
    assert gin.query_parameter("%DECAY_EMBEDDINGS") is False
