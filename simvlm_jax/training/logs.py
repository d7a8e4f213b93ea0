"""What a run tells its user: progress lines (step, loss, speed, ETA) and TensorBoard writers."""

from __future__ import annotations

import os
import sys
import time
from typing import Mapping, Optional, TextIO

import jax
from absl import logging
from clu import metric_writers


class SummaryWriters:
    """clu metric writers under T5X's folders: model_dir/train and model_dir/training_eval/<task>."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._only_log = jax.process_index() > 0
        self.train = metric_writers.create_default_writer(
            os.path.join(model_dir, "train"), just_logging=self._only_log, asynchronous=False
        )
        self._eval: dict[str, metric_writers.MetricWriter] = {}

    def eval(self, task_name: str) -> metric_writers.MetricWriter:
        if task_name not in self._eval:
            self._eval[task_name] = metric_writers.create_default_writer(
                os.path.join(self.model_dir, "training_eval", task_name),
                just_logging=self._only_log,
                asynchronous=False,
            )
        return self._eval[task_name]

    def flush(self) -> None:
        for writer in [self.train, *self._eval.values()]:
            writer.flush()


class ProgressLog:
    """Turns step counts and wall time into steps/s, examples/s and an ETA, and logs a line."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self._last_step = start_step
        self._last_time = time.time()
        self._first = True  # the first interval includes compilation: no ETA from it

    def update(self, step: int, summary: Mapping[str, float]) -> dict[str, float]:
        now = time.time()
        steps = step - self._last_step
        seconds = max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        steps_per_s = steps / seconds
        timing = {
            "timing/steps_per_second": steps_per_s,
            "timing/examples_per_second": steps_per_s * self.batch_size,
        }
        if "num_target_tokens" in summary:
            timing["timing/target_tokens_per_second"] = summary["num_target_tokens"] / seconds
        eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 and not self._first else float("inf")
        self._first = False
        line = (
            f"step {step}/{self.total_steps}  loss {summary.get('loss', float('nan')):.4f}  "
            f"accuracy {summary.get('accuracy', float('nan')):.3f}  "
            f"lr {summary.get('learning_rate', float('nan')):.2e}  |  {steps_per_s:.2f} steps/s  "
            f"{steps_per_s * self.batch_size:.1f} examples/s  ETA {_format_seconds(eta)}"
        )
        logging.info(line)
        if jax.process_index() == 0:  # one progress line per run, not per host
            print(line, flush=True)
        return timing


class CountProgress:
    """A progress line for work counted in examples (decoding for eval, infer, caption): done/total, rate
    and ETA, printed at most every `every_s` seconds and once at the end (`finish`)."""

    def __init__(self, what: str, total: Optional[int] = None, every_s: float = 10.0, out: Optional[TextIO] = None):
        self.what, self.total, self.every_s = what, total, every_s
        self.out = out
        self.done = 0
        self._start = self._last_print = time.time()

    def advance(self, count: int) -> None:
        self.done += count
        if time.time() - self._last_print >= self.every_s:
            self._print()

    def finish(self) -> None:
        self._print()

    def line(self) -> str:
        seconds = max(time.time() - self._start, 1e-9)
        rate = self.done / seconds
        of_total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.done < self.total:
            eta = f"  ETA {_format_seconds((self.total - self.done) / rate)}"
        return f"{self.what}: {self.done}{of_total} examples  {rate:.1f} examples/s{eta}"

    def _print(self) -> None:
        self._last_print = time.time()
        if jax.process_index() == 0:
            print(self.line(), file=self.out or sys.stdout, flush=True)


def _format_seconds(seconds: float) -> str:
    if seconds == float("inf"):
        return "? (compiling)"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
