"""TFDS builder `easy_vqa`: the easy-VQA benchmark, read from the `easy-vqa` PyPI package.

easy-VQA (Victor Zhou, MIT licence) is a small, fixed, externally made VQA benchmark: 64x64 RGB images
of one coloured shape, template questions ("what color is the shape?", "is there a circle?") and 13
one-word answers. The package ships the data itself, so nothing is downloaded:

    split   images   questions
    train    4,000      38,575
    test     1,000       9,673

One example per question (the image is stored with each of its questions). Answers are single words,
so `answers` holds one entry; `simvlm_jax.metrics.vqa_accuracy` then scores an exact match.
"""

from __future__ import annotations

import importlib.resources
import json

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

SPLITS = ("train", "test")


def package_data_dir() -> epath.Path:
    """The `data/` folder of the installed `easy_vqa` package (a clear error if it is missing)."""
    try:
        root = importlib.resources.files("easy_vqa")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "The easy_vqa dataset is read from the `easy-vqa` package: pip install easy-vqa==1.0"
        ) from error
    return epath.Path(str(root)) / "data"


def read_split(split: str) -> list[tuple[str, str, int]]:
    """[(question, answer, image_id)] of one split, in the package's order."""
    with open(package_data_dir() / split / "questions.json") as f:
        return [(str(q), str(a), int(i)) for q, a, i in json.load(f)]


def answer_vocabulary() -> list[str]:
    """The 13 answers easy-VQA uses."""
    return [line.strip() for line in (package_data_dir() / "answers.txt").read_text().splitlines() if line.strip()]


class EasyVqa(tfds.core.GeneratorBasedBuilder):
    """easy-VQA: one coloured shape per image, template questions, one-word answers."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "easy-vqa 1.0 from PyPI: train 38,575 / test 9,673 questions."}
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "easy-VQA 1.0 (github.com/vzhou842/easy-VQA): 64x64 images of one shape (circle, "
                "rectangle, triangle) in one of 8 colours, with template questions about colour, shape "
                "and presence, and one-word answers (13 in all)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(64, 64, 3), encoding_format="png"),
                    "image_id": np.int32,
                    "question_id": np.int32,  # index of the question in the split's questions.json
                    "question": tfds.features.Text(),
                    "answer": tfds.features.Text(),
                    "answers": tfds.features.Sequence(tfds.features.Text()),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/vzhou842/easy-VQA",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The data comes with the installed package.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        image_dir = package_data_dir() / split / "images"
        for question_id, (question, answer, image_id) in enumerate(read_split(split)):
            yield (
                question_id,
                {
                    "image": image_dir / f"{image_id}.png",
                    "image_id": image_id,
                    "question_id": question_id,
                    "question": question,
                    "answer": answer,
                    "answers": [answer],
                },
            )
