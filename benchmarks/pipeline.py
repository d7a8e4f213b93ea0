"""Throughput of the real input pipeline alone: the embedded SeqIO mixture, batched as in training
(gin/tiny_cpu.gin: 32 prefix and 32 target tokens, 64x64 images), read to numpy."""

from __future__ import annotations

import time

from simvlm_jax.data import loader
from simvlm_jax.training.run_config import DatasetConfig


def examples_per_s(batch_size: int, num_batches: int = 30) -> float:
    """Examples per second of `num_batches` batches, after the first batch (startup) is read."""
    cfg = DatasetConfig(
        mixture_or_task_name="embedded_prefixlm_mix",
        task_feature_lengths={"inputs": 32, "targets": 32, "image": 64},
        split="train",
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        module="simvlm_jax.tasks",
    )
    batches = loader.numpy_batches(iter(loader.get_dataset(cfg)))
    next(batches)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(batches)
    return num_batches * batch_size / (time.perf_counter() - start)
