"""COCO captions (Karpathy split): fine-tuning and zero-shot captioning, from the official release files.

    coco_captions            fine-tuning: the image alone in the encoder, the decoder generates the whole
                             caption. Splits train (one example per caption) / validation / test (one
                             example per image, scored against all its references). Metrics: BLEU-4,
                             METEOR, ROUGE-L, CIDEr (`metrics.coco_caption_metrics`).
    coco_captions_zero_shot  evaluation of a pretrained model: the same data with the paper's prompt
                             "a picture of" in the encoder after the image; splits validation / test.

The whole caption is the target: `captioning_prompt` with an empty prompt (fine-tuned tasks) or "a picture
of" (zero-shot), not the PrefixLM split with max_prefix_tokens=0, which would move the first tokens of a
caption longer than the decoder into the encoder (and so show part of an evaluation reference to the
model); a long caption is cut at the end instead (append_eos_after_trim).

The target side of every example carries what the metrics need: `references` (all the image's captions)
and, for NoCaps (`nocaps.py`, which builds on this module), `domain`; `caption_postprocessor` returns them
as the target of an example.

Vocabulary: `embedded.default_vocabulary()`: $SIMVLM_SPM_MODEL when set (Base runs), else the embedded
one (the tiny runs). `register(vocabulary)` registers the tasks again with another vocabulary (tests).

TFDS builder `coco_karpathy`: MS COCO captions in Karpathy's split, read from the official release files.

Nothing is downloaded. The files go, as released, under $SIMVLM_RAW_DATA_DIR/coco_karpathy/
(`simvlm_jax.data.raw_files`):

    dataset_coco.json       Karpathy's split (cs.stanford.edu/people/karpathy/deepimagesent, caption_datasets.zip):
                            {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
                                         "split": "train" | "restval" | "val" | "test", "cocoid": 391895,
                                         "sentences": [{"raw": "A man ...", "tokens": [...], "sentid", "imgid"}],
                                         "sentids", "imgid"}], "dataset": "coco"}
    train2014/COCO_train2014_<12-digit id>.jpg    the MS COCO 2014 images (cocodataset.org)
    val2014/COCO_val2014_<12-digit id>.jpg

    split        images    examples
    train       113,287    566,747   "train" + "restval" images, ONE EXAMPLE PER CAPTION
    validation    5,000      5,000   "val": one example per image, with all its reference captions
    test          5,000      5,000   "test": likewise (the split papers report, e.g. SimVLM's CIDEr 143.3)

Each example: `image_file` (relative to the raw folder, e.g. "val2014/COCO_val2014_000000391895.jpg"),
`image_id` (cocoid), `caption` (train: that caption; validation/test: the image's first) and `captions`
(all the image's references, in file order). Captions are the `raw` strings with outer whitespace stripped
(the metric tokenises and lower-cases them itself).

As in `vqa_v2`, the image is NOT copied into the prepared data: train holds each image five times, so
`raw_files.read_image_file` (the first step of the tasks) reads it from the raw folder when the data is read.
Preparation checks that every image exists.

Errors name the file: JSON syntax errors with their line (`raw_files.read_json`), a record without a field
with its index and cocoid, an unknown split value, a missing image with its path.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Iterator, Optional

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax import metrics
from simvlm_jax.data import embedded, preprocessors, raw_files
from simvlm_jax.metrics import _inputs
from simvlm_jax.tasks import common

DATASET = "coco_karpathy"
ANNOTATIONS = "dataset_coco.json"
WHERE_TO_GET = (
    "Get dataset_coco.json from Karpathy's caption_datasets.zip "
    "(https://cs.stanford.edu/people/karpathy/deepimagesent/) and the MS COCO 2014 train/val images from "
    "https://cocodataset.org/#download (unzipped: train2014/, val2014/)."
)
# TFDS split -> the values of the records' "split" field it takes.
SPLITS = {"train": ("train", "restval"), "validation": ("val",), "test": ("test",)}
IMAGE_FIELDS = ("filepath", "filename", "split", "cocoid", "sentences")
SENTENCE_FIELDS = ("raw", "sentid")


def check_record(record: Any, fields: tuple[str, ...], path: str, what: str) -> dict:
    """The record, or MalformedFileError naming the file, `what` (which record) and the missing fields."""
    if not isinstance(record, dict):
        raise raw_files.MalformedFileError(f"{path}: {what} is not a JSON object")
    missing = [name for name in fields if name not in record]
    if missing:
        raise raw_files.MalformedFileError(f"{path}: {what}: no {', '.join(repr(m) for m in missing)} field")
    return record


def records(data: Any, key: str, path: str) -> list:
    """data[key] of a release file, which must be a list."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise raw_files.MalformedFileError(f"{path}: expected a JSON object with a {key!r} list")
    return data[key]


