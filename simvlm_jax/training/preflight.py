"""Every check of a training run that needs no data and no compiled step (`preflight`), and what to restore.

`train()` calls `preflight` first; each failure raises `ConfigError` naming the problem and the fix, and
nothing is written before all of them pass (MODEL_DIR is not even created). See docs/reliability.md.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import jax
import numpy as np
from absl import logging

from simvlm_jax.data import bad_records, loader
from simvlm_jax.data.feature_converter import model_input_specs
from simvlm_jax.model import model_config
from simvlm_jax.training import checkpoint_integrity, checkpoints, config_checks, memory_estimate
from simvlm_jax.training.config_checks import ConfigError
from simvlm_jax.training.trainer import TrainStateLayout


def preflight(
    model,
    dataset_cfg,
    partitioner,
    model_dir: str,
    save_cfg=None,
    restore_cfg=None,
    bad_record_policy: str = "skip",
    check_memory: bool = True,
    corrupt_checkpoint_policy: str = "fallback",
    allow_vocabulary_size_mismatch: bool = False,
) -> tuple[TrainStateLayout, Restore]:
    """Every check that needs no data and no compiled step. Returns the train state's layout (shapes only,
    nothing allocated) and what to restore (`Restore`). Raises ConfigError naming the problem and the fix;
    writes nothing."""
    try:
        if bad_record_policy not in bad_records.POLICIES:
            raise ConfigError(f"bad_record_policy must be one of {bad_records.POLICIES}, got {bad_record_policy!r}.")
        if corrupt_checkpoint_policy not in CORRUPT_CHECKPOINT_POLICIES:
            raise ConfigError(
                f"corrupt_checkpoint_policy must be one of {CORRUPT_CHECKPOINT_POLICIES}, "
                f"got {corrupt_checkpoint_policy!r}."
            )
        if not isinstance(dataset_cfg.batch_size, int) or dataset_cfg.batch_size < 1:
            raise ConfigError(f"BATCH_SIZE must be a positive integer, got {dataset_cfg.batch_size!r}.")
        config_checks.check_supported_settings(dataset=dataset_cfg, save=save_cfg, restore=restore_cfg)
        config_checks.check_model_dir(model_dir)
        loader.import_task_module(dataset_cfg.module)
        config_checks.check_training_config(model, dataset_cfg, allow_vocabulary_size_mismatch)
        layout_info = partitioner.get_data_layout(dataset_cfg.batch_size)
        restore = _checkpoint_to_restore(model_dir, restore_cfg, save_cfg, corrupt_checkpoint_policy)
        shapes, types = model_input_specs(dataset_cfg.task_feature_lengths, dataset_cfg.batch_size)
        layout = TrainStateLayout(model, partitioner, shapes, types)
        if restore.path is not None and restore.mapping is None:  # a mapping checks each array it reads
            config_checks.check_checkpoint_shapes(
                restore.path,
                _flat_shapes(layout.shapes.params),
                model_config.differences(checkpoints.model_dir_of(restore.path), model),
            )
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(str(error)) from error
    if save_cfg is not None:
        # Room for the checkpoints kept plus the one being written, less those already there.
        kept = save_cfg.keep or 1
        more = max(1, kept + 1 - len(checkpoints.all_steps(model_dir)))
        config_checks.check_model_dir(
            model_dir,
            needed_bytes=more * config_checks.state_bytes(layout.shapes),
            what=f"{more} more checkpoint(s) (CHECKPOINTS_TO_KEEP={save_cfg.keep}, plus the one being written) need",
        )
    if check_memory:
        _check_memory(model, dataset_cfg, partitioner, layout, layout_info.num_shards)
    return layout, restore


def check_counts(**counts: Optional[int]) -> None:
    """Step counts and periods are positive integers (None where optional)."""
    macros = {
        "total_steps": "TRAIN_STEPS",
        "eval_period": "EVAL_PERIOD",
        "eval_steps": "EVAL_STEPS",
        "save_period": "CHECKPOINT_PERIOD",
        "checkpoints_to_keep": "CHECKPOINTS_TO_KEEP",
        "stats_period": "train.stats_period",
        "relative_steps": "train.relative_steps",
        "max_bad_records_in_a_row": "train.max_bad_records_in_a_row",
    }
    for name, value in counts.items():
        if value is None and name != "total_steps":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            extra = " (None keeps every checkpoint)" if name == "checkpoints_to_keep" else ""
            raise ConfigError(f"{macros[name]} must be a positive integer{extra}, got {value!r}.")


def _check_memory(model, dataset_cfg, partitioner, layout: TrainStateLayout, num_hosts: int) -> None:
    """The memory estimate of one step (training/memory_estimate.py) against this machine's memory."""
    devices = jax.local_devices()
    abstract = layout.abstract_state()

    def per_device_bytes(tree) -> int:
        return sum(
            int(np.prod(s.sharding.shard_shape(s.shape))) * np.dtype(s.dtype).itemsize for s in jax.tree.leaves(tree)
        )

    per_device_batch = max(1, dataset_cfg.batch_size // partitioner.data_parallel_size)
    estimate = memory_estimate.estimate(
        model.module.config,
        dataset_cfg.task_feature_lengths,
        per_device_batch,
        per_device_bytes(abstract),
        per_device_bytes(abstract.params),
        host_batch=dataset_cfg.batch_size // num_hosts,
        shuffle=bool(dataset_cfg.shuffle),
    )
    limit = None
    if devices[0].platform != "cpu":
        stats = devices[0].memory_stats() or {}
        limit = stats.get("bytes_limit")
    memory_estimate.check(estimate, memory_estimate.host_memory_bytes(), len(devices), limit)
    logging.info("Memory estimate: %s", estimate.describe())


def check_dataset_matches(dataset, expected_shapes, num_hosts: int) -> None:
    """The pipeline's batches have the shapes the train state was laid out for (per host)."""
    for name, spec in dataset.element_spec.items():
        want = expected_shapes.get(name)
        got = (spec.shape[0] * num_hosts, *spec.shape[1:])
        if want is not None and tuple(got) != tuple(want):
            raise ConfigError(
                f"The input pipeline gives {name} of shape {tuple(got)} but the model expects "
                f"{tuple(want)}: check the task's preprocessors and TASK_FEATURE_LENGTHS."
            )


CORRUPT_CHECKPOINT_POLICIES = ("fallback", "fail")


class Restore(NamedTuple):
    """What a run starts from: `path` (a checkpoint dir, None for a fresh start), whether the data iterator is
    restored with it, and this run's newer checkpoints that failed verification ([(path, problem)]), to be
    moved aside before training."""

    path: Optional[str]
    with_dataset: bool
    corrupt: tuple = ()
    # The RestoreCheckpointConfig whose assignment_map / strict / fallback_to_scratch select what is read
    # (training/partial_restore.py); None restores the whole state.
    mapping: object = None


def _checkpoint_to_restore(model_dir, restore_cfg, save_cfg, corrupt_policy: str = "fallback") -> Restore:
    """The newest checkpoint of this run that verifies, else the configured restore path, else a fresh start.
    A corrupt newest checkpoint of this run is a ConfigError under `corrupt_policy='fail'`. A configured path
    that does not exist is a ConfigError unless `fallback_to_scratch`; one that fails verification always is."""
    own, corrupt = checkpoints.newest_verified(model_dir) if os.path.isdir(model_dir) else (None, [])
    if corrupt and corrupt_policy == "fail":
        path, problem = corrupt[0]
        raise ConfigError(
            f"{path} is corrupt: {problem}. Move it aside to resume from the checkpoint before it, or set "
            "--gin.train.corrupt_checkpoint_policy=\"'fallback'\" to do that automatically."
        )
    if own is not None:
        return Restore(
            checkpoints.checkpoint_dir(model_dir, own), bool(save_cfg and save_cfg.save_dataset), tuple(corrupt)
        )
    if corrupt:
        logging.warning("No complete checkpoint of this run verifies; starting as a new run.")
    if restore_cfg is None or not restore_cfg.path:
        return Restore(None, False, tuple(corrupt))
    configured = restore_cfg.path if isinstance(restore_cfg.path, str) else restore_cfg.path[0]
    if restore_cfg.mode == "specific" and not checkpoints.is_checkpoint_dir_name(configured):
        raise ConfigError(
            f"RestoreCheckpointConfig.mode='specific' restores one checkpoint_<step> folder, but the "
            f"path {configured!r} is not one: name the folder, or set mode='latest' for the newest "
            "checkpoint of a model dir."
        )
    try:
        path = checkpoints.resolve_checkpoint_path(configured)
        checkpoint_integrity.verify(path)
        partial = restore_cfg.assignment_map or not restore_cfg.strict or restore_cfg.fallback_to_scratch
        return Restore(path, bool(restore_cfg.restore_dataset), tuple(corrupt), restore_cfg if partial else None)
    except FileNotFoundError as error:
        if not restore_cfg.fallback_to_scratch:
            raise ConfigError(
                f"{error} Set --gin.INITIAL_CHECKPOINT_PATH (or utils.RestoreCheckpointConfig.path) to "
                "a checkpoint_<step> folder or a model dir that holds one."
            ) from None
        logging.warning("No checkpoint at %s; starting from scratch (fallback_to_scratch).", configured)
        return Restore(None, False, tuple(corrupt))


def _flat_shapes(params) -> dict[str, tuple]:
    import flax

    return {name: tuple(leaf.shape) for name, leaf in flax.traverse_util.flatten_dict(params, sep="/").items()}
