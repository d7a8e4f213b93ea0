"""Each task family's per-example score in the report (metrics/per_example.py) against its own metric."""

import numpy as np
import pytest
import sacrebleu

from simvlm_jax import metrics
from simvlm_jax.metrics import per_example


def test_vqa_scores_average_to_the_task_metric():
    targets = [["red"] * 3 + ["orange"], ["two", "2", "2"], ["yes"] * 10]
    predictions = ["red", "2", "no"]
    name, scores = per_example.per_example_scores([metrics.vqa_accuracy], targets, predictions)
    assert name == "VQA accuracy" and scores[2] == 0.0
    assert np.mean(scores) == pytest.approx(metrics.vqa_accuracy(targets, predictions)["vqa_accuracy"])


def test_classification_scores_are_right_or_wrong_and_average_to_accuracy():
    targets, predictions = ["entailment", "neutral", "contradiction"], ["Entailment ", "neutral", "neutral"]
    name, scores = per_example.per_example_scores([metrics.accuracy], targets, predictions)
    assert name == "correct" and scores == [100.0, 100.0, 0.0]
    assert np.mean(scores) == pytest.approx(metrics.accuracy(targets, predictions)["accuracy"])


def test_translation_scores_are_sacrebleu_sentence_bleu():
    targets = ["ein Mann fährt Fahrrad", "zwei Hunde spielen im Schnee"]
    predictions = ["ein Mann fährt ein Fahrrad", "zwei Hunde spielen im Schnee"]
    name, scores = per_example.per_example_scores([metrics.bleu], targets, predictions)
    assert name == "sentence BLEU" and scores[1] == pytest.approx(100.0)
    assert scores[0] == pytest.approx(sacrebleu.sentence_bleu(predictions[0], [targets[0]]).score)


def test_an_unknown_metric_gives_no_scores():
    def my_metric(targets, predictions):
        return {}

    assert per_example.per_example_scores([my_metric], ["a"], ["b"]) is None
