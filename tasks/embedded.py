"""Tasks over the embedded default data (generated scenes + Python's own documentation prose).

    embedded_scenes_prefixlm        image-text PrefixLM     train / validation / heldout
    embedded_text_prefixlm          text-only PrefixLM      train / validation
    embedded_prefixlm_mix           the two mixed 8:1 (the paper's 4,096 pairs : 512 documents)
    embedded_scenes_captioning      image -> whole caption (no text prefix)   validation / heldout
    embedded_heldout_captioning     the same on the held-out compositions, as its 'validation' split
    embedded_eval_mix               what training evaluation reports on (loss + greedy samples)
    embedded_captioning_mix         the two captioning tasks: zero-shot CIDEr / BLEU-4 / exact match

The objective ablation (docs/ablations.md): the same data with an empty prefix, i.e. plain language
modelling (image -> whole caption; documents predicted from their window's start, no encoder text):

    embedded_scenes_plain_lm, embedded_text_plain_lm, embedded_plain_lm_mix (8:1)

T5's span-corruption objective on the same data (sentinels are 100 extra ids after the 2,000 pieces, so
a model trained on it needs vocab_size 2100):

    embedded_scenes_span_corruption, embedded_text_span_corruption, embedded_span_corruption_mix (8:1)

The data ablations train on `embedded_scenes_prefixlm` alone (no text-only data) or
`embedded_text_prefixlm` alone (no image-text data).

The data is generated into `simvlm_jax.data.embedded.default_data_dir()` ($SIMVLM_DATA_DIR) the first
time a task reads it; `python -m simvlm_jax.data.embedded` does it ahead of time.
"""

from __future__ import annotations

from simvlm_jax import metrics
from simvlm_jax.data import embedded as embedded_data
from simvlm_jax.tasks import common

CAPTION_METRICS = [metrics.coco_caption_metrics, metrics.exact_match]

IMAGE_TEXT_RATE = 8.0
TEXT_ONLY_RATE = 1.0


VOCABULARY = embedded_data.embedded_vocabulary()
_SCENES = "embedded_scenes:1.0.0"
_TEXT = "pydoc_text:1.0.0"

common.add_task(
    "embedded_scenes_prefixlm",
    common.PreparedTfdsSource(_SCENES, splits=["train", "validation", "heldout"]),
    VOCABULARY,
    common.image_text_preprocessors(image_key="image", text_key="caption", id_key="id"),
)
common.add_task(
    "embedded_text_prefixlm",
    common.PreparedTfdsSource(_TEXT, splits=["train", "validation"]),
    VOCABULARY,
    common.text_only_preprocessors(text_key="text"),
)
common.add_mixture(
    "embedded_prefixlm_mix",
    [("embedded_scenes_prefixlm", IMAGE_TEXT_RATE), ("embedded_text_prefixlm", TEXT_ONLY_RATE)],
)
common.add_task(
    "embedded_scenes_plain_lm",
    common.PreparedTfdsSource(_SCENES, splits=["train", "validation", "heldout"]),
    VOCABULARY,
    common.image_text_preprocessors(image_key="image", text_key="caption", id_key="id", max_prefix_tokens=0),
)
common.add_task(
    "embedded_text_plain_lm",
    common.PreparedTfdsSource(_TEXT, splits=["train", "validation"]),
    VOCABULARY,
    common.text_only_preprocessors(text_key="text", max_prefix_tokens=0),
)
common.add_mixture(
    "embedded_plain_lm_mix",
    [("embedded_scenes_plain_lm", IMAGE_TEXT_RATE), ("embedded_text_plain_lm", TEXT_ONLY_RATE)],
)
SENTINEL_IDS = 100
VOCABULARY_WITH_SENTINELS = embedded_data.embedded_vocabulary(extra_ids=SENTINEL_IDS)
common.add_task(
    "embedded_scenes_span_corruption",
    common.PreparedTfdsSource(_SCENES, splits=["train", "validation", "heldout"]),
    VOCABULARY_WITH_SENTINELS,
    common.image_text_preprocessors(image_key="image", text_key="caption", id_key="id", objective="span_corruption"),
)
common.add_task(
    "embedded_text_span_corruption",
    common.PreparedTfdsSource(_TEXT, splits=["train", "validation"]),
    VOCABULARY_WITH_SENTINELS,
    common.text_only_preprocessors(text_key="text", objective="span_corruption"),
)
common.add_mixture(
    "embedded_span_corruption_mix",
    [("embedded_scenes_span_corruption", IMAGE_TEXT_RATE), ("embedded_text_span_corruption", TEXT_ONLY_RATE)],
)
common.add_task(
    "embedded_scenes_captioning",
    common.PreparedTfdsSource(_SCENES, splits=["validation", "heldout"]),
    VOCABULARY,
    common.image_text_preprocessors(image_key="image", text_key="caption", id_key="id", max_prefix_tokens=0),
    metric_fns=CAPTION_METRICS,
)
common.add_task(
    "embedded_heldout_captioning",
    common.PreparedTfdsSource(_SCENES, splits={"validation": "heldout"}),
    VOCABULARY,
    common.image_text_preprocessors(image_key="image", text_key="caption", id_key="id", max_prefix_tokens=0),
    metric_fns=CAPTION_METRICS,
)
common.add_mixture(
    "embedded_eval_mix",
    [
        ("embedded_scenes_prefixlm", 1.0),
        ("embedded_text_prefixlm", 1.0),
        ("embedded_scenes_captioning", 1.0),
        ("embedded_heldout_captioning", 1.0),
    ],
)
common.add_mixture(
    "embedded_captioning_mix",
    [("embedded_scenes_captioning", 1.0), ("embedded_heldout_captioning", 1.0)],
)
