"""From a DatasetConfig to batches of model features (tf.data, one shard per host)."""

from __future__ import annotations

import importlib
from typing import Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

from simvlm_jax.data import bad_records
from simvlm_jax.data.feature_converter import SimVLMFeatureConverter


def import_task_module(module: Optional[str]) -> None:
    """Imports the module that registers the task (e.g. `simvlm_jax.tasks` or a user's own). `python -m`
    puts the working directory first on sys.path, so a `my_tasks.py` there is found as `my_tasks`."""
    if not module:
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or not module.startswith(error.name):
            raise  # the module exists and one of its own imports failed: that error is the one to see
        raise ModuleNotFoundError(
            f"MIXTURE_OR_TASK_MODULE={module!r} cannot be imported (no module named {error.name!r}): run the "
            "command from the folder that holds it (e.g. my_tasks.py for 'my_tasks'), or add that folder "
            "to PYTHONPATH.",
            name=error.name,
        ) from None


def get_dataset(
    cfg,
    shard_id: int = 0,
    num_shards: int = 1,
    feature_converter_cls=SimVLMFeatureConverter,
    num_epochs: Optional[int] = None,
    task_name: Optional[str] = None,
) -> tf.data.Dataset:
    """Batches of model features for this host: dict of [per_host_batch, ...] tensors.

    Args:
      cfg: a DatasetConfig (ours or T5X's). Its batch_size is global; each of the `num_shards` hosts
        reads its own shard and gets batch_size / num_shards examples per batch.
      task_name: read this task instead of cfg.mixture_or_task_name (per-task training evaluation).
    """
    import_task_module(cfg.module)
    if cfg.batch_size % num_shards:
        raise ValueError(f"Batch size {cfg.batch_size} is not divisible by the number of hosts {num_shards}.")
    dataset = seqio.get_dataset(
        task_name or cfg.mixture_or_task_name,
        task_feature_lengths=cfg.task_feature_lengths,
        dataset_split=cfg.split,
        shuffle=cfg.shuffle,
        num_epochs=num_epochs,
        feature_converter=feature_converter_cls(pack=cfg.pack),
        shard_info=seqio.ShardInfo(index=shard_id, num_shards=num_shards),
        use_cached=cfg.use_cached,
        seed=cfg.seed,
        trim_output_features=cfg.trim_output_features,
    )
    # Exactly T5X's pipeline (t5x.utils.get_dataset: batch, no trailing prefetch): a tf.data iterator
    # checkpoint restores only into a pipeline of the same structure, so either trainer resumes the other's
    # data iterator. Batches are read ahead by the train loop's reader thread (training/prefetch.py) instead.
    return dataset.batch(cfg.batch_size // num_shards, drop_remainder=True)


def task_names(mixture_or_task_name: str, split: str) -> list[str]:
    """The tasks of a mixture (or the task itself) that have `split`: training eval runs per task."""
    provider = seqio.get_mixture_or_task(mixture_or_task_name)
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    return [task.name for task in tasks if split in task.splits]


def numpy_batches(iterator: Iterator[Mapping[str, tf.Tensor]]) -> Iterator[dict[str, np.ndarray]]:
    """Numpy views of a tf.data iterator's batches (the tf iterator itself stays checkpointable).

    A bad record under bad_record_policy='fail' surfaces as `bad_records.BadRecordError` with its message.
    """
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            marker = "BadRecordError: "
            if marker in error.message:
                message = error.message.split(marker, 1)[1].split("\n", 1)[0]
                raise bad_records.BadRecordError(message) from None
            raise
        yield {name: value.numpy() for name, value in batch.items()}
