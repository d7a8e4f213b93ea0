"""The evaluation report: a self-contained `report.html` that shows what the model sees and says.

    rows = report.task_rows(task, examples, targets, predictions, decode)   # one row per example
    report.write("out/report.html", "eval @ step 1200", [report.Section(task.name, metrics, rows)])

Per example: a thumbnail of each image (two for NLVR2; none for a text-only example), the text prefix or
question, the references, the prediction and the example's own score (`metrics.per_example`: CIDEr for
captions, VQA accuracy, right/wrong for classification, sentence BLEU for translation), and, where given,
the decoder's cross-attention over the image drawn as a heat map (`report.attention`). Rows start worst
first; every column header sorts. The task's aggregate metrics head each section, with the mean score per
group (VQA answer type, NoCaps domain). Images are embedded as data URIs and the page needs no server and
no network, so the folder can be copied, or opened from a bucket.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import io
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from simvlm_jax.data.preprocessors import IMAGE_MEAN, IMAGE_STD
from simvlm_jax.metrics import per_example
from simvlm_jax.report.template import PAGE

FILE_NAME = "report.html"
THUMBNAIL_SIDE = 160  # pixels on the page (small images are scaled up, pixelated)


@dataclasses.dataclass
class Row:
    """One example of the report."""

    index: int
    id: str
    images: list[str]  # PNG data URIs, one per image of the example
    inputs: str
    references: list[str]
    prediction: str
    score: Optional[float] = None
    group: Optional[str] = None  # VQA answer type, NoCaps domain, ... (the breakdown's key)
    attention: list[str] = dataclasses.field(default_factory=list)  # heat-map data URIs, as `images`


@dataclasses.dataclass
class Section:
    """One task's part of the page."""

    task: str
    metrics: Mapping[str, float]
    rows: list[Row]
    score_name: Optional[str] = None


def png_data_uri(pixels: np.ndarray) -> str:
    """uint8 [H, W, 3] -> "data:image/png;base64,..."."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def denormalize(image: np.ndarray) -> np.ndarray:
    """A model input image (float32 [S, S, 3], ImageNet-normalised) -> uint8 [S, S, 3]."""
    pixels = np.asarray(image, np.float32) * np.asarray(IMAGE_STD) + np.asarray(IMAGE_MEAN)
    return np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)


def example_images(example: Mapping[str, Any]) -> list[np.ndarray]:
    """The example's images as uint8 [S, S, 3]: one, several ([N, S, S, 3], NLVR2), or none where
    image_mask says there is none (a text-only example)."""
    if "image" not in example:
        return []
    images = np.asarray(example["image"])
    images = images[None] if images.ndim == 3 else images
    mask = np.asarray(example.get("image_mask", np.ones(len(images)))).reshape(-1)
    return [denormalize(image) for image, present in zip(images, mask) if present > 0]


def answer_type(references: Sequence[str]) -> str:
    """VQA's answer types, from the answers: "yes/no", "number" or "other" (by the most common answer)."""
    common = collections.Counter(r.strip().lower() for r in references).most_common(1)
    answer = common[0][0] if common else ""
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.replace(".", "", 1).isdigit() else "other"


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def task_rows(
    task,
    examples: Sequence[Mapping[str, Any]],
    targets: Sequence[Any],
    predictions: Sequence[Any],
    decode: Callable[[Any], str],
) -> tuple[Optional[str], list[Row]]:
    """(score name, rows) for a seqio task's examples (as its dataset yields them), their postprocessed
    targets, the predictions and a token decoder; the scores come from the task's metric functions."""
    scored = per_example.per_example_scores(task.metric_fns, targets, predictions)
    score_name, scores = scored if scored else (None, [None] * len(examples))
    rows = []
    for index, (example, target, prediction, score) in enumerate(zip(examples, targets, predictions, scores)):
        references = per_example._references(target)
        group = None
        if isinstance(target, dict) and "domain" in target:
            group = _text(target["domain"])
        elif score_name == "VQA accuracy":
            group = _text(example["answer_type"]) if _text(example.get("answer_type", "")) else answer_type(references)
        rows.append(
            Row(
                index=index,
                id=_text(example["example_id"]) if "example_id" in example else str(index),
                images=[png_data_uri(image) for image in example_images(example)],
                inputs=decode(example["inputs"]) if "inputs" in example else "",
                references=references,
                prediction=_text(prediction),
                score=score,
                group=group,
            )
        )
    return score_name, rows


def postprocessed_target(task, example: Mapping[str, Any], decode: Callable[[Any], str]) -> Any:
    """An example's target as SeqIO's metrics see it: the pretokenized string (else the decoded `targets`),
    through the task's postprocessor (the annotators' answers for VQA, every reference for captions)."""
    text = _text(example["targets_pretokenized"]) if "targets_pretokenized" in example else decode(example["targets"])
    return task.postprocess_fn(text, example=example, is_target=True)


