"""Periodic evaluation during training (T5X's two kinds).

* `TrainingEvaluator`: teacher-forced loss and accuracy per task of the train-eval mixture, and greedy
  samples in the log -> model_dir/training_eval/<task>/.
* `InferenceEvaluator`: decodes every example of the infer-eval split and scores the predictions with
  each task's metric functions (seqio.Evaluator: CIDEr, VQA accuracy, ...) -> model_dir/inference_eval/.
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import Callable, Sequence

import jax
import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from simvlm_jax import report
from simvlm_jax.data import loader
from simvlm_jax.model import attention_maps
from simvlm_jax.model import loss_metrics as metrics_lib
from simvlm_jax.model.inference import EvaluationInterrupted, ModelRunner, decode_tokens
from simvlm_jax.training.logs import CountProgress


class CompactJSONEncoder(seqio.loggers.TensorAndNumpyEncoder):
    """seqio's JSONL encoder, except that arrays of more than a few values (the images) are written as
    their dtype and shape, `"<float32 array [64, 64, 3]>"`, and bytes as text."""

    def default(self, obj):
        if isinstance(obj, tf.Tensor):
            obj = obj.numpy()
        if isinstance(obj, np.ndarray) and obj.size > 32:
            return f"<{obj.dtype} array {list(obj.shape)}>"
        if isinstance(obj, bytes):
            return obj.decode("utf-8", errors="replace")
        return super().default(obj)


# The loggers of seqio.Evaluator: JSONL (compact, above) and TensorBoard summaries.
EVALUATION_LOGGERS = [functools.partial(seqio.JSONLogger, json_encoder_cls=CompactJSONEncoder), seqio.TensorBoardLogger]


def decoding_progress(label: str):
    """A ModelRunner `on_dataset` hook printing `label: done/total examples, rate, ETA` every 10 s."""
    return lambda total: CountProgress(label, total)


class TrainingEvaluator:
    """Evaluates each task of the train-eval mixture separately (T5X's training_eval/<task>)."""

    def __init__(self, dataset_cfg, data_layout, eval_steps: int, writers, vocabulary, num_samples: int):
        self.eval_steps = eval_steps
        self.writers = writers
        self.vocabulary = vocabulary
        self.num_samples = num_samples
        loader.import_task_module(dataset_cfg.module)
        self.task_names = loader.task_names(dataset_cfg.mixture_or_task_name, dataset_cfg.split)
        if not self.task_names:
            raise ValueError(f"No task of {dataset_cfg.mixture_or_task_name!r} has a {dataset_cfg.split!r} split.")
        self._datasets = {
            name: loader.get_dataset(dataset_cfg, data_layout.shard_id, data_layout.num_shards, task_name=name)
            for name in self.task_names
        }

    def evaluate(
        self, trainer, step: int, interrupted: Callable[[], bool] = lambda: False
    ) -> dict[str, dict[str, float]]:
        """Per task, `eval_steps` batches; `interrupted()` is asked before each (True: EvaluationInterrupted)."""
        results = {}
        for name, dataset in self._datasets.items():
            batches, step_metrics = [], []
            for batch in itertools.islice(loader.numpy_batches(iter(dataset)), self.eval_steps):
                if interrupted():
                    raise EvaluationInterrupted(f"training eval of {name} interrupted")
                batches.append(batch)
                step_metrics.append(trainer.eval_step(batch))
            if not batches:
                logging.warning("Eval task %s gave no full batch; skipped.", name)
                continue
            summary = metrics_lib.compute_metrics(metrics_lib.merge_metrics(step_metrics))
            writer = self.writers.eval(name)
            writer.write_scalars(step, summary)
            samples = self._samples(trainer, batches[0])
            if samples:
                writer.write_texts(step, {"samples": "\n\n".join(samples)})
            line = f"eval {name} @ {step}: loss {summary['loss']:.4f} accuracy {summary['accuracy']:.3f}"
            if jax.process_index() == 0:
                print(line + "".join("\n    " + s for s in samples), flush=True)
            logging.info(line)
            results[name] = summary
        return results

    def _samples(self, trainer, batch) -> list[str]:
        """Greedy decodes of the first few image examples: 'prefix | target -> prediction'."""
        with_image = np.flatnonzero(
            np.reshape(batch["encoder_image_mask"], (len(batch["encoder_image_mask"]), -1)).max(-1) > 0
        )
        if self.num_samples <= 0 or with_image.size == 0:
            return []
        predictions = trainer.predict(batch)
        lines = []
        for i in with_image[: self.num_samples]:
            prefix = self._decode(batch["encoder_input_tokens"][i])
            target = self._decode(batch["decoder_target_tokens"][i])
            predicted = self._decode(predictions[i])
            lines.append(f"[image]{' ' + prefix if prefix else ''} | target: {target!r} -> greedy: {predicted!r}")
        return lines

    def _decode(self, ids: Sequence[int]) -> str:
        return decode_tokens(self.vocabulary, ids)


class InferenceEvaluator:
    """Decodes a task's or mixture's split and scores it with the tasks' metric_fns (seqio.Evaluator).

    Metrics are written as JSONL and TensorBoard summaries under `output_dir` (T5X: model_dir/inference_eval)
    and printed one line per task; `output_dir/report.html` shows every decoded example of the newest
    evaluation with its image, references, prediction and score (simvlm_jax/report).
    """

    def __init__(self, dataset_cfg, model, output_dir: str, decoder_params=None):
        loader.import_task_module(dataset_cfg.module)
        os.makedirs(output_dir, exist_ok=True)  # seqio's JSONLogger writes there without creating it
        self._evaluator = seqio.Evaluator(
            mixture_or_task_name=dataset_cfg.mixture_or_task_name,
            feature_converter=model.FEATURE_CONVERTER_CLS(pack=False),
            eval_split=dataset_cfg.split,
            use_cached=dataset_cfg.use_cached,
            seed=dataset_cfg.seed,
            sequence_length=dataset_cfg.task_feature_lengths,
            logger_cls=EVALUATION_LOGGERS if jax.process_index() == 0 else (),  # one writer per run
            log_dir=output_dir,
        )
        self._runner = ModelRunner(
            model, None, dataset_cfg.batch_size, decoder_params, on_dataset=decoding_progress("infer_eval")
        )
        self._model = model
        self.report_path = os.path.join(output_dir, report.FILE_NAME)

    def evaluate(
        self, params, step: int, interrupted: Callable[[], bool] = lambda: False
    ) -> dict[str, dict[str, float]]:
        """Decodes and scores the split; `interrupted()` is asked before each batch (True: EvaluationInterrupted)."""
        self._runner.params = params
        self._runner.interrupted = interrupted
        recorder = report.PredictionRecorder(self._runner.predict_fn)
        all_metrics, _ = self._evaluator.evaluate(
            compute_metrics=True, step=step, predict_fn=recorder, score_fn=self._runner.score_fn
        )
        results = {task: {k: float(v) for k, v in metrics.items()} for task, metrics in all_metrics.result().items()}
        if jax.process_index() == 0:
            attention = attention_maps.maps_fn(self._model, params)
            sections = report.evaluator_sections(self._evaluator, recorder, results, attention)
            report.write(self.report_path, f"infer_eval @ step {step}", sections)
        for task, metrics in results.items() if jax.process_index() == 0 else ():
            line = f"infer_eval {task} @ {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items()))
            print(line, flush=True)
            logging.info(line)
        return results
