"""T5X's run-configuration records (`t5x.utils` names and fields), for our trainer and the gin files.

Gin files import this module as `utils` through `simvlm_jax.t5x_compat`, so `utils.DatasetConfig`,
`utils.CheckpointConfig`, ... mean these classes under our trainer and T5X's own under `t5x.train`.
Field names and defaults follow T5X; fields T5X has that we do not use are accepted and documented.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Optional, Sequence, Union

import seqio


@dataclasses.dataclass
class DatasetConfig:
    """Which SeqIO task or mixture to read, and how to batch it."""

    mixture_or_task_name: Union[str, seqio.Task, seqio.Mixture]
    task_feature_lengths: Mapping[str, int]  # {'inputs': L_enc, 'targets': L_dec, 'image': resolution}
    split: str
    batch_size: int  # global batch size, over all hosts
    shuffle: bool
    seed: Optional[int]
    use_cached: bool = False
    pack: bool = False  # SimVLM examples are never packed (see SimVLMFeatureConverter)
    use_custom_packing_ops: bool = False
    module: Optional[str] = None  # a module to import that registers the task
    use_memory_cache: bool = True
    trim_output_features: bool = True


@dataclasses.dataclass
class SaveCheckpointConfig:
    period: Optional[int] = None  # save every `period` steps (and always at the end)
    checkpoint_steps: Optional[Sequence[int]] = None  # extra steps to save at
    keep: Optional[int] = None  # keep the newest `keep` checkpoints (None: all)
    keep_dataset_checkpoints: Optional[int] = None  # accepted for T5X compatibility
    dtype: str = "float32"
    save_dataset: bool = False  # also save the tf.data iterator (exact data resume)

    def __post_init__(self):
        if self.dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"SaveCheckpointConfig.dtype must be float32 or bfloat16, got {self.dtype!r}.")


@dataclasses.dataclass
class RestoreCheckpointConfig:
    path: Union[str, Sequence[str]]  # a checkpoint_<step> dir, or a model dir (mode='latest')
    mode: str = "latest"  # 'latest' or 'specific'
    assignment_map: Optional[Sequence[tuple[str, Optional[str]]]] = None  # accepted; unsupported
    strict: bool = True
    fallback_to_scratch: bool = False
    dtype: Optional[str] = None
    restore_dataset: bool = False

    def __post_init__(self):
        if self.mode not in ("latest", "specific"):
            raise ValueError(f"RestoreCheckpointConfig.mode must be 'latest' or 'specific', got {self.mode!r}.")
        if self.assignment_map:
            raise ValueError("RestoreCheckpointConfig.assignment_map is not supported by the simvlm-jax trainer.")


@dataclasses.dataclass
class CheckpointConfig:
    save: Optional[SaveCheckpointConfig] = None
    restore: Optional[RestoreCheckpointConfig] = None


def create_learning_rate_scheduler(
    factors: str = "constant * linear_warmup * rsqrt_decay",
    base_learning_rate: float = 0.5,
    warmup_steps: int = 1000,
    decay_factor: float = 0.5,
    steps_per_decay: int = 20000,
    steps_per_cycle: int = 100000,
    step_offset: int = 0,
    min_learning_rate: float = 1e-8,
) -> Callable[[int], float]:
    """T5X's product-of-factors learning-rate schedule, with the same factor names and formulas.

    Factors: constant, linear_warmup, linear_decay, rsqrt_decay, rsqrt_normalized_decay, decay_every,
    cosine_decay. For SimVLM's warm-up + linear decay prefer `schedules.warmup_linear_decay`.
    """
    names = [name.strip() for name in factors.split("*")]
    import jax.numpy as jnp  # local: this module is otherwise framework-free

    def schedule(step):
        step = jnp.maximum(0, step - step_offset).astype(jnp.float32)
        value = jnp.asarray(1.0, jnp.float32)
        for name in names:
            if name == "constant":
                value *= base_learning_rate
            elif name == "linear_warmup":
                value *= jnp.minimum(1.0, step / warmup_steps)
            elif name == "linear_decay":
                value *= base_learning_rate * jnp.minimum(step / warmup_steps, 1.0 + decay_factor * (warmup_steps - step))
            elif name == "rsqrt_decay":
                value /= jnp.sqrt(jnp.maximum(step, warmup_steps))
            elif name == "rsqrt_normalized_decay":
                value *= math.sqrt(warmup_steps) / jnp.sqrt(jnp.maximum(step, warmup_steps))
            elif name == "decay_every":
                value *= decay_factor ** (step // steps_per_decay)
            elif name == "cosine_decay":
                progress = jnp.maximum(0.0, (step - warmup_steps) / steps_per_cycle)
                value *= jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
            else:
                raise ValueError(f"Unknown learning-rate factor {name!r}.")
        return jnp.maximum(value, min_learning_rate)

    return schedule
