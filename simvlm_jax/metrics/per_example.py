"""Each example's own score, for the evaluation report: the task's metric brought down to one example.

    coco_caption_metrics, nocaps_caption_metrics   CIDEr of the caption against its references (x100), with
                                                   the corpus's document frequencies, as COCOEvalCap gives it
    vqa_accuracy                                   the question's VQA accuracy (official rules, x100)
    accuracy, accuracy_and_consistency             100 if the answer is right, else 0
    exact_match                                    100 if the caption equals a reference (normalised), else 0
    bleu                                           sentence BLEU (sacreBLEU, tokenizer 13a)

`per_example_scores(metric_fns, targets, predictions)` picks the first metric it knows and returns
(its name, one score per example), or None for a task whose metrics it does not know.
"""

from __future__ import annotations

import shutil
from typing import Any, Callable, Optional, Sequence

from simvlm_jax.metrics import _inputs


def _references(target: Any) -> list[str]:
    """A target's reference texts: a string, a list, or a dict holding "references" or "label"."""
    if isinstance(target, dict):
        target = target.get("references", target.get("label", ""))
    return _inputs.as_references(target)


def cider_per_example(targets: Sequence[Any], predictions: Sequence[Any]) -> list[float]:
    """CIDEr-D of each caption (x100), over the whole set's document frequencies (needs Java for the PTB
    tokeniser, as the corpus metric)."""
    from pycocoevalcap.cider.cider import Cider

    from simvlm_jax.metrics.captioning import _tokenize

    refs = _tokenize({i: _references(t) for i, t in enumerate(targets)})
    hyps = _tokenize({i: [_inputs.as_text(p)] for i, p in enumerate(predictions)})
    _, scores = Cider().compute_score(refs, hyps)
    return [100.0 * float(s) for s in scores]


def vqa_per_example(targets: Sequence[Any], predictions: Sequence[Any]) -> list[float]:
    from simvlm_jax.metrics.vqa import question_accuracy

    return [100.0 * question_accuracy(_references(t), _inputs.as_text(p)) for t, p in zip(targets, predictions)]


def correct_per_example(targets: Sequence[Any], predictions: Sequence[Any]) -> list[float]:
    """100 where the answer (stripped, lower-cased) is one of the target's, as `metrics.accuracy` counts."""
    return [
        100.0 * (_inputs.as_text(p).strip().lower() in {r.strip().lower() for r in _references(t)})
        for t, p in zip(targets, predictions)
    ]


def exact_per_example(targets: Sequence[Any], predictions: Sequence[Any]) -> list[float]:
    def norm(text: str) -> str:
        return " ".join(text.lower().split())

    return [
        100.0 * (norm(_inputs.as_text(p)) in {norm(r) for r in _references(t)}) for t, p in zip(targets, predictions)
    ]


def bleu_per_example(targets: Sequence[Any], predictions: Sequence[Any]) -> list[float]:
    import sacrebleu

    return [
        float(sacrebleu.sentence_bleu(_inputs.as_text(p), _references(t), tokenize="13a").score)
        for t, p in zip(targets, predictions)
    ]


# metric function name -> (the score's name in the report, how each example is scored)
BY_METRIC: dict[str, tuple[str, Callable[[Sequence[Any], Sequence[Any]], list[float]]]] = {
    "coco_caption_metrics": ("CIDEr", cider_per_example),
    "nocaps_caption_metrics": ("CIDEr", cider_per_example),
    "vqa_accuracy": ("VQA accuracy", vqa_per_example),
    "accuracy": ("correct", correct_per_example),
    "accuracy_and_consistency": ("correct", correct_per_example),
    "exact_match": ("exact match", exact_per_example),
    "bleu": ("sentence BLEU", bleu_per_example),
}


def per_example_scores(
    metric_fns: Sequence[Callable], targets: Sequence[Any], predictions: Sequence[Any]
) -> Optional[tuple[str, list[float]]]:
    """(score name, one score per example) by the first of `metric_fns` this module knows, else None.
    CIDEr falls back to exact match where Java (the PTB tokeniser) is missing."""
    _inputs.check_pairs(targets, predictions)
    for fn in metric_fns:
        known = BY_METRIC.get(getattr(fn, "__name__", ""))
        if known is None:
            continue
        name, score = known
        if score is cider_per_example and shutil.which("java") is None:
            name, score = BY_METRIC["exact_match"]
        return name, score(targets, predictions)
    return None
