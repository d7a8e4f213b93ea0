"""TFDS builder `embedded_scenes`: procedural shape scenes with one caption each.

Generated locally from `simvlm_jax.data.scenes`, deterministically; nothing is downloaded.
Splits: `train` and `validation` (no held-out colour-shape pair) and `heldout` (each image has at
least one pair of `scenes.HELDOUT_PAIRS`). Split sizes are `scenes.NUM_TRAIN`, `NUM_VALIDATION`
and `NUM_HELDOUT`, read when the data is generated.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax.data import scenes


def _bbox(obj: dict) -> np.ndarray:
    """The normalised box [ymin, xmin, ymax, xmax] float32 around an object's reserved pixels."""
    x0, y0, x1, y1 = obj["bbox"]
    return np.array([y0, x0, y1 + 1, x1 + 1], np.float32) / np.float32(scenes.IMAGE_SIZE)


class EmbeddedScenes(tfds.core.GeneratorBasedBuilder):
    """Procedural 64x64 scenes of one or two coloured shapes, with canonical captions."""

    VERSION = tfds.core.Version("1.0.0")
    # This module and its folder (where TFDS looks for metadata and checksum files; none here),
    # given explicitly: TFDS fails to infer them when `simvlm_jax` is a namespace package.
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent
    RELEASE_NOTES = {
        "1.0.0": "Initial release: 7 colours, 5 shapes, 2 sizes, 4 relations, 5 held-out pairs.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        size = scenes.IMAGE_SIZE
        return self.dataset_info_from_configs(
            description=(
                "One or two flat-coloured shapes on a dark background, captioned by a fixed "
                "grammar ('a small blue square to the left of a large green triangle'). The "
                f"'heldout' split holds the (colour, shape) pairs {list(scenes.HELDOUT_PAIRS)}, "
                "which never appear in 'train' or 'validation'."
            ),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                "caption": tfds.features.Text(),
                "id": tfds.features.Text(),  # "<split>-<index>"
                "num_objects": np.int32,
                "relation": tfds.features.Text(),  # Of objects[0] to objects[1]; "" if one.
                "has_heldout_pair": np.bool_,
                "objects": tfds.features.Sequence({  # In the order the caption mentions them.
                    "colour": tfds.features.ClassLabel(names=scenes.COLOUR_NAMES),
                    "shape": tfds.features.ClassLabel(names=scenes.SHAPES),
                    "size": tfds.features.ClassLabel(names=scenes.SIZES),
                    "bbox": tfds.features.BBoxFeature(),
                }),
            }),
            supervised_keys=("image", "caption"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Everything is generated locally.
        return {split: self._generate_examples(split) for split in scenes.SPLITS}

    def _generate_examples(self, split: str):
        for index in range(scenes.split_size(split)):
            image, caption, metadata = scenes.generate_example(split, index)
            yield index, {
                # A PIL image: tfds.features.Image then encodes the PNG with PIL, which is faster
                # than its TensorFlow path for these small images.
                "image": PIL.Image.fromarray(image),
                "caption": caption,
                "id": metadata["id"],
                "num_objects": metadata["num_objects"],
                "relation": metadata["relation"],
                "has_heldout_pair": metadata["has_heldout_pair"],
                "objects": [
                    {"colour": o["colour"], "shape": o["shape"], "size": o["size"], "bbox": _bbox(o)}
                    for o in metadata["objects"]
                ],
            }
