"""VQA v2 tasks, from the official release files (builder `vqa_v2`, data/builders/vqa_v2.py).

    vqa_v2              open-ended, as SimVLM fine-tunes and evaluates it: the question joins the image
                        in the encoder, the decoder generates the answer (the training target is the
                        `multiple_choice_answer`); splits train / validation / test (test: no answers,
                        for predictions only); metric: metrics.vqa_accuracy over the ten answers (official
                        rules).
    vqa_v2_closed_set   the closed-set setting, evaluation only (validation, minival): each question is scored
                        against the K = 3,129 most frequent training answers, one (question, candidate)
                        example each, scored by the model's log-likelihood (`score_batch`, seqio's score
                        path); the best-scoring candidate is the prediction, scored with the same VQA
                        accuracy. K examples per question: exact, and K times the cost of one.
                        Only small evaluations fit: seqio.Evaluator keeps every (question, candidate)
                        example in memory, image included, so K = 3,129 at 224x224 holds ~1.9 GB per
                        question. A scorer that encodes each question once and scores the K answers
                        against it would be the way to the full split; it does not exist yet.

The images are read from $SIMVLM_RAW_DATA_DIR/vqa_v2 as the data is read (the prepared TFDS data, in
$SIMVLM_DATA_DIR/tfds, holds their paths). Vocabulary: $SIMVLM_SPM_MODEL, else the embedded one
(`pretraining.default_vocabulary`), as the pretraining tasks. Splits: train, validation (val2014),
minival (the questions of 1,000 of its images, for evaluation during fine-tuning) and test (test2015).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from simvlm_jax import metrics
from simvlm_jax.data import question_answering, raw_files
from simvlm_jax.data.builders import vqa_v2 as vqa_v2_builder
from simvlm_jax.metrics import vqa as vqa_metric
from simvlm_jax.tasks import common
from simvlm_jax.tasks.pretraining import default_vocabulary

TFDS_NAME = "vqa_v2:1.0.0"
SPLITS = ["train", "validation", "minival", "test"]  # minival: 1,000 val2014 images (builder docstring)
CLOSED_SET_ANSWERS = 3129  # the common VQA v2 answer list's size (the paper names the 3,129-answer list)


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


# ----------------------------------------------------------------------------------------------------
# The closed-set setting: rank classification over the K most frequent training answers.
# ----------------------------------------------------------------------------------------------------


def expand_candidates(dataset: tf.data.Dataset, num_answers: int) -> tf.data.Dataset:
    """Each example -> K examples, one per candidate answer (`targets` = candidate i, `candidate` = i),
    consecutively and in the answer list's order. Runs after the image is resized (done once per question)."""
    candidates = tf.constant(vqa_v2_builder.train_answers(num_answers))
    indices = tf.range(tf.size(candidates), dtype=tf.int32)

    def expand(ex):
        pairs = tf.data.Dataset.from_tensor_slices((indices, candidates))
        return pairs.map(lambda i, answer: {**ex, "targets": answer, "candidate": i})

    return dataset.flat_map(expand)


def closed_set_preprocessors(num_answers: int) -> list:
    steps = open_ended_preprocessors()
    tokenize = steps.index(question_answering.tokenize_question_answer)
    steps.insert(tokenize, functools.partial(expand_candidates, num_answers=num_answers))
    return steps


def closed_set_postprocessor(text: Any, example: Optional[dict] = None, is_target: bool = False) -> Any:
    """Target side: {"example_id", "candidate" (its answer text), "answers"} of a (question, candidate) row."""
    if not is_target or example is None:
        return text
    return {
        "example_id": _as_text(example["example_id"]),
        "candidate": _as_text(example["targets_pretokenized"]),
        "answers": [_as_text(a) for a in list(example["answers"])],
    }


def _as_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def closed_set_vqa_accuracy(targets: Sequence[Mapping[str, Any]], scores: Sequence[float]) -> dict[str, float]:
    """Per question (a run of consecutive rows with one example_id), the best-scoring candidate is the
    prediction, scored with the official VQA accuracy; the mean over questions x100."""
    if len(targets) != len(scores):
        raise ValueError(f"{len(targets)} targets but {len(scores)} scores")
    accuracies = []
    rows = zip(targets, np.asarray(scores, dtype=np.float64))
    for _, group in itertools.groupby(rows, key=lambda row: row[0]["example_id"]):
        group = list(group)
        best = max(range(len(group)), key=lambda i: group[i][1])  # the first of equal scores
        accuracies.append(vqa_metric.question_accuracy(group[best][0]["answers"], group[best][0]["candidate"]))
    return {"vqa_accuracy": 100.0 * float(np.mean(accuracies))}


def add_closed_set_task(
    name: str = "vqa_v2_closed_set",
    vocabulary: Optional[seqio.Vocabulary] = None,
    num_answers: int = CLOSED_SET_ANSWERS,
) -> seqio.Task:
    """The closed-set evaluation task over the `num_answers` most frequent training answers."""
    return common.add_task(
        name,
        common.PreparedTfdsSource(TFDS_NAME, splits=["validation", "minival"]),
        vocabulary or default_vocabulary(),
        closed_set_preprocessors(num_answers),
        postprocess_fn=closed_set_postprocessor,
        metric_fns=[closed_set_vqa_accuracy],
    )


add_open_ended_task()
add_closed_set_task()
