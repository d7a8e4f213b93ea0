"""Metrics: clu training metrics (what `loss_fn` returns) and SeqIO metric functions for evaluation.

Training (`training.py`): `Metrics`, `Sum`, `weighted_average`, `scalar_average`, `merge_metrics`,
`compute_metrics`.

Evaluation, each `fn(targets, predictions) -> {name: float}` for a seqio.Task's `metric_fns`
(see docs/evaluation.md):
- `coco_caption_metrics`: BLEU-4, METEOR, ROUGE-L, CIDEr via pycocoevalcap (`captioning.py`);
- `exact_match`: normalised string match against any reference (`captioning.py`);
- `vqa_accuracy`: the official VQA v2 accuracy (`vqa.py`);
- `bleu`: sacrebleu corpus BLEU, tokenizer 13a; `accuracy`: classification as generation (`text.py`).
"""

from simvlm_jax.metrics.captioning import coco_caption_metrics, exact_match
from simvlm_jax.metrics.text import accuracy, bleu
from simvlm_jax.metrics.training import (
    Metrics,
    Sum,
    compute_metrics,
    merge_metrics,
    scalar_average,
    weighted_average,
)
from simvlm_jax.metrics.vqa import vqa_accuracy

__all__ = [
    "Metrics",
    "Sum",
    "accuracy",
    "bleu",
    "coco_caption_metrics",
    "compute_metrics",
    "exact_match",
    "merge_metrics",
    "scalar_average",
    "vqa_accuracy",
    "weighted_average",
]
