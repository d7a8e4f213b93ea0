"""SimVLM's SeqIO feature converter: T5X's encoder-decoder features plus the image.

Task features (after the preprocessors in `simvlm_jax.data.preprocessors`):

    inputs      int32 [k]           text prefix            -> encoder_input_tokens   int32 [L_enc]
    targets     int32 [n - k + 1]   suffix + EOS           -> decoder_target_tokens  int32 [L_dec]
                                                              decoder_input_tokens   int32 [L_dec]
                                                              decoder_loss_weights   int32 [L_dec]
    image       float32 [S, S, C]   normalised image       -> encoder_image          float32 [S, S, C]
    image_mask  float32 [1]         0 for text-only        -> encoder_image_mask     float32 [1]

TASK_FEATURE_LENGTHS holds `inputs`, `targets` and `image` (the resolution S). `image_mask` (one entry
per image) is carried as an ordinary output feature of every task (so Mixtures keep it) but needs no
entry in TASK_FEATURE_LENGTHS; an example without it counts as an image-text example.

Several images per example (NLVR2's two): `num_images` = N in TASK_FEATURE_LENGTHS. The task then gives
`image` float32 [N, S, S, C] and `image_mask` [N], and the model gets encoder_image [N, S, S, C] and
encoder_image_mask [N] per example (the network's [B, N, H, W, C] input; SimVLMConfig.max_images >= N).

Packing is not supported: an image belongs to exactly one example.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import seqio
import tensorflow as tf

FeatureSpec = seqio.FeatureConverter.FeatureSpec


class SimVLMFeatureConverter(seqio.EncDecFeatureConverter):
    """EncDecFeatureConverter + `encoder_image` and `encoder_image_mask` (see the module docstring)."""

    TASK_FEATURES = {
        "inputs": FeatureSpec(dtype=tf.int32),
        "targets": FeatureSpec(dtype=tf.int32),
        "image": FeatureSpec(dtype=tf.float32, rank=3),
    }
    MODEL_FEATURES = {
        "encoder_input_tokens": FeatureSpec(dtype=tf.int32),
        "decoder_target_tokens": FeatureSpec(dtype=tf.int32),
        "decoder_input_tokens": FeatureSpec(dtype=tf.int32),
        "decoder_loss_weights": FeatureSpec(dtype=tf.int32),
        "encoder_image": FeatureSpec(dtype=tf.float32, rank=3),
        "encoder_image_mask": FeatureSpec(dtype=tf.float32),
    }

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError(
                "SimVLM examples cannot be packed (each image belongs to one example): set "
                "`train/utils.DatasetConfig.pack = False` (and the same for train_eval/infer_eval)."
            )
        super().__init__(pack=False, **kwargs)

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        # `image_mask` needs no length; seqio.Evaluator passes one (it measures every output feature).
        lengths = {name: length for name, length in task_feature_lengths.items() if name not in _NOT_LENGTHS}
        # N from TASK_FEATURE_LENGTHS, else from the data: seqio.Evaluator passes only the output features'
        # lengths, so 'num_images' is gone there while the task's images are already [N, S, S, C].
        image = ds.element_spec["image"].shape
        if "num_images" in task_feature_lengths:
            self._num_images = num_images(task_feature_lengths)
        else:
            self._num_images = int(image[0]) if image.rank == 4 else 1
        # The image's rank is this call's: an instance used for N > 1 and then for one image goes back to 3.
        rank = 4 if self._num_images > 1 else 3  # image [N, S, S, C]: one more dimension, checked by SeqIO
        self.TASK_FEATURES = {**type(self).TASK_FEATURES, "image": FeatureSpec(dtype=tf.float32, rank=rank)}
        self.MODEL_FEATURES = {**type(self).MODEL_FEATURES, "encoder_image": FeatureSpec(dtype=tf.float32, rank=rank)}
        if self._num_images > 1:
            lengths["image"] = self._num_images  # trim_and_pad act on the first dimension: N, not S
        return super().__call__(ds, lengths)

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        converted = dict(super()._convert_example(features))
        converted["encoder_image"] = features["image"]
        converted["encoder_image_mask"] = tf.cast(features.get("image_mask", tf.constant([1.0])), tf.float32)
        return converted

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        # SeqIO calls this from __call__ with the lengths stripped of 'num_images': N is then __call__'s.
        if "num_images" in task_feature_lengths:
            n = num_images(task_feature_lengths)
        else:
            n = getattr(self, "_num_images", 1)
        # trim_and_pad act on the first dimension: S of an image [S, S, C], N of images [N, S, S, C]
        lengths["encoder_image"] = n if n > 1 else task_feature_lengths["image"]
        lengths["encoder_image_mask"] = n  # one entry per image
        return lengths


_NOT_LENGTHS = ("image_mask", "num_images")


def num_images(task_feature_lengths: Mapping[str, int]) -> int:
    """Images per example: TASK_FEATURE_LENGTHS['num_images'], 1 when absent."""
    return int(task_feature_lengths.get("num_images", 1))


def model_input_specs(
    task_feature_lengths: Mapping[str, int], batch_size: int, num_channels: int = 3
) -> tuple[dict[str, tuple], dict[str, type]]:
    """(shapes, dtypes) of the batches SimVLMFeatureConverter produces, from the lengths alone.

    encoder_input_tokens [B, L_enc], decoder_* [B, L_dec], encoder_image [B, S, S, C] and
    encoder_image_mask [B, 1] (with num_images N > 1: [B, N, S, S, C] and [B, N]); ints are int32, the
    image and its mask float32."""
    b, s, n = int(batch_size), int(task_feature_lengths["image"]), num_images(task_feature_lengths)
    l_enc, l_dec = int(task_feature_lengths["inputs"]), int(task_feature_lengths["targets"])
    shapes = {
        "encoder_input_tokens": (b, l_enc),
        "decoder_target_tokens": (b, l_dec),
        "decoder_input_tokens": (b, l_dec),
        "decoder_loss_weights": (b, l_dec),
        "encoder_image": (b, s, s, num_channels) if n == 1 else (b, n, s, s, num_channels),
        "encoder_image_mask": (b, n),
    }
    types = {name: (np.float32 if name.startswith("encoder_image") else np.int32) for name in shapes}
    return shapes, types
