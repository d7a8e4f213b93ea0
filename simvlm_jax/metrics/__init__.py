"""SeqIO metric functions for evaluation: pure functions of (targets, predictions), no model inside.

(The clu metrics that `loss_fn` returns live with the model: `simvlm_jax.model.loss_metrics`.)

Each `fn(targets, predictions) -> {name: float}` for a seqio.Task's `metric_fns`
(see docs/evaluation.md):
- `coco_caption_metrics`: BLEU-4, METEOR, ROUGE-L, CIDEr via pycocoevalcap (`captioning.py`);
- `exact_match`: normalised string match against any reference (`captioning.py`);
- `vqa_accuracy`: the official VQA v2 accuracy (`vqa.py`);
- `bleu`: sacrebleu corpus BLEU, tokenizer 13a; `accuracy`: classification as generation;
  `accuracy_and_consistency`: NLVR2's accuracy and consistency (`text.py`).
"""

from simvlm_jax.metrics.captioning import coco_caption_metrics, exact_match
from simvlm_jax.metrics.text import accuracy, accuracy_and_consistency, bleu
from simvlm_jax.metrics.vqa import vqa_accuracy

__all__ = [
    "accuracy",
    "accuracy_and_consistency",
    "bleu",
    "coco_caption_metrics",
    "exact_match",
    "vqa_accuracy",
]
