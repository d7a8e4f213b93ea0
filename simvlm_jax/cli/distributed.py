"""Joining a multi-process run: when and how `jax.distributed.initialize` is called.

One process per host (per GPU node, per TPU VM worker) runs the same `python -m simvlm_jax.train ...`.
Which initialisation a process takes, decided from its flags and environment before any JAX device
is touched:

    --coordinator_address=HOST:PORT --process_count=N --process_index=I
        explicit: any cluster, including N processes on one machine (tests, emulated CPU devices)
    --multiprocess_gpu (T5X's flag)
        with the coordinator flags: as above; without them, JAX's cluster detection (SLURM, Open MPI)
    a Cloud TPU VM (libtpu and a TPU device node), or a SLURM step of several tasks (`srun`)
        automatic: `jax.distributed.initialize()` reads the TPU metadata / SLURM_* variables
    anything else
        one process, no coordination service

`heartbeat_timeout_s` bounds how long a process waits for a peer that died: after it the coordination
service reports the failure and every survivor exits with an error (instead of blocking in a collective
forever). Resuming is rerunning the same command on every host (docs/scaling.md).
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Optional

# Seconds without a heartbeat before a peer counts as dead (JAX's default is 100).
HEARTBEAT_TIMEOUT_S = 60


class Plan(NamedTuple):
    """What to pass to `jax.distributed.initialize` (None fields: JAX detects them); `why` for the log."""

    initialize: bool
    coordinator_address: Optional[str] = None
    process_count: Optional[int] = None
    process_index: Optional[int] = None
    why: str = "one process"


def plan(
    coordinator_address: Optional[str],
    process_count: Optional[int],
    process_index: Optional[int],
    multiprocess_gpu: bool,
    environ: Optional[Mapping[str, str]] = None,
    tpu_vm: Optional[bool] = None,
) -> Plan:
    """How this process joins the run (see the module docstring); a ConfigError for inconsistent flags."""
    from simvlm_jax.training.config_checks import ConfigError

    environ = os.environ if environ is None else environ
    explicit = (coordinator_address, process_count, process_index)
    if any(value is not None for value in explicit):
        if any(value is None for value in explicit):
            raise ConfigError(
                "--coordinator_address, --process_count and --process_index go together: set all three "
                "(or none, on Cloud TPU and under SLURM, where JAX finds them itself)."
            )
        if not 0 <= process_index < process_count:
            raise ConfigError(f"--process_index={process_index} must be in [0, --process_count={process_count}).")
        return Plan(True, coordinator_address, process_count, process_index, "explicit coordinator flags")
    if multiprocess_gpu:
        return Plan(True, why="--multiprocess_gpu: JAX's cluster detection (SLURM / Open MPI)")
    if _slurm_tasks(environ) > 1:
        return Plan(True, why=f"SLURM step of {_slurm_tasks(environ)} tasks")
    if _tpu_hosts(environ) > 1 or (on_cloud_tpu_vm() if tpu_vm is None else tpu_vm):
        return Plan(True, why="Cloud TPU VM: JAX reads the slice's hosts from the TPU metadata")
    return Plan(False)


def on_cloud_tpu_vm() -> bool:
    """A Cloud TPU VM: libtpu installed and a TPU device node present. There `jax.distributed.initialize()`
    finds the slice's workers in the VM's metadata (TPU_WORKER_HOSTNAMES is not always in the environment),
    and on a single-host VM it finds one process."""
    import importlib.util

    return importlib.util.find_spec("libtpu") is not None and any(
        os.path.exists(node) for node in ("/dev/accel0", "/dev/vfio/0")
    )


def _slurm_tasks(environ: Mapping[str, str]) -> int:
    """Tasks of the SLURM step this process belongs to (srun sets SLURM_STEP_NUM_TASKS; sbatch alone does not)."""
    value = environ.get("SLURM_STEP_NUM_TASKS") or (environ.get("SLURM_NTASKS") if "SLURM_STEP_ID" in environ else None)
    return int(value) if value and value.isdigit() else 1


def _tpu_hosts(environ: Mapping[str, str]) -> int:
    """Hosts of the Cloud TPU slice (TPU_WORKER_HOSTNAMES is a comma-separated list on every TPU VM worker)."""
    hostnames = environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hostnames.split(",") if h.strip()])


def initialize(
    coordinator_address: Optional[str] = None,
    process_count: Optional[int] = None,
    process_index: Optional[int] = None,
    multiprocess_gpu: bool = False,
) -> Plan:
    """Calls `jax.distributed.initialize` when `plan` says so; returns the plan taken."""
    chosen = plan(coordinator_address, process_count, process_index, multiprocess_gpu)
    if chosen.initialize:
        import jax
        from absl import logging

        jax.distributed.initialize(
            chosen.coordinator_address,
            chosen.process_count,
            chosen.process_index,
            heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
        )
        logging.info(
            "Joined a run of %d processes as process %d (%s).", jax.process_count(), jax.process_index(), chosen.why
        )
    return chosen
