"""VQA v2 tasks, from the official release files (builder `vqa_v2`, data/builders/vqa_v2.py).

    vqa_v2              open-ended, as SimVLM fine-tunes and evaluates it: the question joins the image
                        in the encoder, the decoder generates the answer (the training target is the
                        `multiple_choice_answer`); splits train / validation / test (test: no answers,
                        for predictions only); metric: metrics.vqa_accuracy over the ten answers (official
                        rules).
    closed set          the same task with rank decoding (gin/runs/eval_vqa_v2_closed_set.gin): the model
                        scores each of the K = 3,129 most frequent training answers (`closed_set_answers`)
                        as the target and the best is the prediction (model/ranking.py: the encoder runs
                        once per question, the decoder once per candidate in chunks); the same metric.

The images are read from $SIMVLM_RAW_DATA_DIR/vqa_v2 as the data is read (the prepared TFDS data, in
$SIMVLM_DATA_DIR/tfds, holds their paths). Vocabulary: $SIMVLM_SPM_MODEL, else the embedded one
(`pretraining.default_vocabulary`), as the pretraining tasks. Splits: train, validation (val2014),
minival (the questions of 1,000 of its images, for evaluation during fine-tuning) and test (test2015).
"""

from __future__ import annotations

import functools
from typing import Optional

import seqio

from simvlm_jax import metrics
from simvlm_jax.data import question_answering, raw_files
from simvlm_jax.data.builders import vqa_v2 as vqa_v2_builder
from simvlm_jax.tasks import common
from simvlm_jax.tasks.pretraining import default_vocabulary

TFDS_NAME = "vqa_v2:1.0.0"
SPLITS = ["train", "validation", "minival", "test"]  # minival: 1,000 val2014 images (builder docstring)
CLOSED_SET_ANSWERS = 3129  # the common VQA v2 answer list's size (the paper names the 3,129-answer list)


def closed_set_answers(num_answers: int = CLOSED_SET_ANSWERS, data_dir: Optional[str] = None) -> list[str]:
    """The closed set's candidates: the `num_answers` most frequent training answers, most frequent first
    (ties in string order), from the prepared dataset (prepared from the release files on first use)."""
    return vqa_v2_builder.train_answers(num_answers, data_dir)


def open_ended_preprocessors() -> list:
    """Release records -> question in the encoder, `multiple_choice_answer` as the target."""
    return [
        functools.partial(raw_files.read_image_file, raw_dataset=vqa_v2_builder.DATASET),
        *common.vqa_preprocessors(id_key="question_id"),
    ]


def add_open_ended_task(name: str = "vqa_v2", vocabulary: Optional[seqio.Vocabulary] = None) -> seqio.Task:
    return common.add_task(
        name,
        common.PreparedTfdsSource(TFDS_NAME, splits=SPLITS),
        vocabulary or default_vocabulary(),
        open_ended_preprocessors(),
        postprocess_fn=question_answering.vqa_answers_postprocessor,
        metric_fns=[metrics.vqa_accuracy],
    )


add_open_ended_task()
