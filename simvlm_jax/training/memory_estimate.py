"""How much memory a training run needs, estimated before anything is allocated, and the check on it.

The estimate has three parts, all per device except the input pipeline (which lives on the host):

- **train state**: parameters and optimizer state, exactly, from their shapes and shardings;
- **step**: the gradients (one more copy of the parameters) plus the activations the backward pass keeps,
  counted analytically per example from the network's sizes (below) times the per-device batch;
- **input pipeline** (host): the shuffle buffer of decoded float32 images (SeqIO's default buffer of
  1,000 examples per task) plus a few batches in flight.

Activations per example, in values of the compute dtype (T_e = image tokens + text prefix, T_d = decoder
length, D width, M MLP width, H heads, K head width, V vocabulary):
  encoder layer  T_e * (6D + 2M + 3HK) + 2 H T_e^2              (residuals, LayerNorms, MLP, q/k/v, scores+probs)
  decoder layer  T_d * (8D + 2M + 6HK) + 2 H T_d^2 + 2 H T_d T_e (adds cross-attention)
  stem           14 * width_s values per position per bottleneck block of stage s, plus the root's 3 tensors
  logits         3 T_d V                                        (logits, softmax, their gradient)
With a remat policy only one layer's activations are held at a time (plus each layer's input, T*D).
The estimate leaves out XLA's fusion temporaries and allocator slack, so it is a lower bound of the main
terms: it refuses only runs that cannot fit, such as an image size whose attention alone needs terabytes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional

import numpy as np

SHUFFLE_BUFFER_EXAMPLES = 1000  # seqio.Task's default shuffle buffer
BATCHES_IN_FLIGHT = 4  # tf.data prefetch + batch + device prefetch


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device (state, step) and on the host (input pipeline)."""

    state_bytes: int
    step_bytes: int
    pipeline_bytes: int

    @property
    def device_bytes(self) -> int:
        return self.state_bytes + self.step_bytes

    def describe(self) -> str:
        return (
            f"train state {_gib(self.state_bytes)} + gradients and activations {_gib(self.step_bytes)} per "
            f"device, input pipeline {_gib(self.pipeline_bytes)} on the host"
        )


def activation_values_per_example(config, lengths: Mapping[str, int]) -> int:
    """Values the backward pass keeps for one example (see the module docstring)."""
    image_size = int(lengths["image"])
    grid = image_size // config.stem_stride
    t_enc = grid * grid * config.max_images + int(lengths["inputs"])
    t_dec = int(lengths["targets"])
    d, m, h, k = config.emb_dim, config.mlp_dim, config.num_heads, config.head_dim
    encoder_layer = t_enc * (6 * d + 2 * m + 3 * h * k) + 2 * h * t_enc * t_enc
    decoder_layer = t_dec * (8 * d + 2 * m + 6 * h * k) + 2 * h * t_dec * t_dec + 2 * h * t_dec * t_enc
    if config.remat_policy == "none":
        layers = config.num_encoder_layers * encoder_layer + config.num_decoder_layers * decoder_layer
    else:
        layers = (
            max(encoder_layer, decoder_layer)
            + config.num_encoder_layers * t_enc * d
            + config.num_decoder_layers * t_dec * d
        )
    return layers + _stem_values(config, image_size) * config.max_images + 3 * t_dec * config.vocab_size


def _stem_values(config, image_size: int) -> int:
    if config.num_conv_blocks == 0:
        return 2 * image_size * image_size * config.num_channels
    side = image_size // 2  # the root 7x7/2 conv
    values = 3 * side * side * config.stem_width
    side //= 2  # the root max pool
    for stage in range(config.num_conv_blocks):
        if stage:
            side //= 2
        width = config.stem_width * 2**stage
        values += config.stem_blocks_per_stage[stage] * side * side * 14 * width
    return values


def estimate(
    config,
    lengths: Mapping[str, int],
    per_device_batch: int,
    state_bytes_per_device: int,
    param_bytes_per_device: int,
    host_batch: int,
    shuffle: bool = True,
) -> MemoryEstimate:
    """The estimate for one training step; `state_bytes_per_device` from the train state's shardings."""
    itemsize = np.dtype(config.dtype if config.dtype != "bfloat16" else np.float16).itemsize
    activations = activation_values_per_example(config, lengths) * itemsize * per_device_batch
    image_bytes = int(lengths["image"]) ** 2 * config.num_channels * 4 * config.max_images
    pipeline = image_bytes * ((SHUFFLE_BUFFER_EXAMPLES if shuffle else 0) + BATCHES_IN_FLIGHT * host_batch)
    return MemoryEstimate(state_bytes_per_device, param_bytes_per_device + activations, pipeline)


def host_memory_bytes(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup/memory.max") -> Optional[int]:
    """This machine's memory (the cgroup limit where one is set), None where it cannot be read."""
    total = None
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        with open(cgroup) as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit)) if total else int(limit)
    except OSError:
        pass
    if total is None and hasattr(os, "sysconf"):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return total


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:,.1f} GiB"


def check(
    estimate_: MemoryEstimate,
    host_bytes: Optional[int],
    local_devices: int = 1,
    device_limit_bytes: Optional[int] = None,
) -> None:
    """Refuses a run whose estimate exceeds the memory it would run in, naming both figures.

    On the CPU backend (`device_limit_bytes` None) every local device's share and the input pipeline
    live in host memory; on an accelerator the per-device part is checked against the device's limit."""
    from simvlm_jax.training.config_checks import ConfigError

    fix = (
        "lower BATCH_SIZE, the image size (TASK_FEATURE_LENGTHS['image']) or the text lengths, or set "
        "REMAT_POLICY='full' / NUM_PARTITIONS to spread the model"
    )
    if device_limit_bytes is None:
        needed = estimate_.device_bytes * local_devices + estimate_.pipeline_bytes
        if host_bytes and needed > host_bytes:
            raise ConfigError(
                f"This run needs at least {_gib(needed)} of memory ({estimate_.describe()}), but the "
                f"machine has {_gib(host_bytes)}: {fix}."
            )
        return
    if estimate_.device_bytes > device_limit_bytes:
        raise ConfigError(
            f"This run needs at least {_gib(estimate_.device_bytes)} per device "
            f"({estimate_.describe()}), but a device holds {_gib(device_limit_bytes)}: {fix}."
        )
    if host_bytes and estimate_.pipeline_bytes > host_bytes:
        raise ConfigError(
            f"The input pipeline needs at least {_gib(estimate_.pipeline_bytes)} of host memory "
            f"({estimate_.describe()}), but the host has {_gib(host_bytes)}: lower the image size."
        )
