"""Image captioning tasks on COCO (Karpathy split) and NoCaps, from the official release files.

    coco_captions            fine-tuning: the image alone in the encoder, the decoder generates the whole
                             caption. Splits train (one example per caption) / validation / test (one
                             example per image, scored against all its references). Metrics: BLEU-4,
                             METEOR, ROUGE-L, CIDEr (`metrics.coco_caption_metrics`).
    coco_captions_zero_shot  evaluation of a pretrained model: the same data with the paper's prompt
                             "a picture of" in the encoder after the image; splits validation / test.
    nocaps                   evaluation of a COCO-fine-tuned model on NoCaps validation (no prompt);
                             metrics overall and per domain (`nocaps_caption_metrics`).
    nocaps_zero_shot         the same with the "a picture of" prompt.

The whole caption is the target: `captioning_prompt` with an empty prompt (fine-tuned tasks) or "a picture
of" (zero-shot), not the PrefixLM split with max_prefix_tokens=0, which would move the first tokens of a
caption longer than the decoder into the encoder (and so show part of an evaluation reference to the
model); a long caption is cut at the end instead (append_eos_after_trim).

The target side of every example carries what the metrics need: `references` (all the image's captions)
and, for NoCaps, `domain`; `caption_postprocessor` returns them as the target of an example.

The images are read from $SIMVLM_RAW_DATA_DIR/<dataset> as the data is read (the prepared TFDS data in
$SIMVLM_DATA_DIR/tfds holds their paths; data/builders/coco_karpathy.py, nocaps.py).
Vocabulary: `pretraining.default_vocabulary()`: $SIMVLM_SPM_MODEL when set (Base runs), else the embedded
one (the tiny runs). `register(vocabulary)` registers the tasks again with another vocabulary (tests).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import seqio
import tensorflow as tf

from simvlm_jax import metrics
from simvlm_jax.data import preprocessors, raw_files
from simvlm_jax.data.builders import coco_karpathy, nocaps
from simvlm_jax.metrics import _inputs
from simvlm_jax.tasks import common, pretraining

COCO = "coco_karpathy:1.0.0"
NOCAPS = "nocaps:1.0.0"
ZERO_SHOT_PROMPT = "a picture of"  # the paper's zero-shot captioning prefix
DOMAINS = nocaps.DOMAINS


def rekey_caption(dataset: tf.data.Dataset, keep_domain: bool = False) -> tf.data.Dataset:
    """Prepared records -> {image (encoded bytes), text = caption, references = all captions, example_id =
    image id, domain (keep_domain only)}."""

    def rekey(ex):
        out = {"image": ex["image"], "text": ex["caption"], "references": ex["captions"]}
        if keep_domain:
            out["domain"] = ex["domain"]
        return {**out, **preprocessors.example_id(ex, "image_id")}

    return dataset.map(rekey, num_parallel_calls=tf.data.AUTOTUNE)


def caption_steps(raw_dataset: str, prompt: str, keep_domain: bool = False) -> list:
    """Read the image, rekey, then the image-text pipeline with `prompt` in the encoder ("" for none)."""
    steps = common.image_text_preprocessors(prompt=prompt)
    # common's first step keeps only image and text; ours keeps the references (and domain) as well.
    return [
        functools.partial(raw_files.read_image_file, raw_dataset=raw_dataset),
        functools.partial(rekey_caption, keep_domain=keep_domain),
        *steps[1:],
    ]


def caption_postprocessor(text: Any, example: Optional[dict] = None, is_target: bool = False) -> Any:
    """Target side: the example's references, or {"references", "domain"} when it has a domain; prediction
    side: the decoded caption."""
    if not is_target or example is None or "references" not in example:
        return text
    references = [_inputs.as_text(r) for r in list(example["references"])]
    if "domain" in example:
        return {"references": references, "domain": _inputs.as_text(example["domain"])}
    return references


def nocaps_caption_metrics(targets: Sequence[dict], predictions: Sequence[Any]) -> dict[str, float]:
    """SeqIO metric: `coco_caption_metrics` over all images ("cider", "bleu_4", ...) and over the images of
    each domain present ("cider_in-domain", "cider_near-domain", "cider_out-domain", ...).

    Each domain is scored on its images alone, as COCOEvalCap run on that subset: CIDEr's document
    frequencies come from the domain's own references.
    """
    _inputs.check_pairs(targets, predictions)
    scores = metrics.coco_caption_metrics([t["references"] for t in targets], predictions)
    for domain in DOMAINS:
        rows = [(t["references"], p) for t, p in zip(targets, predictions) if t["domain"] == domain]
        if rows:
            per_domain = metrics.coco_caption_metrics([r for r, _ in rows], [p for _, p in rows])
            scores.update({f"{name}_{domain}": value for name, value in per_domain.items()})
    return scores


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> list[seqio.Task]:
    """Registers (again) the four tasks; the data folders are read from the environment when data is read."""
    vocabulary = vocabulary or pretraining.default_vocabulary()
    coco_metrics = [metrics.coco_caption_metrics]
    tasks = []
    for name, prompt, splits in (
        ("coco_captions", "", ["train", "validation", "test"]),
        ("coco_captions_zero_shot", ZERO_SHOT_PROMPT, ["validation", "test"]),
    ):
        tasks.append(
            common.add_task(
                name,
                common.PreparedTfdsSource(COCO, splits=splits),
                vocabulary,
                caption_steps(coco_karpathy.DATASET, prompt),
                postprocess_fn=caption_postprocessor,
                metric_fns=coco_metrics,
            )
        )
    for name, prompt in (("nocaps", ""), ("nocaps_zero_shot", ZERO_SHOT_PROMPT)):
        tasks.append(
            common.add_task(
                name,
                common.PreparedTfdsSource(NOCAPS, splits=["validation"]),
                vocabulary,
                caption_steps(nocaps.DATASET, prompt, keep_domain=True),
                postprocess_fn=caption_postprocessor,
                metric_fns=[nocaps_caption_metrics],
            )
        )
    return tasks


register()
