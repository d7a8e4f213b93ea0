"""Exact resume after real SIGKILLs at every point of a save, through the real command line.

One run is killed six times and rerun with the same command each time; its final parameters equal an
uninterrupted run's bitwise (`inspect_checkpoint --compare` -> `max_abs_diff: 0`). Five kills land at the
save's points in turn (the process kills itself there: SIMVLM_FAULT_KILL_AT=<point>@<step>): after Orbax
wrote the state, after the data iterator was written, with the `.tmp` complete and checksummed but not
renamed, right after the rename, and in the middle of deleting an old checkpoint (keep-N). The sixth comes
from the test at a random moment. After every kill, every `checkpoint_<step>` verifies against its checksums.
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from simvlm_jax.training import checkpoint_integrity, checkpoints
from tests.helpers import inspect_checkpoint, run_module

STEPS = 8
RUN = [
    "--gin_file=gin/tiny_cpu.gin",
    "--gin.BATCH_SIZE=8",
    f"--gin.TRAIN_STEPS={STEPS}",
    "--gin.EVAL_PERIOD=1000",
    "--gin.CHECKPOINT_PERIOD=1",
    "--gin.CHECKPOINTS_TO_KEEP=2",
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


# (point of the save, step whose save is cut there, the newest complete checkpoint after the kill)
KILLS = [
    ("state_written", 2, 1),
    ("dataset_written", 3, 2),
    ("checksums_written", 4, 3),
    ("renamed", 5, 5),
    ("deleting_old", 6, 6),
]


def _assert_every_checkpoint_verifies(model_dir):
    for step in checkpoints.all_steps(model_dir):
        problem = checkpoint_integrity.problem(checkpoints.checkpoint_dir(model_dir, step))
        assert problem is None, (step, problem)


def test_sigkill_at_every_point_of_a_save_then_rerun_ends_bitwise_equal(embedded_data_dir, tmp_path):
    straight_dir, killed_dir = str(tmp_path / "straight"), str(tmp_path / "killed")
    straight = _start(straight_dir)

    for point, step, newest in KILLS:
        run = _start(killed_dir, env={"SIMVLM_FAULT_KILL_AT": f"{point}@{step}"})
        assert run.wait(timeout=600) == -signal.SIGKILL, point
        assert checkpoints.latest_step(killed_dir) == newest, (point, _names(killed_dir))
        _assert_every_checkpoint_verifies(killed_dir)
        if point == "deleting_old":  # half-deleted: renamed out of the checkpoint names first
            assert [n for n in _names(killed_dir) if n.endswith(".deleting")], _names(killed_dir)
    listed = inspect_checkpoint(killed_dir)  # the newest checkpoint restores
    assert listed.returncode == 0 and "step: 6" in listed.stdout, listed.stderr[-2000:]

    # A kill at an arbitrary moment after checkpoint_7 is complete (mid-step, mid-save or after the end).
    run = _start(killed_dir)
    _kill_when(run, lambda: "checkpoint_7" in _names(killed_dir), delay=random.uniform(0.0, 0.5))
    assert checkpoints.latest_step(killed_dir) >= 7
    _assert_every_checkpoint_verifies(killed_dir)

    final = run_module("simvlm_jax.train", *RUN, f"--gin.MODEL_DIR={killed_dir}")
    assert final.returncode == 0, final.stderr[-4000:]
    assert not [n for n in _names(killed_dir) if n.endswith((".tmp", ".deleting"))]  # remains removed
    assert straight.wait(timeout=600) == 0
    _assert_every_checkpoint_verifies(killed_dir)

    compared = inspect_checkpoint(straight_dir, "--compare", killed_dir)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert f"(step {STEPS})" in compared.stdout.splitlines()[0]
    assert compared.stdout.strip().splitlines()[-1] == "max_abs_diff: 0", compared.stdout[-3000:]
