"""NLVR2 fine-tuning task: two images and a sentence in the encoder, "true" or "false" generated.

    nlvr2   the left and the right image (`image` float32 [2, S, S, C], `image_mask` [2]) and the sentence
            in the encoder; the decoder generates the label word, "true" or "false". Splits train /
            validation (dev.json) / test (test1.json, the public test set). Metrics (percent,
            `metrics.accuracy_and_consistency`): accuracy, and NLVR2's consistency: the share of
            sentences whose examples (the image pairs it was written about) are all right; a sentence is
            the identifier's <split>-<set_id>-<sentence_id>, as the official evaluation groups them.

Two images per example: a run sets TASK_FEATURE_LENGTHS['num_images'] = 2 and the model
`network.SimVLMConfig.max_images = 2` (gin/finetune/nlvr2.gin). The encoder sees [left image tokens ;
right image tokens ; sentence], each image's tokens marked by its image-index embedding, so "the left
image" and "the right image" can be told apart. [assumed] The paper's exact NLVR2 input layout and text
template are not given in what we could read: this one-sequence layout and the bare sentence (no prompt)
are ours.

The data is read from the official release files (the builder above, under
$SIMVLM_RAW_DATA_DIR/nlvr2) and converted to TFDS on first read into $SIMVLM_DATA_DIR/tfds; the images are
read from the raw folder as the data is read. An image that does not decode drops its example and is
counted, or stops the run (the `bad_records` policy, as for one-image tasks).

Vocabulary: `embedded.default_vocabulary()`, as the pretraining tasks ($SIMVLM_SPM_MODEL, else the
embedded vocabulary). `register(vocabulary)` registers the task again with another vocabulary (tests).


TFDS builder `nlvr2`: NLVR2 (two photographs and a sentence: true or false?), from its release files.

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

import functools
import os
from typing import Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax import metrics
from simvlm_jax.data import bad_records, embedded, preprocessors, question_answering, raw_files
from simvlm_jax.tasks import common

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


NAME = "nlvr2"
TFDS_NAME = "nlvr2:1.0.0"
SPLITS = ["train", "validation", "test"]
NUM_IMAGES = len(IMAGE_SIDES)  # left, right


def rekey_nlvr2(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """NLVR2 records -> {the two image files, inputs = sentence, targets = "true" | "false", example_id}."""

    def rekey(ex):
        return {
            **{f"{side}_image_file": ex[f"{side}_image_file"] for side in IMAGE_SIDES},
            "inputs": ex["sentence"],
            "targets": tf.strings.lower(ex["label"]),
            **preprocessors.example_id(ex, "identifier"),
        }

    return dataset.map(rekey, num_parallel_calls=tf.data.AUTOTUNE)


def _decode_all(policy: bad_records.RecordPolicy, streak, *args) -> tuple:
    """(N encoded images, text) -> (N uint8 [H, W, 3] images, keep): `bad_records`' one-image check for an
    example of N images. The first image that does not decode rejects the example (counted, or
    BadRecordError under policy 'fail'); the bad-in-a-row bound counts examples, so a source whose right
    images are all bad still stops with its message."""
    *encoded, text = args
    images = []
    for data in encoded:
        rgb, reason, detail = bad_records.decode_rgb(data, policy.max_pixels)
        if reason is not None:
            bad_records.reject(policy, reason, data, text, detail)
            streak.bad(reason)
            return (*[np.zeros((1, 1, 3), np.uint8)] * len(encoded), np.bool_(False))
        images.append(rgb)
    streak.good()
    return (*images, np.bool_(True))


def decode_images(dataset: tf.data.Dataset, task: str = NAME) -> tf.data.Dataset:
    """`images` string [N] (encoded) -> a tuple of N uint8 [H_i, W_i, 3] images, decoded with PIL as a
    one-image task's (any format, any mode -> RGB). An example is kept only if all N decode: under policy
    'skip' it is dropped and the bad image counted, under 'fail' the run stops naming the record (its
    `example_id` and `inputs`)."""
    num_images = dataset.element_spec["images"].shape[0]
    policy = bad_records.active()
    decode_all = functools.partial(_decode_all, policy, bad_records.BadStreak(policy, "image decoding", task))

    def decode(ex):
        # What a rejected record is named by: "<identifier> <sentence>".
        text = tf.strings.join([ex["example_id"], ex["inputs"]], " ") if "example_id" in ex else ex["inputs"]
        encoded = [ex["images"][index] for index in range(num_images)]
        *images, ok = tf.numpy_function(
            decode_all, [*encoded, text], (tf.uint8,) * num_images + (tf.bool,), stateful=False
        )
        for image in images:
            image.set_shape((None, None, preprocessors.NUM_CHANNELS))
        ok.set_shape(())
        return {**ex, "images": tuple(images)}, ok

    def decoded_ok(ex, ok):
        return ok

    def without_flag(ex, ok):
        return ex

    decoded = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return decoded.filter(decoded_ok).map(without_flag)


def resize_and_normalize_images(dataset: tf.data.Dataset, sequence_length: Mapping[str, int]) -> tf.data.Dataset:
    """The decoded `images` -> `image` float32 [N, S, S, C] (each resized and normalised as a one-image
    task's) and `image_mask` [N] of ones; S = sequence_length['image']. Drops the raw keys."""
    num_images = int((sequence_length or {}).get("num_images", 1))
    if num_images != NUM_IMAGES:
        raise ValueError(
            f"Task {NAME!r} gives {NUM_IMAGES} images per example: set TASK_FEATURE_LENGTHS['num_images'] = "
            f"{NUM_IMAGES} (and network.SimVLMConfig.max_images >= {NUM_IMAGES}); got sequence_length="
            f"{dict(sequence_length or {})!r}."
        )
    size = preprocessors.image_size(sequence_length)
    mask = tf.ones((NUM_IMAGES,), tf.float32)

    def stack(ex):
        image = tf.stack([preprocessors.resize_normalize(image, size) for image in ex["images"]])
        kept = {k: v for k, v in ex.items() if k != "images" and not k.endswith("_image_file")}
        return {**kept, "image": image, "image_mask": mask}  # image [N, S, S, C], image_mask [N]

    return dataset.map(stack, num_parallel_calls=tf.data.AUTOTUNE)


def sentence_group(identifier: str) -> str:
    """ "dev-850-2-1" -> "dev-850-1": the <split>-<set_id>-<sentence_id> that NLVR2's consistency groups by
    (the examples of one sentence differ only in their pair id)."""
    parts = identifier.split("-")
    if len(parts) != 4:
        raise ValueError(f"NLVR2 identifier {identifier!r} is not <split>-<set_id>-<pair_id>-<sentence_id>")
    return "-".join([parts[0], parts[1], parts[3]])


def label_and_sentence(text, example: Optional[dict] = None, is_target: bool = False):
    """Postprocessor: a target becomes {"label", "group"} for `metrics.accuracy_and_consistency`; a
    prediction stays its text."""
    if not is_target or example is None:
        return text
    identifier = example["example_id"]
    identifier = identifier.decode("utf-8") if isinstance(identifier, bytes) else str(identifier)
    label = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    return {"label": label, "group": sentence_group(identifier)}


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """`common.output_features` with a rank-4 image: [N, S, S, C]."""
    return {**common.output_features(vocabulary), "image": seqio.ContinuousFeature(dtype=tf.float32, rank=4)}


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> seqio.Task:
    """Registers (again) the task `nlvr2`; the data folders are read from the environment now."""
    vocabulary = vocabulary or embedded.default_vocabulary()
    seqio.TaskRegistry.remove(NAME)
    return seqio.TaskRegistry.add(
        NAME,
        source=common.PreparedTfdsSource(TFDS_NAME, splits=SPLITS),
        output_features=output_features(vocabulary),
        preprocessors=[
            rekey_nlvr2,
            read_image_files,
            functools.partial(decode_images, task=NAME),
            resize_and_normalize_images,
            question_answering.tokenize_question_answer,
            seqio.preprocessors.append_eos_after_trim,
        ],
        postprocess_fn=label_and_sentence,
        metric_fns=[metrics.accuracy_and_consistency],
    )


register()
