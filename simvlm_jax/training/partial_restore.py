"""Restoring part of a checkpoint into a new train state, with T5X's `RestoreCheckpointConfig` semantics.

The keys are the '/'-joined paths of T5X's train-state tree: `target/<parameter path>` for the parameters,
`state/step` and `state/param_states/<...>` for the optimizer (checkpoints.to_t5x_tree). For every key of
the new state, in order:

- the first `(pattern, replacement)` of `assignment_map` whose pattern matches the whole key decides:
  replacement None keeps the freshly initialised value; otherwise the checkpoint key is
  `match.expand(replacement)` (regex groups allowed, as T5X's `state_utils.apply_assignment_map`);
- with no matching rule the checkpoint key is the key itself;
- a checkpoint key the checkpoint lacks is initialised when `fallback_to_scratch`, or, for optimizer state
  only, when `strict=False`; otherwise the restore fails naming the key.

The usual case is fine-tuning from parameters only:
`utils.RestoreCheckpointConfig.assignment_map = ((r'state/.*', None),)` restores `target/...` and starts the
step and the optimizer state afresh.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence

import jax
import numpy as np
from flax import traverse_util

from simvlm_jax.training import checkpoints
from simvlm_jax.training.config_checks import ConfigError


def source_key(key: str, assignment_map: Sequence[tuple[str, Optional[str]]]) -> Optional[str]:
    """The checkpoint key that `key` of the new state is read from, or None to keep its initial value."""
    for pattern, replacement in assignment_map or ():
        match = re.fullmatch(pattern, key)
        if match:
            return None if replacement is None else match.expand(replacement)
    return key


def restore_partially(
    path: str,
    abstract_tree: dict,
    initial_tree: dict,
    assignment_map: Sequence[tuple[str, Optional[str]]] = (),
    strict: bool = True,
    fallback_to_scratch: bool = False,
) -> tuple[dict, dict]:
    """The new state's checkpoint tree: each leaf from checkpoint `path` (by `source_key`) or from
    `initial_tree`, placed with the shardings of `abstract_tree`. Returns (tree, {"restored": n,
    "initialised": [keys]})."""
    stored = checkpoints.read_state_as_numpy(os.path.join(os.path.abspath(path), "state"))
    flat_stored = traverse_util.flatten_dict(stored, sep="/")
    flat_abstract = traverse_util.flatten_dict(abstract_tree, sep="/")
    flat_initial = traverse_util.flatten_dict(initial_tree, sep="/")
    out, initialised = {}, []
    for key, spec in flat_abstract.items():
        source = source_key(key, assignment_map)
        if source is not None and source not in flat_stored:
            if not (fallback_to_scratch or (not strict and key.startswith("state/"))):
                raise ConfigError(
                    f"{key} is read from {source!r}, which checkpoint {path} does not have. Map it in "
                    "RestoreCheckpointConfig.assignment_map (None keeps its initial value), or set "
                    "fallback_to_scratch=True to initialise whatever the checkpoint lacks."
                )
            source = None
        if source is None:
            out[key] = flat_initial[key]
            initialised.append(key)
            continue
        value = np.asarray(flat_stored[source])
        if tuple(value.shape) != tuple(spec.shape):
            raise ConfigError(
                f"{key} has shape {tuple(spec.shape)} but the checkpoint's {source} has {tuple(value.shape)}."
            )
        out[key] = jax.device_put(value.astype(spec.dtype), spec.sharding)
    restored = len(flat_abstract) - len(initialised)
    return traverse_util.unflatten_dict(out, sep="/"), {"restored": restored, "initialised": initialised}


def describe(summary: dict[str, Any]) -> str:
    initialised = summary["initialised"]
    groups = sorted({"/".join(k.split("/")[:3]) for k in initialised})
    shown = ", ".join(groups[:6]) + (", ..." if len(groups) > 6 else "")
    return f"{summary['restored']} arrays restored, {len(initialised)} initialised afresh" + (
        f" ({shown})" if initialised else ""
    )