def breakdown(rows: Sequence[Row]) -> list[tuple[str, int, float]]:
    """[(group, examples, mean score)] over the rows that have both, by group name."""
    groups: dict[str, list[float]] = collections.defaultdict(list)
    for row in rows:
        if row.group is not None and row.score is not None:
            groups[row.group].append(row.score)
    return [(name, len(scores), float(np.mean(scores))) for name, scores in sorted(groups.items())]


def write(path: str, title: str, sections: Sequence[Section]) -> str:
    """Renders the page to `path` (rows worst first); returns the path."""
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    ordered = [
        dataclasses.replace(
            section,
            rows=sorted(
                section.rows, key=lambda r: (r.score is None, r.score if r.score is not None else 0.0, r.index)
            ),
        )
        for section in sections
    ]
    html = environment.from_string(PAGE).render(
        title=title,
        sections=ordered,
        breakdowns=[breakdown(section.rows) for section in ordered],
        side=THUMBNAIL_SIDE,
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(path + ".tmp", path)
    return path


class PredictionRecorder:
    """Wraps a predict_fn (SeqIO's `(dataset) -> [(index, token ids)]`) and keeps what it returns per dataset,
    so that a seqio.Evaluator's predictions can be shown after it scored them."""

    def __init__(self, predict_fn: Callable):
        self.predict_fn = predict_fn
        self.by_dataset: dict[int, list[tuple[int, Any]]] = {}

    def __call__(self, dataset, *args, **kwargs):
        outputs = self.predict_fn(dataset, *args, **kwargs)
        self.by_dataset[id(dataset)] = sorted(outputs, key=lambda pair: pair[0])
        return outputs


ATTENTION_EXAMPLES = 16  # rows per task that get attention heat maps (one teacher-forced pass for them)


def add_attention(rows: Sequence[Row], examples: Sequence[Mapping[str, Any]], features: Sequence[Mapping], outputs,
                  attention_fn: Callable, limit: int = ATTENTION_EXAMPLES) -> None:  # fmt: skip
    """Adds heat maps of the decoder's cross-attention over each image to the first `limit` rows.

    features: the model features of the same examples (the feature converter's output); outputs: their
    predicted token ids; attention_fn(features batch, predicted) -> [B, N, h, w] (model.attention_maps)."""
    from simvlm_jax.model.attention_maps import overlay

    count = min(limit, len(rows), len(features))
    if count == 0:
        return
    keys = ("encoder_image", "encoder_image_mask", "encoder_input_tokens")
    features = [f[1] if isinstance(f, tuple) else f for f in features]  # SeqIO's datasets are enumerated
    batch = {key: np.stack([np.asarray(f[key]) for f in features[:count]]) for key in keys}
    maps = attention_fn(batch, [list(tokens) for tokens in outputs[:count]])
    for row, example, example_maps in zip(rows[:count], examples[:count], maps):
        images = example_images(example)
        row.attention = [png_data_uri(overlay(image, heat)) for image, heat in zip(images, example_maps)]


def evaluator_sections(
    evaluator,
    recorder: PredictionRecorder,
    metrics: Mapping[str, Mapping[str, float]],
    attention_fn: Optional[Callable] = None,
) -> list:
    """A Section per task a seqio.Evaluator decoded: its examples (as the task yields them), postprocessed
    targets, the recorded predictions decoded and postprocessed as SeqIO does for the metrics; with
    `attention_fn`, the first rows get the decoder's cross-attention drawn over their images."""
    from simvlm_jax.model.inference import decode_tokens

    sections = []
    for task in evaluator.eval_tasks:
        outputs = recorder.by_dataset.get(id(evaluator.cached_model_datasets[task.name]))
        if outputs is None:  # a task scored without decoding
            continue
        examples = list(evaluator.cached_task_datasets[task.name].as_numpy_iterator())
        vocabulary = task.output_features["targets"].vocabulary
        predictions = [
            task.postprocess_fn(decode_tokens(vocabulary, tokens), example=example, is_target=False)
            for (_, tokens), example in zip(outputs, examples)
        ]
        targets = [postprocessed_target(task, e, lambda ids: decode_tokens(vocabulary, ids)) for e in examples]
        input_vocabulary = task.output_features["inputs"].vocabulary
        score_name, rows = task_rows(
            task,
            examples,
            targets,
            predictions,
            lambda ids, v=input_vocabulary: decode_tokens(v, ids),
        )
        if attention_fn is not None:
            model_dataset = evaluator.cached_model_datasets[task.name].take(ATTENTION_EXAMPLES)
            features = list(model_dataset.as_numpy_iterator())
            add_attention(rows, examples, features, [tokens for _, tokens in outputs], attention_fn)
        sections.append(Section(task.name, dict(metrics.get(task.name, {})), rows, score_name))
    return sections
