"""TFDS builder `nlvr2`: NLVR2 (two photographs and a sentence: true or false?), from its release files.

NLVR2 (Suhr and Zhou et al., 2019; github.com/lil-lab/nlvr, nlvr2/) pairs two web photographs with a
sentence written about them; the label says whether the sentence is true of the pair. Nothing is
downloaded; put the release files under `raw_files.raw_data_dir("nlvr2")` ($SIMVLM_RAW_DATA_DIR/nlvr2):

    train.json  dev.json  test1.json         nlvr2/data/ of the repository: JSON lines, one example each
                                             (86,373 / 6,982 / 6,967 examples)
    images/train/<directory>/<pair>-img0.png the images, as the direct download (the form in nlvr2/README)
    dev/<pair>-img0.png                      unpacks them: train_img.zip into images/train/, the dev and
    test1/<pair>-img0.png                    test1 archives into dev/ and test1/ (images/dev/ and
                                             images/test1/ are found too)

Each JSON line holds (besides writer, synset, query, validation, extra_validations, left_url, right_url)

    identifier   "<split>-<set_id>-<pair_id>-<sentence_id>", e.g. "train-10171-0-0"
    sentence     the sentence written about the two images
    label        "True" | "False"
    directory    train only: the images/train/ subfolder of the pair's images (an int, 0-99)

The pair's images are `<pair>-img0.png` (left) and `<pair>-img1.png` (right), `<pair>` being the
identifier without its last "-<sentence_id>"; both sentences of a pair share them. Despite the extension,
some are JPEGs (the README says so): the tasks decode them by their header, with PIL.

This builder keeps `identifier`, `sentence`, `label` and the two images' paths relative to the raw folder
(`left_image_file`, `right_image_file`); the images themselves are read when the data is read
(`read_image_files`), as for VQA v2: each pair is shared by up to two examples, so storing the images with
each would about double the size of NLVR2's images. Preparation checks that every image exists.

TFDS splits: train, validation (dev.json) and test (test1.json, the public test set; the later-released
test2 is not read). Errors name the file and line of a bad record, and the path of a missing image.
"""

from __future__ import annotations

import os
from typing import Iterator

import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax.data import raw_files

NAME = "nlvr2"
LABELS = ("True", "False")
SPLIT_FILES = {"train": "train.json", "validation": "dev.json", "test": "test1.json"}
IMAGE_SIDES = ("left", "right")  # img0, img1
WHERE_TO_GET = (
    "Get train.json, dev.json and test1.json from github.com/lil-lab/nlvr (nlvr2/data/) and the images "
    "through the direct-download form linked in nlvr2/README.md (or nlvr2/util/download_images.py)."
)


def image_folders(split_file: str, record: dict, path: str, line: int) -> list[str]:
    """The folders, relative to the raw folder, that may hold a record's images: the direct download's
    layout first (images/train/<directory>/, dev/, test1/), then images/<split>/."""
    stem = split_file[: -len(".json")]
    if stem == "train":
        directory = raw_files.field(record, "directory", path, line)
        return [f"images/train/{directory}"]
    return [stem, f"images/{stem}"]


def pair_name(identifier: str, path: str, line: int) -> str:
    """ "train-10171-0-0" -> "train-10171-0": the identifier without its sentence number."""
    parts = identifier.split("-")
    if len(parts) != 4 or not all(parts[1:]):
        raise raw_files.MalformedFileError(
            f"{path}:{line}: identifier {identifier!r} is not <split>-<set_id>-<pair_id>-<sentence_id>"
        )
    return "-".join(parts[:3])


def read_split(split: str) -> list[dict]:
    """The records of one TFDS split, in file order: {identifier, sentence, label, left_image_file,
    right_image_file, line}, image files relative to the raw folder. MalformedFileError names the file and
    line of a bad record; FileNotFoundError the path of a missing image."""
    (path,) = raw_files.require(NAME, [SPLIT_FILES[split]], WHERE_TO_GET)
    root = raw_files.raw_data_dir(NAME)
    records = []
    for line, record in raw_files.read_jsonl(path):
        identifier = str(raw_files.field(record, "identifier", path, line))
        label = raw_files.field(record, "label", path, line)
        if label not in LABELS:
            raise raw_files.MalformedFileError(f"{path}:{line}: label {label!r} is not one of {LABELS}")
        pair = pair_name(identifier, path, line)
        folders = image_folders(SPLIT_FILES[split], record, path, line)
        example = {
            "identifier": identifier,
            "sentence": str(raw_files.field(record, "sentence", path, line)),
            "label": label,
            "line": f"{path}:{line}",
        }
        for index, side in enumerate(IMAGE_SIDES):
            name = f"{pair}-img{index}.png"
            found = [f"{folder}/{name}" for folder in folders if os.path.exists(os.path.join(root, folder, name))]
            if not found:
                also = f" (nor in {', '.join(folders[1:])})" if folders[1:] else ""
                raise FileNotFoundError(
                    f"{path}:{line}: the {side} image {os.path.join(root, folders[0], name)} is missing{also}. "
                    f"{WHERE_TO_GET}"
                )
            example[f"{side}_image_file"] = found[0]
        records.append(example)
    return records


def read_image_files(dataset: tf.data.Dataset, raw_dir: str | None = None) -> tf.data.Dataset:
    """Adds `images`: string [2], the encoded bytes of `left_image_file` and `right_image_file`, read from
    `raw_dir` (default: NLVR2's raw folder when the pipeline is built)."""
    root = raw_dir or raw_files.raw_data_dir(NAME)

    def read(ex):
        files = [tf.io.read_file(tf.strings.join([root, "/", ex[f"{side}_image_file"]])) for side in IMAGE_SIDES]
        return {**ex, "images": tf.stack(files)}

    return dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)


class Nlvr2(tfds.core.GeneratorBasedBuilder):
    """NLVR2: a sentence about a pair of photographs, true or false; images referenced by path."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "NLVR2 release files (lil-lab/nlvr, nlvr2/data): train, dev, test1."}
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "NLVR2 (github.com/lil-lab/nlvr): a sentence about a pair of web photographs, labelled "
                "True or False; the images are read from the raw folder (paths stored)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "identifier": tfds.features.Text(),  # e.g. "train-10171-0-0"
                    "sentence": tfds.features.Text(),
                    "label": tfds.features.Text(),  # "True" | "False", as released
                    "left_image_file": tfds.features.Text(),  # relative to $SIMVLM_RAW_DATA_DIR/nlvr2
                    "right_image_file": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage="https://lil.nlp.cornell.edu/nlvr/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The user provides the release files (raw_files.raw_data_dir).
        return {split: self._generate_examples(split) for split in SPLIT_FILES}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
        for index, record in enumerate(read_split(split)):
            yield index, {key: value for key, value in record.items() if key != "line"}
