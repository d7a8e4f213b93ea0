"""The optimizer records T5X's gin files use with optax (`optimizers.chain`, `OptaxWrapper`).

Under real T5X, `simvlm_jax.t5x_compat.optimizers` is T5X's own module; under our trainer it is this
one, so `OPTIMIZER = @optimizers.chain()` with `optimizers.chain.transformations = [...]` means the same
optax transformation in both.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
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
    inner = getattr(optimizer_def, "optax_optimizer", None)  # ours, or T5X's own t5x.optimizers.OptaxWrapper
    if isinstance(inner, optax.GradientTransformation):
        return inner
    if isinstance(optimizer_def, optax.GradientTransformation):
        return optimizer_def
    raise TypeError(
        f"optimizer_def must be an optax GradientTransformation or optimizers.chain(...), got "
        f"{type(optimizer_def).__name__}; T5X's Adafactor is not supported by the simvlm-jax trainer."
    )


# Parameter names that weight decay applies to: matrices and convolution kernels. Norm scales, biases and the
# relative-position tables (`rel_embedding`) are never decayed; embedding tables (`embedding`: tokens, text
# and image positions, image index) only when asked.
_DECAYED = ("kernel",)
_EMBEDDINGS = ("embedding",)


def weight_decay_mask(decay_embeddings: bool = False):
    """A mask function for `optax.adamw(mask=...)` (as T5X and big_vision decay): params -> a tree of bools,
    True for the leaves to decay: every `kernel`, and every `embedding` table if `decay_embeddings`."""
    decayed = _DECAYED + (_EMBEDDINGS if decay_embeddings else ())

    def mask(params):
        # tree_map keeps the container types (T5X passes a FrozenDict, our trainer a dict).
        return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) in decayed, params)

    return mask


def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))
