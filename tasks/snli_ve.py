"""SNLI-VE (visual entailment) fine-tuning tasks, from the official release files.

    snli_ve             image + "hypothesis: <sentence2>" in the encoder; the decoder generates the label
                        word (entailment / neutral / contradiction). Splits train / validation (dev) /
                        test. Metric: accuracy (`metrics.accuracy`, percent).
    snli_ve_text_only   the same records with NO image (blank image, image_mask 0): the premise caption
                        takes the image's place, "premise: <sentence1> hypothesis: <sentence2>"; same
                        target and metric.

Zero-shot cross-modality transfer (the paper: text-only SNLI fine-tuning transfers to SNLI-VE with images):
train on `snli_ve_text_only` (text premise, no image) and evaluate on `snli_ve` (image premise). The TFDS
`snli` dataset would be the usual text data but is downloaded by TFDS, so the premise captions that
SNLI-VE's release files carry (`sentence1`, SNLI's own premises) are used instead: SNLI's pairs that have
a gold label, split by image as SNLI-VE splits them (not SNLI's own train/dev/test).

The text templates ("hypothesis: ...", "premise: ... hypothesis: ...") are ours: the paper gives none for
these tasks in what we could read. Vocabulary: `embedded.default_vocabulary()` ($SIMVLM_SPM_MODEL when set,
else the embedded vocabulary). `register(vocabulary)` registers the tasks again with another vocabulary.

TFDS builder `snli_ve`: SNLI-VE (visual entailment), read from its official release files.

SNLI-VE (Xie et al., 2019; github.com/necla-ml/SNLI-VE) replaces SNLI's premise caption by the Flickr30k
image it describes: given an image and a hypothesis sentence, say whether the image entails, is neutral
to, or contradicts it. Nothing is downloaded; put the release files under
`raw_files.raw_data_dir("snli_ve")` ($SIMVLM_RAW_DATA_DIR/snli_ve):

    snli_ve_train.jsonl  snli_ve_dev.jsonl  snli_ve_test.jsonl     the three splits (README: 529,527 /
                                                                   17,858 / 17,901 pairs)
    flickr30k_images/<Flickr30K_ID>.jpg                            the Flickr30k images

Each JSONL line is one SNLI record with SNLI-VE's `Flickr30K_ID` added (the generator's field; early
copies spell it `Flikr30kID`, which is read too). This builder keeps

    image        the image of `Flickr30K_ID` (the premise)
    hypothesis   `sentence2`
    premise      `sentence1`, the SNLI caption of that image (for the text-only task)
    label        `gold_label`: entailment | neutral | contradiction
    pair_id, image_id

TFDS splits: train, validation (snli_ve_dev.jsonl) and test. Each example stores its image, so the
prepared train split holds each image about 18 times (one per hypothesis).
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax import metrics
from simvlm_jax.data import embedded, preprocessors, question_answering, raw_files
from simvlm_jax.tasks import common

TFDS_NAME = "snli_ve:1.0.0"
SPLITS = ["train", "validation", "test"]

NAME = "snli_ve"
LABELS = ("entailment", "neutral", "contradiction")
SPLIT_FILES = {"train": "snli_ve_train.jsonl", "validation": "snli_ve_dev.jsonl", "test": "snli_ve_test.jsonl"}
IMAGE_DIR = "flickr30k_images"
IMAGE_ID_FIELDS = ("Flickr30K_ID", "Flikr30kID")  # the generator's name, and the early misspelling
WHERE_TO_GET = (
    "Download snli_ve_{train,dev,test}.jsonl from github.com/necla-ml/SNLI-VE (or generate them with its "
    "snli_ve_generator.py) and the Flickr30k images (flickr30k_images/*.jpg) from the Flickr30k site."
)


def read_split(split: str) -> list[dict]:
    """The records of one TFDS split, in file order: {pair_id, image_id, premise, hypothesis, label,
    image_path, line}. MalformedFileError names the file and line of a bad record."""
    (path,) = raw_files.require(NAME, [SPLIT_FILES[split]], WHERE_TO_GET)
    records = []
    for line, record in raw_files.read_jsonl(path):
        image_field = next((f for f in IMAGE_ID_FIELDS if f in record), IMAGE_ID_FIELDS[0])
        image_id = str(raw_files.field(record, image_field, path, line))
        label = raw_files.field(record, "gold_label", path, line)
        if label not in LABELS:
            raise raw_files.MalformedFileError(f"{path}:{line}: gold_label {label!r} is not one of {LABELS}")
        records.append(
            {
                "pair_id": str(raw_files.field(record, "pairID", path, line)),
                "image_id": image_id,
                "premise": str(raw_files.field(record, "sentence1", path, line)),
                "hypothesis": str(raw_files.field(record, "sentence2", path, line)),
                "label": label,
                "image_path": os.path.join(raw_files.raw_data_dir(NAME), IMAGE_DIR, f"{image_id}.jpg"),
                "line": f"{path}:{line}",
            }
        )
    return records


class SnliVe(tfds.core.GeneratorBasedBuilder):
    """SNLI-VE: a Flickr30k image as premise, a sentence as hypothesis, a three-way label."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "SNLI-VE 1.0 release files (necla-ml/SNLI-VE) + Flickr30k images."}
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "SNLI-VE (github.com/necla-ml/SNLI-VE): SNLI hypotheses paired with the Flickr30k image "
                "their premise caption describes; labels entailment / neutral / contradiction."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "image_id": tfds.features.Text(),  # Flickr30K_ID, e.g. "3416050480"
                    "pair_id": tfds.features.Text(),  # SNLI pairID, e.g. "3416050480.jpg#4r1n"
                    "premise": tfds.features.Text(),
                    "hypothesis": tfds.features.Text(),
                    "label": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/necla-ml/SNLI-VE",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The user provides the release files (raw_files.raw_data_dir).
        return {split: self._generate_examples(split) for split in SPLIT_FILES}

    def _generate_examples(self, split: str):
        for index, record in enumerate(read_split(split)):
            if not os.path.exists(record["image_path"]):
                raise FileNotFoundError(f"{record['line']}: image {record['image_path']} is missing. {WHERE_TO_GET}")
            yield (
                index,
                {
                    "image": record["image_path"],
                    **{key: record[key] for key in ("image_id", "pair_id", "premise", "hypothesis", "label")},
                },
            )


