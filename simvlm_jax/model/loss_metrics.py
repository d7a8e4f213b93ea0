"""Training metrics as clu `Metric`s (what `loss_fn` returns), and helpers to reduce them on the host.

T5X's contract: `loss_fn` returns `(loss, {name: clu.metrics.Metric})`; the trainer merges the metrics of
many steps and calls `.compute()` when it writes a summary.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

Metrics = Mapping[str, clu_metrics.Metric]


@flax.struct.dataclass
class Sum(clu_metrics.Metric):
    """A running sum (clu has averages but no plain sum): token and example counts."""

    total: jax.Array

    @classmethod
    def from_model_output(cls, values: jax.Array, **_) -> "Sum":
        return cls(total=jnp.sum(values))

    def merge(self, other: "Sum") -> "Sum":
        return type(self)(total=self.total + other.total)

    def compute(self) -> jax.Array:
        return self.total


def weighted_average(values: jax.Array, weights: jax.Array) -> clu_metrics.Average:
    """Average of `values` weighted by `weights` (same shape); an all-zero weight gives count 0."""
    weights = weights.astype(jnp.float32)
    return clu_metrics.Average(total=jnp.sum(values * weights), count=jnp.sum(weights))


def scalar_average(value: jax.Array) -> clu_metrics.Average:
    """A per-step scalar, averaged over the steps that are merged."""
    return clu_metrics.Average(total=jnp.asarray(value, jnp.float32), count=jnp.asarray(1.0, jnp.float32))


def merge_metrics(steps: Sequence[Metrics]) -> Metrics:
    """Merges the metric dicts of several steps (same keys) into one."""
    merged = dict(steps[0])
    for step in steps[1:]:
        for name, metric in step.items():
            merged[name] = merged[name].merge(metric)
    return merged


def compute_metrics(metrics: Metrics) -> dict[str, float]:
    """Fetches merged metrics from the devices and computes them to Python floats.

    An average over zero weight (e.g. text-only loss in a batch with no text-only example) is left out
    instead of being reported as NaN.
    """
    host = jax.device_get(metrics)
    out = {}
    for name, metric in host.items():
        if isinstance(metric, clu_metrics.Average) and float(np.asarray(metric.count)) == 0.0:
            continue
        out[name] = float(np.asarray(metric.compute()))
    return out
