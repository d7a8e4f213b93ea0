"""SNLI-VE (visual entailment) and Multi30k En-De (multimodal translation) fine-tuning tasks.

    snli_ve             image + "hypothesis: <sentence2>" in the encoder; the decoder generates the label
                        word (entailment / neutral / contradiction). Splits train / validation (dev) /
                        test. Metric: accuracy (`metrics.accuracy`, percent).
    snli_ve_text_only   the same records with NO image (blank image, image_mask 0): the premise caption
                        takes the image's place, "premise: <sentence1> hypothesis: <sentence2>"; same
                        target and metric.
    multi30k_en_de      image + the English description in the encoder; the decoder generates the German
                        translation. Splits train / validation (val) / test (test_2016_flickr). Metric:
                        sacreBLEU corpus BLEU, tokenizer 13a (`metrics.bleu`).

Zero-shot cross-modality transfer (the paper: text-only SNLI fine-tuning transfers to SNLI-VE with images):
train on `snli_ve_text_only` (text premise, no image) and evaluate on `snli_ve` (image premise). The TFDS
`snli` dataset would be the usual text data but is downloaded by TFDS, so the premise captions that
SNLI-VE's release files carry (`sentence1`, SNLI's own premises) are used instead: SNLI's pairs that have
a gold label, split by image as SNLI-VE splits them (not SNLI's own train/dev/test).

The text templates ("hypothesis: ...", "premise: ... hypothesis: ...") are ours: the paper gives none
for these tasks in what we could read. The data is read from the official release files
(`simvlm_jax.data.builders.snli_ve`, `.multi30k`, under $SIMVLM_RAW_DATA_DIR) and converted to TFDS on
first read into $SIMVLM_DATA_DIR/tfds.

Vocabulary: `pretraining.default_vocabulary()`, as the pretraining tasks: $SIMVLM_SPM_MODEL when set
(Base runs), else the embedded vocabulary (the tiny runs; leave SIMVLM_SPM_MODEL unset for those).
`register(vocabulary)` registers the tasks again with another vocabulary (tests).
"""

from __future__ import annotations

import functools
from typing import Optional

import seqio
import tensorflow as tf

from simvlm_jax import metrics
from simvlm_jax.data import preprocessors, question_answering
from simvlm_jax.data.builders import multi30k, snli_ve  # noqa: F401  (registers the TFDS builders)
from simvlm_jax.tasks import common, pretraining

SNLI_VE = "snli_ve:1.0.0"
MULTI30K = "multi30k:1.0.0"
SPLITS = ["train", "validation", "test"]


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


def image_text_steps(rekey) -> list:
    """rekey -> the image in the encoder, the rekeyed `inputs` after it, `targets` generated."""
    return [
        rekey,
        preprocessors.decode_image,
        preprocessors.resize_and_normalize_image,
        question_answering.tokenize_question_answer,
        seqio.preprocessors.append_eos_after_trim,
    ]


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> list[seqio.Task]:
    """Registers (again) the three tasks; the data folders are read from the environment now."""
    vocabulary = vocabulary or pretraining.default_vocabulary()
    return [
        common.add_task(
            "snli_ve",
            common.PreparedTfdsSource(SNLI_VE, splits=SPLITS),
            vocabulary,
            image_text_steps(rekey_entailment),
            metric_fns=[metrics.accuracy],
        ),
        common.add_task(
            "snli_ve_text_only",
            common.PreparedTfdsSource(SNLI_VE, splits=SPLITS),
            vocabulary,
            [
                functools.partial(rekey_entailment, with_image=False),
                preprocessors.add_blank_image,
                question_answering.tokenize_question_answer,
                seqio.preprocessors.append_eos_after_trim,
            ],
            metric_fns=[metrics.accuracy],
        ),
        common.add_task(
            "multi30k_en_de",
            common.PreparedTfdsSource(MULTI30K, splits=SPLITS),
            vocabulary,
            image_text_steps(rekey_translation),
            metric_fns=[metrics.bleu],
        ),
    ]


register()
