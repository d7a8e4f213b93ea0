"""Multi30k En-De (multimodal translation) fine-tuning task, from the official release files.

    multi30k_en_de   image + the English description in the encoder; the decoder generates the German
                     translation. Splits train / validation (val) / test (test_2016_flickr). Metric:
                     sacreBLEU corpus BLEU, tokenizer 13a (`metrics.bleu`).

Vocabulary: `embedded.default_vocabulary()` ($SIMVLM_SPM_MODEL when set, else the embedded vocabulary).
`register(vocabulary)` registers the task again with another vocabulary (tests).

TFDS builder `multi30k`: Multi30k Task 1 English-German (multimodal translation), from its official
release files.

Multi30k (Elliott et al., 2016; github.com/multi30k/dataset) gives each Flickr30k image an English
description and its German translation. Nothing is downloaded; put under
`raw_files.raw_data_dir("multi30k")` ($SIMVLM_RAW_DATA_DIR/multi30k) the repository's `data/task1/raw`
and `data/task1/image_splits` folders and the Flickr30k images:

    raw/train.en.gz  raw/train.de.gz                       29,000 sentence pairs (README)
    raw/val.en.gz  raw/val.de.gz                            1,014
    raw/test_2016_flickr.en.gz  raw/test_2016_flickr.de.gz  1,000
    image_splits/train.txt  image_splits/val.txt  image_splits/test_2016_flickr.txt
    flickr30k_images/<name>                                 e.g. flickr30k_images/1000092795.jpg

Sentence files have one sentence per line (gzipped as released; decompressed copies without `.gz` are
read too); line i of an image list names the image of line i of both sentence files. Files of one split
with different line counts are an error naming both files and their counts.

TFDS splits: train, validation (val) and test (test_2016_flickr, the usual "Test2016").
"""

from __future__ import annotations

import gzip
import os
from typing import Optional

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax import metrics
from simvlm_jax.data import embedded, preprocessors, raw_files
from simvlm_jax.tasks import common

TFDS_NAME = "multi30k:1.0.0"
SPLITS = ["train", "validation", "test"]

NAME = "multi30k"
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test_2016_flickr"}  # TFDS split -> file stem
LANGUAGES = ("en", "de")
IMAGE_DIR = "flickr30k_images"
WHERE_TO_GET = (
    "Copy data/task1/raw and data/task1/image_splits from github.com/multi30k/dataset, and the Flickr30k "
    "images (flickr30k_images/*.jpg) from the Flickr30k site."
)


def sentence_file(stem: str, language: str) -> str:
    """raw/<stem>.<language>.gz as released, or its decompressed copy raw/<stem>.<language> if that is
    the one present (relative to the dataset folder)."""
    name = f"raw/{stem}.{language}"
    return name if os.path.exists(os.path.join(raw_files.raw_data_dir(NAME), name)) else name + ".gz"


def read_lines(path: str) -> list[str]:
    """The lines of a (possibly gzipped) UTF-8 text file, without their line ends."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f]


def read_split(split: str) -> list[dict]:
    """The aligned records of one TFDS split: {index, en, de, image_name, image_path, line}; an error
    naming two files whose line counts differ."""
    stem = SPLIT_FILES[split]
    relative = [sentence_file(stem, lang) for lang in LANGUAGES] + [f"image_splits/{stem}.txt"]
    paths = raw_files.require(NAME, relative, WHERE_TO_GET)
    columns = [read_lines(path) for path in paths]
    for path, column in zip(paths[1:], columns[1:]):
        if len(column) != len(columns[0]):
            raise raw_files.MalformedFileError(
                f"{paths[0]} has {len(columns[0])} lines but {path} has {len(column)}: the files of one "
                "split must be aligned line by line."
            )
    image_dir = os.path.join(raw_files.raw_data_dir(NAME), IMAGE_DIR)
    return [
        {
            "index": index,
            "en": en,
            "de": de,
            "image_name": name.strip(),
            "image_path": os.path.join(image_dir, name.strip()),
            "line": f"{paths[2]}:{index + 1}",
        }
        for index, (en, de, name) in enumerate(zip(*columns))
    ]


class Multi30k(tfds.core.GeneratorBasedBuilder):
    """Multi30k Task 1: a Flickr30k image, its English description and the German translation."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Multi30k Task 1 En-De (multi30k/dataset raw files) + Flickr30k images."}
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "Multi30k Task 1 (github.com/multi30k/dataset): Flickr30k images with an English "
                "description and its professional German translation; test = test_2016_flickr."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "image_name": tfds.features.Text(),  # e.g. "1000092795.jpg"
                    "index": np.int32,  # line number - 1 in the split's files
                    "en": tfds.features.Text(),
                    "de": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/multi30k/dataset",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The user provides the release files (raw_files.raw_data_dir).
        return {split: self._generate_examples(split) for split in SPLIT_FILES}

    def _generate_examples(self, split: str):
        for record in read_split(split):
            if not os.path.exists(record["image_path"]):
                raise FileNotFoundError(f"{record['line']}: image {record['image_path']} is missing. {WHERE_TO_GET}")
            yield (
                record["index"],
                {key: record[key] for key in ("index", "en", "de", "image_name")} | {"image": record["image_path"]},
            )


def rekey_translation(dataset: tf.data.Dataset, source: str = "en", target: str = "de") -> tf.data.Dataset:
    """Multi30k records -> {image, inputs = source sentence, targets = target sentence, example_id}."""
    return dataset.map(
        lambda ex: {
            "image": ex["image"],
            "inputs": ex[source],
            "targets": ex[target],
            **preprocessors.example_id(ex, "image_name"),
        },
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> list[seqio.Task]:
    """Registers (again) the task; the data folder is read from the environment when data is read."""
    return [
        common.add_task(
            "multi30k_en_de",
            common.PreparedTfdsSource(TFDS_NAME, splits=SPLITS),
            vocabulary or embedded.default_vocabulary(),
            common.rekeyed_image_text_steps(rekey_translation),
            metric_fns=[metrics.bleu],
        )
    ]


register()
