r"""Evaluate a checkpoint on a SeqIO task or mixture with its metric functions (T5X's eval.py).

    python -m simvlm_jax.eval --gin_file=gin/runs/eval.gin \
        --gin.CHECKPOINT_PATH=runs/tiny_cpu --gin.MIXTURE_OR_TASK_NAME=embedded_scenes_captioning \
        --gin.EVAL_OUTPUT_DIR=runs/tiny_cpu/eval

The model is rebuilt from the checkpoint's model directory (its config.gin), so a run gin needs no
model gin. Metrics go to EVAL_OUTPUT_DIR as JSONL (`<task>-metrics.jsonl`, predictions in
`<task>-<step>.jsonl`) and TensorBoard summaries, and are printed as one JSON object per task.
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
from simvlm_jax.model import attention_maps  # noqa: E402
from simvlm_jax.model.inference import ModelRunner  # noqa: E402
from simvlm_jax.training.evaluators import EVALUATION_LOGGERS, decoding_progress  # noqa: E402


def evaluate(
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
) -> dict[str, dict[str, float]]:
    """Runs seqio.Evaluator over `mixture_or_task_name` with the checkpoint; returns {task: metrics}.

    `task_feature_lengths` defaults to the training run's TASK_FEATURE_LENGTHS.
    """
    restored = restore.restore_for_inference(checkpoint_path, mixture_or_task_name, task_feature_lengths, module, split)
    model, params, lengths, step = restored.model, restored.params, restored.lengths, restored.step
    os.makedirs(output_dir, exist_ok=True)
    evaluator = seqio.Evaluator(
        mixture_or_task_name=mixture_or_task_name,
        feature_converter=model.FEATURE_CONVERTER_CLS(pack=False),
        eval_split=split,
        sequence_length=lengths,
        num_examples=num_examples,
        logger_cls=EVALUATION_LOGGERS,
        log_dir=output_dir,
    )
    runner = ModelRunner(model, params, batch_size, decoder_params, on_dataset=decoding_progress("eval"))
    recorder = report.PredictionRecorder(runner.predict_fn)
    all_metrics, _ = evaluator.evaluate(compute_metrics=True, step=step, predict_fn=recorder, score_fn=runner.score_fn)
    results = {task: {k: float(v) for k, v in metrics.items()} for task, metrics in all_metrics.result().items()}
    page = report.write(
        os.path.join(output_dir, report.FILE_NAME),
        f"eval of {checkpoint_path} (step {step}), split {split}",
        report.evaluator_sections(evaluator, recorder, results, attention_maps.maps_fn(model, params)),
    )
    evaluator.close()
    for task, metrics in results.items():
        print(json.dumps({"task": task, "step": step, **metrics}), flush=True)
    print(f"report: {page}", flush=True)
    return results


if __name__ == "__main__":
    from simvlm_jax.cli import gin_flags as _gin_flags

    _gin_flags.define_flags()
    _gin_flags.run(_gin_flags.configurable_main(evaluate))
