"""TFDS builder `embedded_scenes`: procedural shape scenes with one caption each.

Generated locally from `simvlm_jax.data.scenes`, deterministically; nothing is downloaded.
Splits: `train` and `validation` (no held-out colour-shape pair) and `heldout` (each image has at
least one pair of `scenes.HELDOUT_PAIRS`). Split sizes are `scenes.SPLIT_SIZES` unless the builder is
given others (`EmbeddedScenes(split_sizes={...})`, as the tests do for small splits).

Per-object metadata (colours, shapes, sizes, positions) is not stored, which keeps generation fast:
`scenes.generate_example(split, index)` regenerates it exactly, `index` being the number in `id`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax.data import scenes


class EmbeddedScenes(tfds.core.GeneratorBasedBuilder):
    """Procedural 64x64 scenes of one or two coloured shapes, with canonical captions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: 7 colours, 5 shapes, 2 sizes, 4 relations, 5 held-out pairs.",
    }
    # This module and its folder (where TFDS looks for metadata and checksum files; none here),
    # given explicitly: TFDS fails to infer them when `simvlm_jax` is a namespace package.
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def __init__(self, *, split_sizes: Mapping[str, int] | None = None, **kwargs):
        """`split_sizes`: {split: number of examples}, default `scenes.SPLIT_SIZES`; used when generating."""
        self._split_sizes = scenes.split_sizes(split_sizes)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        size = scenes.IMAGE_SIZE
        return self.dataset_info_from_configs(
            description=(
                "One or two flat-coloured shapes on a dark background, captioned by a fixed "
                "grammar ('a small blue square to the left of a large green triangle'). The "
                f"'heldout' split holds the (colour, shape) pairs {list(scenes.HELDOUT_PAIRS)}, "
                "which never appear in 'train' or 'validation'."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                    "caption": tfds.features.Text(),
                    "id": tfds.features.Text(),  # "<split>-<index>", e.g. "train-00042".
                    "num_objects": np.int32,  # 1 or 2.
                    "relation": tfds.features.Text(),  # Of the 1st-mentioned object; "" if one.
                    "has_heldout_pair": np.bool_,  # True exactly in the heldout split.
                }
            ),
            supervised_keys=("image", "caption"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Everything is generated locally.
        return {split: self._generate_examples(split) for split in scenes.SPLITS}

    def _generate_examples(self, split: str):
        for index in range(self._split_sizes[split]):
            image, caption, metadata = scenes.generate_example(split, index)
            yield (
                index,
                {
                    # A PIL image: tfds.features.Image then encodes the PNG with PIL, which is faster
                    # than its TensorFlow path for these small images.
                    "image": PIL.Image.fromarray(image),
                    "caption": caption,
                    "id": metadata["id"],
                    "num_objects": metadata["num_objects"],
                    "relation": metadata["relation"],
                    "has_heldout_pair": metadata["has_heldout_pair"],
                },
            )