def rekey_entailment(dataset: tf.data.Dataset, with_image: bool = True) -> tf.data.Dataset:
    """SNLI-VE records -> {image (with_image only), inputs, targets = label, example_id = pair id}.

    with_image: inputs = "hypothesis: <h>" after the image; else "premise: <p> hypothesis: <h>", no image.
    """

    def rekey(ex):
        hypothesis = tf.strings.join(["hypothesis: ", ex["hypothesis"]])
        if with_image:
            out = {"image": ex["image"], "inputs": hypothesis}
        else:
            out = {"inputs": tf.strings.join(["premise: ", ex["premise"], " ", hypothesis])}
        return {**out, "targets": ex["label"], **preprocessors.example_id(ex, "pair_id")}

    return dataset.map(rekey, num_parallel_calls=tf.data.AUTOTUNE)


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> list[seqio.Task]:
    """Registers (again) the two tasks; the data folder is read from the environment when data is read."""
    vocabulary = vocabulary or embedded.default_vocabulary()
    return [
        common.add_task(
            "snli_ve",
            common.PreparedTfdsSource(TFDS_NAME, splits=SPLITS),
            vocabulary,
            common.rekeyed_image_text_steps(rekey_entailment),
            metric_fns=[metrics.accuracy],
        ),
        common.add_task(
            "snli_ve_text_only",
            common.PreparedTfdsSource(TFDS_NAME, splits=SPLITS),
            vocabulary,
            [
                functools.partial(rekey_entailment, with_image=False),
                preprocessors.add_blank_image,
                question_answering.tokenize_question_answer,
                seqio.preprocessors.append_eos_after_trim,
            ],
            metric_fns=[metrics.accuracy],
        ),
    ]


register()