def read_images(path: str) -> list[dict]:
    """The image records of dataset_coco.json, each checked: fields, an integer cocoid, a known split and
    sentences with `raw` and `sentid`."""
    known = {value for values in SPLITS.values() for value in values}
    images = records(raw_files.read_json(path), "images", path)
    for index, image in enumerate(images):
        what = f"image record {index} (cocoid {image.get('cocoid', '?') if isinstance(image, dict) else '?'})"
        check_record(image, IMAGE_FIELDS, path, what)
        if not isinstance(image["cocoid"], int) or isinstance(image["cocoid"], bool):
            raise raw_files.MalformedFileError(f"{path}: {what}: 'cocoid' is not an integer ({image['cocoid']!r})")
        if image["split"] not in known:
            raise raw_files.MalformedFileError(
                f"{path}: {what}: split {image['split']!r} is not one of {sorted(known)}"
            )
        if not isinstance(image["sentences"], list) or not image["sentences"]:
            raise raw_files.MalformedFileError(f"{path}: {what}: 'sentences' must be a non-empty list")
        for n, sentence in enumerate(image["sentences"]):
            check_record(sentence, SENTENCE_FIELDS, path, f"{what}, sentence {n}")
    return images


def split_examples(split: str) -> Iterator[tuple[int, dict]]:
    """(key, example) of one TFDS split in file order: train one per caption (key: sentid), validation and
    test one per image (key: cocoid). Checks the file and that every image exists."""
    (path,) = raw_files.require(DATASET, [ANNOTATIONS], WHERE_TO_GET)
    folder = raw_files.raw_data_dir(DATASET)
    for index, image in enumerate(read_images(path)):
        if image["split"] not in SPLITS[split]:
            continue
        relative = f"{image['filepath']}/{image['filename']}"
        if not os.path.isfile(os.path.join(folder, relative)):
            raise FileNotFoundError(
                f"{os.path.join(folder, relative)}: the image of record {index} (cocoid {image['cocoid']}) in "
                f"{path} is missing. {WHERE_TO_GET}"
            )
        captions = [str(s["raw"]).strip() for s in image["sentences"]]
        example = {"image_file": relative, "image_id": int(image["cocoid"]), "captions": captions}
        if split == "train":
            for sentence, caption in zip(image["sentences"], captions):
                yield int(sentence["sentid"]), {**example, "caption": caption}
        else:
            yield int(image["cocoid"]), {**example, "caption": captions[0]}


class CocoKarpathy(tfds.core.GeneratorBasedBuilder):
    """MS COCO captions, Karpathy split; images referenced by path (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Karpathy's dataset_coco.json + MS COCO 2014 images: train(+restval) / val / test."}
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "MS COCO captions (Chen et al., 2015) in Karpathy & Fei-Fei's (2015) split: 113,287 training "
                "images (train + restval), 5,000 validation and 5,000 test images, ~5 captions each."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image_file": tfds.features.Text(),  # relative to $SIMVLM_RAW_DATA_DIR/coco_karpathy
                    "image_id": np.int64,  # cocoid
                    "caption": tfds.features.Text(),  # train: this example's caption; else the first
                    "captions": tfds.features.Sequence(tfds.features.Text()),  # every reference of the image
                }
            ),
            supervised_keys=None,
            homepage="https://cs.stanford.edu/people/karpathy/deepimagesent/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The user provides the release files.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        yield from split_examples(split)


TFDS_NAME = "coco_karpathy:1.0.0"
ZERO_SHOT_PROMPT = "a picture of"  # the paper's zero-shot captioning prefix


def rekey_caption(dataset: tf.data.Dataset, keep_domain: bool = False) -> tf.data.Dataset:
    """Prepared records -> {image (encoded bytes), text = caption, references = all captions, example_id =
    image id, domain (keep_domain only)}."""

    def rekey(ex):
        out = {"image": ex["image"], "text": ex["caption"], "references": ex["captions"]}
        if keep_domain:
            out["domain"] = ex["domain"]
        return {**out, **preprocessors.example_id(ex, "image_id")}

    return dataset.map(rekey, num_parallel_calls=tf.data.AUTOTUNE)


def caption_steps(raw_dataset: str, prompt: str, keep_domain: bool = False) -> list:
    """Read the image, rekey, then the image-text pipeline with `prompt` in the encoder ("" for none)."""
    steps = common.image_text_preprocessors(prompt=prompt)
    # common's first step keeps only image and text; ours keeps the references (and domain) as well.
    return [
        functools.partial(raw_files.read_image_file, raw_dataset=raw_dataset),
        functools.partial(rekey_caption, keep_domain=keep_domain),
        *steps[1:],
    ]


def caption_postprocessor(text: Any, example: Optional[dict] = None, is_target: bool = False) -> Any:
    """Target side: the example's references, or {"references", "domain"} when it has a domain; prediction
    side: the decoded caption."""
    if not is_target or example is None or "references" not in example:
        return text
    references = [_inputs.as_text(r) for r in list(example["references"])]
    if "domain" in example:
        return {"references": references, "domain": _inputs.as_text(example["domain"])}
    return references


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> list[seqio.Task]:
    """Registers (again) the two tasks; the data folder is read from the environment when data is read."""
    vocabulary = vocabulary or embedded.default_vocabulary()
    return [
        common.add_task(
            name,
            common.PreparedTfdsSource(TFDS_NAME, splits=splits),
            vocabulary,
            caption_steps(DATASET, prompt),
            postprocess_fn=caption_postprocessor,
            metric_fns=[metrics.coco_caption_metrics],
        )
        for name, prompt, splits in (
            ("coco_captions", "", ["train", "validation", "test"]),
            ("coco_captions_zero_shot", ZERO_SHOT_PROMPT, ["validation", "test"]),
        )
    ]


register()
