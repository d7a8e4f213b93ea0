"""Exact resume after real SIGKILLs (one of them during a save), through the real command line.

A run is killed twice and rerun with the same command each time; its final parameters equal an
uninterrupted run's bitwise (`inspect_checkpoint --compare` -> `max_abs_diff: 0`). The first kill lands
inside the save of step 3, after its `.tmp` folder is complete and before the rename, every time (the
process kills itself there: SIMVLM_FAULT_KILL_BEFORE_RENAME); the second at a random moment.
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from simvlm_jax.training import checkpoints
from tests.helpers import inspect_checkpoint, run_module

STEPS = 6
RUN = [
    "--gin_file=gin/tiny_cpu.gin",
    "--gin.BATCH_SIZE=8",
    f"--gin.TRAIN_STEPS={STEPS}",
    "--gin.EVAL_PERIOD=1000",
    "--gin.CHECKPOINT_PERIOD=1",
    "--gin.CHECKPOINTS_TO_KEEP=3",
    "--gin.train.stats_period=1",
    "--gin.DROPOUT_RATE=0.1",  # dropout on: its RNG must be reproduced on resume too
    "--gin.train.train_eval_dataset_cfg=None",
    "--gin.train.infer_eval_dataset_cfg=None",
]  # no evaluations


def _start(model_dir, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "simvlm_jax.train", *RUN, f"--gin.MODEL_DIR={model_dir}"],
        cwd=tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def _kill_when(process, condition, delay=0.0, timeout=600):
    """SIGKILLs `process` `delay` seconds after `condition()` holds (polled every millisecond)."""
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before the kill"
        assert time.time() < deadline, "timed out waiting to kill"
        time.sleep(0.001)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _names(model_dir):
    return os.listdir(model_dir) if os.path.isdir(model_dir) else []


def test_sigkill_mid_save_and_mid_run_then_rerun_ends_bitwise_equal(embedded_data_dir, tmp_path):
    straight_dir, killed_dir = str(tmp_path / "straight"), str(tmp_path / "killed")
    straight = _start(straight_dir)

    # Kill 1: during the save of step 3, with checkpoint_3.tmp complete but not yet renamed.
    run = _start(killed_dir, env={"SIMVLM_FAULT_KILL_BEFORE_RENAME": "3"})
    assert run.wait(timeout=600) == -signal.SIGKILL
    assert "checkpoint_3.tmp" in _names(killed_dir) and "checkpoint_3" not in _names(killed_dir)
    assert checkpoints.latest_step(killed_dir) == 2
    listed = inspect_checkpoint(killed_dir)  # the previous checkpoint restores
    assert listed.returncode == 0 and "step: 2" in listed.stdout, listed.stderr[-2000:]

    # Kill 2: an arbitrary moment after checkpoint_4 is complete (mid-step, mid-save or mid-eval).
    run = _start(killed_dir)
    _kill_when(run, lambda: "checkpoint_4" in _names(killed_dir), delay=random.uniform(0.0, 0.5))
    assert checkpoints.latest_step(killed_dir) >= 4

    final = run_module("simvlm_jax.train", *RUN, f"--gin.MODEL_DIR={killed_dir}")
    assert final.returncode == 0, final.stderr[-4000:]
    assert "Restored" in final.stdout and "with the data iterator" in final.stdout
    assert not [name for name in _names(killed_dir) if name.endswith(".tmp")]  # remains of kill 1 removed
    assert straight.wait(timeout=600) == 0

    compared = inspect_checkpoint(straight_dir, "--compare", killed_dir)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert f"(step {STEPS})" in compared.stdout.splitlines()[0]
    assert compared.stdout.strip().splitlines()[-1] == "max_abs_diff: 0", compared.stdout[-3000:]
