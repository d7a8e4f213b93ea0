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

The data is read from the official release files (`simvlm_jax.data.builders.nlvr2`, under
$SIMVLM_RAW_DATA_DIR/nlvr2) and converted to TFDS on first read into $SIMVLM_DATA_DIR/tfds; the images are
read from the raw folder as the data is read. An image that does not decode drops its example and is
counted, or stops the run (the `bad_records` policy, as for one-image tasks).

Vocabulary: `pretraining.default_vocabulary()`, as the pretraining tasks ($SIMVLM_SPM_MODEL, else the
embedded vocabulary). `register(vocabulary)` registers the task again with another vocabulary (tests).
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

from simvlm_jax import metrics
from simvlm_jax.data import bad_records, preprocessors, question_answering
from simvlm_jax.data.builders import nlvr2 as nlvr2_builder
from simvlm_jax.tasks import common, pretraining

NAME = "nlvr2"
TFDS_NAME = "nlvr2:1.0.0"
SPLITS = ["train", "validation", "test"]
NUM_IMAGES = len(nlvr2_builder.IMAGE_SIDES)  # left, right


def rekey_nlvr2(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """NLVR2 records -> {the two image files, inputs = sentence, targets = "true" | "false", example_id}."""

    def rekey(ex):
        return {
            **{f"{side}_image_file": ex[f"{side}_image_file"] for side in nlvr2_builder.IMAGE_SIDES},
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
    vocabulary = vocabulary or pretraining.default_vocabulary()
    seqio.TaskRegistry.remove(NAME)
    return seqio.TaskRegistry.add(
        NAME,
        source=common.PreparedTfdsSource(TFDS_NAME, splits=SPLITS),
        output_features=output_features(vocabulary),
        preprocessors=[
            rekey_nlvr2,
            nlvr2_builder.read_image_files,
            functools.partial(decode_images, task=NAME),
            resize_and_normalize_images,
            question_answering.tokenize_question_answer,
            seqio.preprocessors.append_eos_after_trim,
        ],
        postprocess_fn=label_and_sentence,
        metric_fns=[metrics.accuracy_and_consistency],
    )


register()
