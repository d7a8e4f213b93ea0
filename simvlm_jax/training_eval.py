"""Periodic evaluation during training: loss per task, and greedy samples written to the log."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from absl import logging

from simvlm_jax import metrics as metrics_lib
from simvlm_jax.data import loader
from simvlm_jax.inference import decode_tokens


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

    def evaluate(self, trainer, step: int) -> dict[str, dict[str, float]]:
        results = {}
        for name, dataset in self._datasets.items():
            batches = list(itertools.islice(loader.numpy_batches(iter(dataset)), self.eval_steps))
            if not batches:
                logging.warning("Eval task %s gave no full batch; skipped.", name)
                continue
            summary = metrics_lib.compute_metrics(metrics_lib.merge_metrics([trainer.eval_step(b) for b in batches]))
            writer = self.writers.eval(name)
            writer.write_scalars(step, summary)
            samples = self._samples(trainer, batches[0])
            if samples:
                writer.write_texts(step, {"samples": "\n\n".join(samples)})
            line = f"eval {name} @ {step}: loss {summary['loss']:.4f} accuracy {summary['accuracy']:.3f}"
            print(line + "".join("\n    " + s for s in samples), flush=True)
            logging.info(line)
            results[name] = summary
        return results

    def _samples(self, trainer, batch) -> list[str]:
        """Greedy decodes of the first few image examples: 'prefix | target -> prediction'."""
        with_image = np.flatnonzero(np.reshape(batch["encoder_image_mask"], (len(batch["encoder_image_mask"]), -1)).max(-1) > 0)
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
