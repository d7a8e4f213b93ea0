r"""Write a checkpoint's predictions for a task's split to JSONL (T5X's infer.py).

    python -m simvlm_jax.infer --gin_file=gin/runs/infer.gin \
        --gin.CHECKPOINT_PATH=runs/tiny_cpu --gin.MIXTURE_OR_TASK_NAME=embedded_heldout_captioning \
        --gin.INFER_OUTPUT_DIR=runs/tiny_cpu/infer

One file per task, `<INFER_OUTPUT_DIR>/<task>-<split>.jsonl`, one JSON object per example:
{"index": i, "id": the record's id (when the task keeps one, e.g. an image or question id),
 "inputs": text prefix, "target": reference text, "prediction": decoded text}. A progress line with an
ETA is printed every 10 s while decoding.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

if __name__ == "__main__":
    from simvlm_jax.cli import startup

    startup.begin()  # before TensorFlow and JAX load: quiet logs, huge pages on the CPU backend

import seqio  # noqa: E402

from simvlm_jax import report  # noqa: E402
from simvlm_jax.cli import model_dir as restore  # noqa: E402
from simvlm_jax.data import loader  # noqa: E402
from simvlm_jax.model import attention_maps  # noqa: E402
from simvlm_jax.model.inference import ModelRunner, decode_tokens  # noqa: E402
from simvlm_jax.training.logs import CountProgress  # noqa: E402


def infer(
    *,
    checkpoint_path: str,
    mixture_or_task_name: str,
    output_dir: str,
    split: str = "validation",
    batch_size: int = 32,
    task_feature_lengths: Optional[Mapping[str, int]] = None,
    module: Optional[str] = "simvlm_jax.tasks",
    decoder_params: Optional[Mapping[str, Any]] = None,
    num_examples: Optional[int] = None,
) -> list[str]:
    """Predicts every example of `split` (or the first `num_examples`) of each task; returns the files."""
    restored = restore.restore_for_inference(checkpoint_path, mixture_or_task_name, task_feature_lengths, module, split)
    model, params, lengths = restored.model, restored.params, restored.lengths
    os.makedirs(output_dir, exist_ok=True)
    runner = ModelRunner(model, params, batch_size, decoder_params)
    vocabulary = model.output_vocabulary
    written, sections = [], []
    for task_name in loader.task_names(mixture_or_task_name, split):
        task = seqio.get_mixture_or_task(task_name)
        examples = task.get_dataset(lengths, split=split, shuffle=False, num_epochs=1, try_in_mem_cache=False)
        if num_examples:
            examples = examples.take(num_examples)
        expected = _expected_count(task, split, num_examples)
        runner.on_dataset = lambda count, expected=expected: CountProgress("infer", count or expected)
        features = model.FEATURE_CONVERTER_CLS(pack=False)(examples, lengths)
        predictions = dict(runner.predict_fn(features.enumerate()))
        path = os.path.join(output_dir, f"{task_name}-{split}.jsonl")
        records, kept = [], []
        with open(path, "w") as f:
            for index, example in enumerate(examples.as_numpy_iterator()):
                records.append(_record(index, example, predictions[index], vocabulary))
                f.write(json.dumps(records[-1]) + "\n")
                kept.append(example)
        print(f"{task_name}: {len(predictions)} predictions -> {path}", flush=True)
        written.append(path)
        section = _report_section(task, kept, records)
        attention = attention_maps.maps_fn(model, params)
        if attention is not None:  # rows are in dataset order, as `kept` and `features`
            features_kept = list(features.take(report.ATTENTION_EXAMPLES).as_numpy_iterator())
            outputs = [predictions[i] for i in range(len(kept))]
            report.add_attention(section.rows, kept, features_kept, outputs, attention)
        sections.append(section)
    page = report.write(
        os.path.join(output_dir, report.FILE_NAME), f"infer with {checkpoint_path}, split {split}", sections
    )
    print(f"report: {page}", flush=True)
    return written


def _report_section(task, examples: list, records: list[dict]) -> report.Section:
    """The report's section of one task: each prediction scored against the task's post-processed target
    (the annotators' answers for VQA, every reference for captions) where the split has targets."""
    vocabulary = task.output_features["inputs"].vocabulary
    targets = [
        report.postprocessed_target(task, example, lambda _, text=record["target"]: text)
        for example, record in zip(examples, records)
    ]
    predictions = [record["prediction"] for record in records]
    score_name, rows = report.task_rows(
        task, examples, targets, predictions, lambda ids: decode_tokens(vocabulary, ids)
    )
    return report.Section(task.name, {}, rows, score_name)


def _expected_count(task, split: str, num_examples: Optional[int]) -> Optional[int]:
    """How many examples `split` should give (for the ETA; records the preprocessors drop make it fewer)."""
    try:
        available = task.num_input_examples(split)
    except Exception:  # noqa: BLE001 (a source that cannot count: no ETA)
        available = None
    if available is None:
        return num_examples
    return min(available, num_examples) if num_examples else available


def _record(index: int, example, prediction, vocabulary) -> dict:
    """One JSONL line: the example's identity and texts (never its image)."""
    record = {"index": index}
    if "example_id" in example:
        record["id"] = example["example_id"].decode("utf-8", errors="replace")
    record["inputs"] = decode_tokens(vocabulary, example["inputs"])
    record["target"] = decode_tokens(vocabulary, example["targets"])
    record["prediction"] = decode_tokens(vocabulary, prediction)
    return record


if __name__ == "__main__":
    from simvlm_jax.cli import gin_flags as _gin_flags

    _gin_flags.define_flags()
    _gin_flags.run(_gin_flags.configurable_main(infer))
