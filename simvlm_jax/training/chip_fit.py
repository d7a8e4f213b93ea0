"""Whether a memory plan fits a chip, and the smallest supported change that makes it fit.

    fit(plan, "v4").verdict                       'fits' | 'tight' | 'does not fit'
    suggestions(sizes, config, lengths, plan, CHIPS["v4"].hbm_bytes)

The plan is training/memory_plan.py's (its total per device is an estimate, a lower bound: hence 'tight').
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

from simvlm_jax.training.config_checks import ConfigError
from simvlm_jax.training.memory_plan import MemoryPlan, MeshShape, TrainStateSizes, plan_memory

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    hbm_bytes: int
    slice_format: str  # the product name of `n` cores, e.g. "v4-{}"
    cores_per_chip: int = 1  # what slice names count (TensorCores on v4/v5p: "v5p-32" is 16 chips)

    def slice_name(self, devices: int) -> str:
        return self.slice_format.format(devices * self.cores_per_chip)


# HBM per chip as the vendors document it (GiB, or GB where noted: taken as GiB, as the HBM stacks are).
# JAX sees one device per chip on all of them: v4 and v5p chips have two TensorCores that run as one
# "megacore" device, so a v4-128 slice (128 TensorCores) is 64 chips and 64 JAX devices.
#   v4    32 GiB  https://cloud.google.com/tpu/docs/v4  ("HBM2 capacity and bandwidth: 32 GiB, 1200 GBps")
#   v5e   16 GB   https://docs.cloud.google.com/tpu/docs/v5e  ("HBM2 capacity and bandwidth: 16 GB, 819 GBps")
#   v5p   95 GiB  https://docs.cloud.google.com/tpu/docs/v5p  (96 GiB physical; 95 GiB is what JAX can allocate)
#   v6e   32 GB   https://docs.cloud.google.com/tpu/docs/v6e  ("HBM capacity per chip: 32 GB")
#   h100  80 GB   HBM3 on the SXM5 board; https://glennklockwood.com/garden/processors/h100 ("80 GB HBM3 (5 stacks)")
#   h200  141 GB  HBM3e; MLPerf system description "NVIDIA H200-SXM-141GB", accelerator_memory_capacity "141 GB"
#                 (https://raw.githubusercontent.com/mlcommons/inference_results_v4.1/main/closed/NVIDIA/systems/H200-SXM-141GBx8_TRT_MaxQ.json)
# The runtime keeps some of it (libtpu's reserve; on GPUs JAX preallocates 75% at start-up unless
# XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise: https://docs.jax.dev/en/latest/gpu_memory_allocation.html).
CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", 32 * GIB, "v4-{}", cores_per_chip=2),
    "v5e": Chip("TPU v5e", 16 * GIB, "v5litepod-{}"),
    "v5p": Chip("TPU v5p", 95 * GIB, "v5p-{}", cores_per_chip=2),
    "v6e": Chip("TPU v6e", 32 * GIB, "v6e-{}"),
    "h100": Chip("NVIDIA H100", 80 * GIB, "{} x H100"),
    "h200": Chip("NVIDIA H200", 141 * GIB, "{} x H200"),
}
TIGHT_HEADROOM = 0.10  # below this share of HBM left, a fit is called tight (the estimate is a lower bound)


def chip(name: str) -> Chip:
    if name.lower() not in CHIPS:
        raise ConfigError(f"Unknown chip {name!r}: --chip must be one of {', '.join(CHIPS)}.")
    return CHIPS[name.lower()]


@dataclasses.dataclass(frozen=True)
class Fit:
    chip: str  # a key of CHIPS
    hbm_bytes: int
    needed_bytes: int  # estimated (the plan's total per device)

    @property
    def headroom_bytes(self) -> int:
        return self.hbm_bytes - self.needed_bytes

    @property
    def verdict(self) -> str:
        if self.headroom_bytes < 0:
            return "does not fit"
        return "tight" if self.headroom_bytes < TIGHT_HEADROOM * self.hbm_bytes else "fits"


def fit(plan: MemoryPlan, chip_name: str) -> Fit:
    return Fit(chip_name.lower(), chip(chip_name).hbm_bytes, plan.total_per_device)


@dataclasses.dataclass(frozen=True)
class Suggestion:
    change: str  # in words
    flags: str  # what to add to the train command
    plan: MemoryPlan


_REMAT = ("REMAT_POLICY='full'", "--gin.REMAT_POLICY=\"'full'\"", {"remat_policy": "full"})


def _accumulation(k: int, remat: bool = False) -> tuple[str, str, dict]:
    change, flags = f"NUM_MICROBATCHES={k}", f"--gin.NUM_MICROBATCHES={k}"
    if remat:
        return f"{change}, {_REMAT[0]}", f"{flags} {_REMAT[1]}", {"num_microbatches": k, **_REMAT[2]}
    return change, flags, {"num_microbatches": k}


def _on_mesh(mesh: MeshShape) -> tuple[str, str, dict]:
    flags = f"--gin.NUM_PARTITIONS={mesh.model} --gin.partitioning.PjitPartitioner.fsdp_partitions={mesh.fsdp}"
    return f"mesh {mesh}", flags, {"mesh": mesh}


def suggestions(
    sizes: TrainStateSizes, config, lengths: Mapping[str, int], plan: MemoryPlan, hbm_bytes: int
) -> list[Suggestion]:
    """For each kind of change the trainer supports, the smallest that makes `plan` fit in `hbm_bytes` with
    TIGHT_HEADROOM to spare, by the same estimate: rematerialisation, gradient accumulation (with
    rematerialisation where neither fits alone), more fsdp or more model parallelism on the same devices.
    The estimate does not split activations over the model axis, so it understates what model parallelism
    saves. Empty where the plan already fits so, or no change does."""
    budget = (1 - TIGHT_HEADROOM) * hbm_bytes
    if plan.total_per_device <= budget:
        return []
    mesh = plan.mesh
    current = {"mesh": mesh, "num_microbatches": plan.num_microbatches, "remat_policy": plan.remat_policy}

    def first_fitting(options) -> Optional[Suggestion]:
        for change, flags, overrides in options:  # smallest change first
            try:
                candidate = plan_memory(sizes, config, lengths, plan.global_batch, **{**current, **overrides})
            except ConfigError:
                continue
            if candidate.total_per_device <= budget:
                return Suggestion(change, flags, candidate)
        return None

    can_remat = plan.remat_policy == "none"
    microbatches = [k for k in _divisors(plan.per_device_batch) if k > plan.num_microbatches]
    by_remat = first_fitting([_REMAT] if can_remat else [])
    by_accumulation = first_fitting(_accumulation(k) for k in microbatches)
    if can_remat and not (by_remat or by_accumulation):
        by_accumulation = first_fitting(_accumulation(k, remat=True) for k in microbatches)
    splits = [f for f in _divisors(mesh.data) if f > 1]
    by_fsdp = first_fitting(_on_mesh(MeshShape(mesh.data // f, mesh.fsdp * f, mesh.model)) for f in splits)
    by_model = first_fitting(
        _on_mesh(MeshShape(mesh.data // f, mesh.fsdp, mesh.model * f))
        for f in splits
        if config.num_heads % (mesh.model * f) == 0
    )
    return [s for s in (by_remat, by_accumulation, by_fsdp, by_model) if s]


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]
