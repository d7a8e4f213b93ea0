"""Numerical faults: a train step whose loss, gradients or updated parameters are not finite is not applied.

On the device (inside the jitted step, no host sync): `keep_if_finite` selects the old train state when
the step is not finite, and the step's metrics carry `nonfinite_steps` (1 or 0, summed over steps).

On the host, at the loop's sync points, `NumericsMonitor.observe` applies the run's `nan_policy`:

    'skip_step'  (default) the step was skipped; it is counted (`nonfinite_steps` in the progress line
                 and TensorBoard) and training goes on with the next batch
    'stop'       raise `NonFiniteError`: the run ends without saving, so the newest checkpoint holds the
                 last good state

and logs a warning when the interval's mean loss exceeds `spike_factor` x its running mean (a loss spike).

Divergence stops the run (`DivergenceError`, whatever the nan_policy; `divergence_factor=None` turns it
off): an interval's mean loss above `divergence_factor` x the median of the earlier intervals' losses (before
the first one: x ln(vocabulary size), the loss of a uniform guess), or a parameter norm after the updates
above `divergence_factor` x the norm the run started from. The check runs at every sync point, and every
save is one, so a diverged state is never saved: the newest checkpoint holds the last good state.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from absl import logging

NAN_POLICIES = ("skip_step", "stop")


class NonFiniteError(FloatingPointError):
    """A step produced NaN/Inf under nan_policy='stop'."""


class DivergenceError(FloatingPointError):
    """The loss or the parameters grew past `divergence_factor` x their reference: the run has diverged."""


def is_finite(*scalars: jax.Array) -> jax.Array:
    """bool [] — all of the given scalars are finite."""
    return jnp.all(jnp.stack([jnp.isfinite(jnp.asarray(s, jnp.float32)) for s in scalars]))


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
    """`new` where `finite` (bool []) holds, else `old`, leaf by leaf (same tree structure)."""
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def check_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise ValueError(
            f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}: set "
            "--gin.train.nan_policy='skip_step' (or 'stop')."
        )


class NumericsMonitor:
    """Host-side bookkeeping of non-finite steps and loss spikes, fed once per sync point."""

    def __init__(
        self,
        nan_policy: str = "skip_step",
        spike_factor: float = 3.0,
        smoothing: float = 0.9,
        divergence_factor: Optional[float] = 10.0,
        reference_loss: Optional[float] = None,
        initial_param_norm: Optional[float] = None,
    ):
        check_policy(nan_policy)
        if divergence_factor is not None and not divergence_factor > 1:
            raise ValueError(
                f"divergence_factor must be above 1 (or None: no check), got {divergence_factor!r}: set "
                "--gin.train.divergence_factor=10."
            )
        self.nan_policy = nan_policy
        self.spike_factor = spike_factor
        self.smoothing = smoothing
        self.divergence_factor = divergence_factor
        self.reference_loss = reference_loss  # before any interval: e.g. ln(vocabulary size)
        self.initial_param_norm = initial_param_norm
        self.total_nonfinite = 0
        self._running_loss: Optional[float] = None
        self._losses: list[float] = []  # every finite interval loss so far (their median is the reference)

    def _check_divergence(self, step: int, loss: Optional[float], param_norm: Optional[float]) -> None:
        factor = self.divergence_factor
        if factor is None:
            return
        found = None
        if loss is not None and math.isfinite(loss):
            reference = statistics.median(self._losses) if self._losses else self.reference_loss
            if reference is not None and reference > 0 and loss > factor * reference:
                what = "the median of the earlier intervals" if self._losses else "a uniform guess's"
                found = f"the loss {loss:.4g} is more than {factor:g} x {what} {reference:.4g}"
        if found is None and param_norm is not None and self.initial_param_norm:
            if not math.isfinite(param_norm) or param_norm > factor * self.initial_param_norm:
                found = (
                    f"the parameter norm {param_norm:.4g} is more than {factor:g} x its starting value "
                    f"{self.initial_param_norm:.4g}"
                )
        if found:
            raise DivergenceError(
                f"Training diverged at step {step}: {found}. Stopping before anything more is saved: the newest "
                "checkpoint holds the last state that passed this check. Lower PEAK_LEARNING_RATE (or check the "
                "data), then rerun; --gin.train.divergence_factor=None turns the check off."
            )

    def observe(self, step: int, summary: Mapping[str, float]) -> dict[str, float]:
        """Checks one interval's summary; returns extra scalars to log. Raises NonFiniteError ('stop')."""
        skipped = int(round(summary.get("nonfinite_steps", 0.0)))
        if skipped:
            self.total_nonfinite += skipped
            message = (
                f"{skipped} step(s) up to step {step} had a non-finite loss, gradient or update "
                f"(NaN/Inf); {self.total_nonfinite} so far"
            )
            if self.nan_policy == "stop":
                raise NonFiniteError(
                    f"{message}. Stopping (nan_policy='stop'); nothing was saved after the fault, so the newest "
                    "checkpoint holds the last good state. Lower the learning rate or check the data, then rerun; "
                    "or set --gin.train.nan_policy=\"'skip_step'\" to skip such steps."
                )
            logging.warning("%s; those updates were skipped (nan_policy='skip_step').", message)
            print(f"warning: {message}; their updates were skipped.", flush=True)
        loss = summary.get("loss")
        self._check_divergence(step, loss, summary.get("param_norm"))
        extra = {"numerics/nonfinite_steps_total": float(self.total_nonfinite)}
        if loss is None or not math.isfinite(loss):
            return extra
        self._losses.append(loss)
        if self._running_loss is not None and loss > self.spike_factor * self._running_loss:
            logging.warning(
                "Loss spike at step %d: %.4g is more than %.1fx the running mean %.4g.",
                step,
                loss,
                self.spike_factor,
                self._running_loss,
            )
            print(
                f"warning: loss spike at step {step}: {loss:.4g} > {self.spike_factor:g} x running mean "
                f"{self._running_loss:.4g}",
                flush=True,
            )
            extra["numerics/loss_spike"] = 1.0
        self._running_loss = (
            loss if self._running_loss is None else (self.smoothing * self._running_loss + (1 - self.smoothing) * loss)
        )
        return extra
