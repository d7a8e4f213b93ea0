"""The optimizer records T5X's gin files use with optax (`optimizers.chain`, `OptaxWrapper`).

Under real T5X, `simvlm_jax.t5x_compat.optimizers` is T5X's own module; under our trainer it is this
one, so `OPTIMIZER = @optimizers.chain()` with `optimizers.chain.transformations = [...]` means the same
optax transformation in both.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import optax


@dataclasses.dataclass(frozen=True)
class OptaxWrapper:
    """Holds an optax GradientTransformation (T5X wraps optax optimizers the same way)."""

    optax_optimizer: optax.GradientTransformation


def chain(transformations: Sequence[optax.GradientTransformation]) -> OptaxWrapper:
    """optax.chain(*transformations), wrapped; e.g. [clip_by_global_norm(1.0), adamw(schedule)]."""
    return OptaxWrapper(optax.chain(*transformations))


def as_optax(optimizer_def) -> optax.GradientTransformation:
    """The optax transformation inside a model's `optimizer_def` (an OptaxWrapper or optax itself)."""
    if isinstance(optimizer_def, OptaxWrapper):
        return optimizer_def.optax_optimizer
    if isinstance(optimizer_def, optax.GradientTransformation):
        return optimizer_def
    raise TypeError(
        f"optimizer_def must be an optax GradientTransformation or optimizers.chain(...), got "
        f"{type(optimizer_def).__name__}; T5X's Adafactor is not supported by the simvlm-jax trainer."
    )
