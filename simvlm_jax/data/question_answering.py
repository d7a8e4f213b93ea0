"""SeqIO preprocessors and postprocessor for visual question answering (VQA v2, easy-VQA, ...).

SimVLM fine-tunes VQA as generation: the question joins the image in the encoder, the decoder
generates the answer. A VQA task's pipeline is

    source -> rekey_vqa -> decode_image -> resize_and_normalize_image
           -> tokenize_question_answer -> seqio.preprocessors.append_eos_after_trim

and leaves the usual four features plus what evaluation needs:

    inputs      int32 [q]          the question (no EOS)
    targets     int32 [a]          the training answer (EOS appended later)
    image       float32 [S, S, C]  the normalised image
    image_mask  float32 [1]        1.0
    answers     string [n]         every annotator's answer, for `metrics.vqa_accuracy`
    inputs_pretokenized, targets_pretokenized   the question and answer strings
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import seqio
import tensorflow as tf


def rekey_vqa(
    dataset: tf.data.Dataset,
    image_key: str = "image",
    question_key: str = "question",
    answer_key: str = "answer",
    answers_key: Optional[str] = "answers",
    id_key: Optional[str] = None,
) -> tf.data.Dataset:
    """Renames a VQA record's fields to `image`, `inputs` (question), `targets` (answer), `answers` (and
    `example_id` from `id_key`, e.g. the question id).

    `answers_key` names the list of annotators' answers; None uses the one training answer.
    """
    from simvlm_jax.data.preprocessors import example_id

    def rekey(ex):
        answer = ex[answer_key]
        answers = ex[answers_key] if answers_key else tf.reshape(answer, [1])
        return {
            "image": ex[image_key],
            "inputs": ex[question_key],
            "targets": answer,
            "answers": answers,
            **example_id(ex, id_key),
        }

    return dataset.map(rekey, num_parallel_calls=tf.data.AUTOTUNE)


def tokenize_question_answer(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """Tokenises the `inputs` and `targets` strings (no EOS), keeping them as `<key>_pretokenized`."""

    def tokenize(ex):
        ex = dict(ex)
        for key in ("inputs", "targets"):
            ex[f"{key}_pretokenized"] = ex[key]
            ex[key] = tf.cast(output_features[key].vocabulary.encode_tf(ex[key]), tf.int32)
        return ex

    return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)


def vqa_answers_postprocessor(text: Any, example: Optional[dict] = None, is_target: bool = False) -> Any:
    """Target side: the example's list of annotators' answers; prediction side: the decoded answer."""
    if is_target and example is not None and "answers" in example:
        return [a.decode("utf-8") if isinstance(a, bytes) else str(a) for a in list(example["answers"])]
    return text
