"""T5X's run-configuration records (`t5x.utils` names and fields), for our trainer and the gin files.

Gin files import this module as `utils` through `simvlm_jax.t5x_compat`, so `utils.DatasetConfig`,
`utils.CheckpointConfig`, ... mean these classes under our trainer and T5X's own under `t5x.train`.
Field names and defaults follow T5X. Fields whose T5X meaning this trainer does not implement keep their
T5X default; any other value is refused before training with a message naming the field
(`config_checks.check_supported_settings`), never silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence, Union

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
    pack: bool = False  # SimVLM examples are never packed (see SimVLMFeatureConverter): False only
    use_custom_packing_ops: bool = False  # packing ops: False only
    module: Optional[str] = None  # a module to import that registers the task
    use_memory_cache: bool = True  # SeqIO caches small datasets in memory: True only
    trim_output_features: bool = True


@dataclasses.dataclass
class SaveCheckpointConfig:
    period: Optional[int] = None  # save every `period` steps (and always at the end)
    checkpoint_steps: Optional[Sequence[int]] = None  # extra steps to save at
    keep: Optional[int] = None  # keep the newest `keep` checkpoints (None: all)
    keep_dataset_checkpoints: Optional[int] = None  # the iterator is kept with its checkpoint: None only
    dtype: str = "float32"  # checkpoints hold float32 parameters (exact resume): float32 only
    save_dataset: bool = False  # also save the tf.data iterator (exact data resume)


@dataclasses.dataclass
class RestoreCheckpointConfig:
    path: Union[str, Sequence[str]]  # 'specific': a checkpoint_<step> dir; 'latest': a model dir (or one)
    mode: str = "latest"  # 'latest' or 'specific'
    assignment_map: Optional[Sequence[tuple[str, Optional[str]]]] = None  # None only
    strict: bool = True  # every parameter must be in the checkpoint: True only
    fallback_to_scratch: bool = False  # a missing path starts from scratch instead of failing
    dtype: Optional[str] = None  # None or 'float32' only
    restore_dataset: bool = False  # also restore the tf.data iterator saved with the checkpoint


@dataclasses.dataclass
class CheckpointConfig:
    save: Optional[SaveCheckpointConfig] = None
    restore: Optional[RestoreCheckpointConfig] = None
