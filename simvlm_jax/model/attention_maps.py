"""Where the decoder looked: its cross-attention over each image's patches while writing its output.

    maps = cross_attention_maps(model, params, features, predicted)   # float32 [B, N, h, w], each map sums to 1

One teacher-forced pass over the predicted tokens (the einsum attention, which keeps its weights as the
'intermediates' collection) gives every decoder layer's cross-attention weights [B, heads, L_dec, L_enc].
They are averaged over layers, heads and the generated tokens (EOS included, padding not); the first
N * h * w encoder positions are the image tokens ([image tokens ; text prefix], network/simvlm.py), which
are cut per image and laid out on the stem's h x w grid.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from simvlm_jax.network import SimVLMNetwork

CROSS_ATTENTION = "encoder_decoder_attention"


def _cross_weights(intermediates: Mapping[str, Any]) -> list[np.ndarray]:
    """Every decoder layer's cross-attention weights [B, heads, L_dec, L_enc] in the sown tree."""
    flat = jax.tree_util.tree_flatten_with_path(intermediates)[0]
    found = []
    for path, leaf in flat:
        names = [str(getattr(key, "key", getattr(key, "name", key))) for key in path]
        if CROSS_ATTENTION in names and "attention_weights" in names:
            found.append(np.asarray(leaf, np.float32))
    return found


def cross_attention_maps(
    model, params, features: Mapping[str, np.ndarray], predicted: Sequence[Sequence[int]]
) -> np.ndarray:
    """float32 [B, N, h, w]: per example and image, the decoder's mean cross-attention on each patch while
    it wrote `predicted` (token ids [B, L_dec], 0 after EOS), normalised to sum to 1 per image.

    features: the model's encoder features for the batch (encoder_image [B, (N,) S, S, C],
    encoder_image_mask, encoder_input_tokens), as the feature converter makes them.
    """
    config = model.module.config
    if config.scan_layers or config.decoder_only:
        raise ValueError("attention maps need an encoder-decoder model with unrolled layers (scan_layers=False)")
    network = SimVLMNetwork(dataclasses.replace(config, attention_impl="einsum"))
    targets = np.asarray(predicted, np.int32)  # [B, L_dec]
    decoder_inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))  # shifted right, 0 = BOS
    images = np.asarray(features["encoder_image"], np.float32)
    _, state = network.apply(
        {"params": params},
        images,
        np.asarray(features["encoder_image_mask"], np.float32),
        np.asarray(features["encoder_input_tokens"], np.int32),
        decoder_inputs,
        targets,
        mutable=["intermediates"],
    )
    layers = _cross_weights(state["intermediates"])
    if not layers:
        raise ValueError("no cross-attention weights were kept (is the model encoder-decoder?)")
    weights = np.mean([w.mean(axis=1) for w in layers], axis=0)  # [B, L_dec, L_enc]
    written = (targets > 0).astype(np.float32)  # [B, L_dec]: generated tokens, EOS included
    per_example = (weights * written[:, :, None]).sum(axis=1) / np.maximum(written.sum(axis=1), 1.0)[:, None]
    num_images = images.shape[1] if images.ndim == 5 else 1
    grid_h, grid_w = config.image_grid(images.shape[-3], images.shape[-2])
    patches = per_example[:, : num_images * grid_h * grid_w].reshape(-1, num_images, grid_h, grid_w)
    return patches / np.maximum(patches.sum(axis=(2, 3), keepdims=True), 1e-12)


def maps_fn(model, params) -> Optional[Callable]:
    """`cross_attention_maps` bound to the model and its parameters, or None where it does not apply:
    scanned-layer or decoder-only models, and runs of several processes (parameters not all on this host)."""
    config = model.module.config
    if config.scan_layers or config.decoder_only or jax.process_count() > 1:
        return None
    return functools.partial(cross_attention_maps, model, params)


def overlay(image: np.ndarray, attention: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 [S, S, 3] image with an attention map [h, w] drawn over it as a heat map -> uint8 [S, S, 3]."""
    from matplotlib import colormaps
    from PIL import Image

    size = image.shape[1], image.shape[0]
    scaled = attention / max(float(attention.max()), 1e-12)
    heat = Image.fromarray(np.uint8(np.round(255 * scaled))).resize(size, Image.Resampling.BILINEAR)
    colours = colormaps["inferno"](np.asarray(heat, np.float32) / 255.0)[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colours
    return np.uint8(np.clip(np.round(255 * blended), 0, 255))
