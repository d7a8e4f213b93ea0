"""Text-generation metrics as SeqIO metric functions: corpus BLEU (sacrebleu), accuracy, and accuracy with
consistency (NLVR2's two measures)."""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

import numpy as np
import sacrebleu

from simvlm_jax.metrics import _inputs


def bleu(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """SeqIO metric: {"bleu": sacrebleu corpus BLEU}, tokenizer 13a, sacrebleu's other defaults.

    The same number as `sacrebleu.corpus_bleu(predictions, reference_streams)` (case-sensitive,
    exponential smoothing), i.e. what Multi30k/WMT papers report via sacrebleu.

    Args:
      targets: per example, one reference string or a list of references; the count may vary between
        examples (shorter lists are padded with sacrebleu's "missing reference" marker, None).
      predictions: per example, the decoded hypothesis.
    """
    _inputs.check_pairs(targets, predictions)
    references = [_inputs.as_references(target) for target in targets]
    if any(not refs for refs in references):
        raise ValueError("every BLEU target needs at least one reference")
    num_streams = max(len(refs) for refs in references)
    # sacrebleu wants reference *streams*: stream k holds every example's k-th reference.
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(num_streams)]
    hypotheses = [_inputs.as_text(p) for p in predictions]
    score = sacrebleu.corpus_bleu(hypotheses, streams, tokenize="13a")
    return {"bleu": float(score.score)}


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """SeqIO metric: {"accuracy": percent of predictions equal to their target}, for classification
    as generation (e.g. "entailment"/"neutral"/"contradiction"). Both sides are stripped and
    lower-cased; a list target counts as correct if any of its entries matches.
    """
    _inputs.check_pairs(targets, predictions)
    hits = [
        _inputs.as_text(p).strip().lower() in {r.strip().lower() for r in _inputs.as_references(t)}
        for t, p in zip(targets, predictions)
    ]
    return {"accuracy": 100.0 * float(np.mean(hits))}


def accuracy_and_consistency(targets: Sequence[Mapping[str, Any]], predictions: Sequence[Any]) -> dict[str, float]:
    """SeqIO metric: {"accuracy", "consistency"} in percent, NLVR2's two measures.

    Each target is {"label": the correct answer, "group": a key}; consistency is the percent of groups all
    of whose examples are right (NLVR2: a group is one sentence, written about several image pairs).
    Answers are compared as in `accuracy` (stripped, lower-cased).
    """
    _inputs.check_pairs(targets, predictions)
    right_by_group: dict[str, list[bool]] = collections.defaultdict(list)
    for target, prediction in zip(targets, predictions):
        right = _inputs.as_text(prediction).strip().lower() == _inputs.as_text(target["label"]).strip().lower()
        right_by_group[_inputs.as_text(target["group"])].append(right)
    hits = [right for group in right_by_group.values() for right in group]
    return {
        "accuracy": 100.0 * float(np.mean(hits)),
        "consistency": 100.0 * float(np.mean([all(group) for group in right_by_group.values()])),
    }
