"""Faults a cluster or a user brings, each attacked as it happens: corrupt checkpoints, a second run on one
MODEL_DIR, a save that fails mid-run, a source with no good record, a signal during an evaluation.

The loop's decisions are tested in this process (`train_in_process`); what needs a process of its own (a
prompt exit, a real signal, two runs at once) runs the real command.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from simvlm_jax.data import bad_records
from simvlm_jax.training import checkpoint_integrity, checkpoints
from simvlm_jax.training.config_checks import ConfigError
from simvlm_jax.training.model_dir_lock import ModelDirLock
from tests import bad_data
from tests.helpers import run_module, train_in_process

QUIET_RUN = [
    "--gin_file=gin/tiny_cpu.gin",
    "--gin.BATCH_SIZE=8",
    "--gin.CHECKPOINT_PERIOD=1",
    "--gin.CHECKPOINTS_TO_KEEP=None",
    "--gin.train.train_eval_dataset_cfg=None",
    "--gin.train.infer_eval_dataset_cfg=None",
    "--gin.schedules.warmup_linear_decay.total_steps=4",
]


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, embedded_data_dir):
    """A model dir with checkpoint_1 and checkpoint_2 (with checksums), to be copied before corrupting."""
    model_dir = str(tmp_path_factory.mktemp("faults") / "run")
    step, _ = train_in_process(*QUIET_RUN, f"--gin.MODEL_DIR={model_dir}", "--gin.TRAIN_STEPS=2")
    assert step == 2 and checkpoints.all_steps(model_dir) == [1, 2]
    return model_dir


def _copy(model_dir, tmp_path) -> str:
    copy = str(tmp_path / "run")
    shutil.copytree(model_dir, copy)
    return copy


def _flip_bytes(path: str, count: int = 3) -> None:
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        for k in range(count):
            position = (len(data) // 2 + 7 * k) % len(data)
            data[position] ^= 0x5A
        f.seek(0)
        f.write(data)


def _files(directory: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), directory) for root, _, names in os.walk(directory) for name in names
    )


def test_every_file_of_a_checkpoint_is_covered_by_its_checksums(two_checkpoints, tmp_path):
    """A bit flip, a truncation or a deletion of any file (state data, _METADATA, manifests, the data
    iterator) is found and named; the intact checkpoint verifies."""
    original = checkpoints.checkpoint_dir(two_checkpoints, 2)
    assert checkpoint_integrity.problem(original) is None
    files = [f for f in _files(original) if f != checkpoint_integrity.CHECKSUMS_FILE]
    assert any(f.startswith("state/") for f in files) and any(f.startswith("dataset/") for f in files)
    assert "state/_METADATA" in files
    for index, relative in enumerate(files):
        if os.path.getsize(os.path.join(original, relative)) == 0:
            continue
        for attack in ("flip", "truncate", "delete"):
            copy = str(tmp_path / f"{index}_{attack}")
            shutil.copytree(original, copy)
            path = os.path.join(copy, relative)
            if attack == "flip":
                _flip_bytes(path, 1)
            elif attack == "truncate":
                os.truncate(path, os.path.getsize(path) // 2)
            else:
                os.remove(path)
            found = checkpoint_integrity.problem(copy)
            assert found is not None and relative in found, (relative, attack, found)
            shutil.rmtree(copy)
    os.makedirs(tmp_path / "empty" / "checkpoint_3")
    assert "no state/ folder" in checkpoint_integrity.problem(str(tmp_path / "empty" / "checkpoint_3"))


def _largest_state_file(checkpoint: str) -> str:
    state = os.path.join(checkpoint, "state")
    paths = [os.path.join(state, f) for f in _files(state)]
    return max(paths, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["flip", "metadata_deleted", "emptied"])
def test_a_corrupt_newest_checkpoint_is_moved_aside_and_the_previous_one_resumes(
    two_checkpoints, tmp_path, capsys, damage
):
    model_dir = _copy(two_checkpoints, tmp_path)
    newest = checkpoints.checkpoint_dir(model_dir, 2)
    if damage == "flip":
        _flip_bytes(_largest_state_file(newest))
    elif damage == "metadata_deleted":
        os.remove(os.path.join(newest, "state", "_METADATA"))
    else:
        shutil.rmtree(newest)
        os.makedirs(newest)
    step, _ = train_in_process(*QUIET_RUN, f"--gin.MODEL_DIR={model_dir}", "--gin.TRAIN_STEPS=3")
    out = capsys.readouterr().out
    assert step == 3
    assert re.search(
        rf"{re.escape(newest)} is corrupt: .+\. Moved it to {re.escape(newest)}\.corrupt; resuming from checkpoint_1",
        out,
    ), out
    assert "Restored" in out and "(step 1," in out
    assert os.path.isdir(newest + ".corrupt")  # kept for inspection, never deleted
    assert checkpoints.all_steps(model_dir) == [1, 2, 3]
    for step_ in (1, 2, 3):
        assert checkpoint_integrity.problem(checkpoints.checkpoint_dir(model_dir, step_)) is None


def test_policy_fail_refuses_a_corrupt_newest_checkpoint_and_changes_nothing(two_checkpoints, tmp_path):
    model_dir = _copy(two_checkpoints, tmp_path)
    _flip_bytes(_largest_state_file(checkpoints.checkpoint_dir(model_dir, 2)))
    before = _files(model_dir)
    with pytest.raises(ConfigError, match=r"checkpoint_2 is corrupt: state/.* does not match its checksum"):
        train_in_process(
            *QUIET_RUN,
            f"--gin.MODEL_DIR={model_dir}",
            "--gin.TRAIN_STEPS=3",
            "--gin.train.corrupt_checkpoint_policy=fail",
        )
    assert _files(model_dir) == before


def test_a_corrupt_initial_checkpoint_is_refused_by_name(two_checkpoints, tmp_path):
    source = _copy(two_checkpoints, tmp_path)
    _flip_bytes(_largest_state_file(checkpoints.checkpoint_dir(source, 2)))
    with pytest.raises(ConfigError, match="checkpoint_2 is corrupt"):
        train_in_process(
            *QUIET_RUN,
            f"--gin.MODEL_DIR={tmp_path / 'fresh'}",
            "--gin.TRAIN_STEPS=3",
            f"--gin.utils.RestoreCheckpointConfig.path={checkpoints.checkpoint_dir(source, 2)}",
        )


def test_a_model_dir_held_by_a_live_run_is_refused_and_a_dead_runs_lock_is_taken_over(
    embedded_data_dir, tmp_path, capsys
):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    with ModelDirLock(model_dir):
        with pytest.raises(
            ConfigError, match=rf"MODEL_DIR '{re.escape(model_dir)}' is in use by another run \(pid {os.getpid()}"
        ):
            train_in_process(*QUIET_RUN, f"--gin.MODEL_DIR={model_dir}", "--gin.TRAIN_STEPS=1")
    assert checkpoints.all_steps(model_dir) == []
    # The file a SIGKILLed run leaves: its holder's details, no lock held.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(os.path.join(model_dir, ".lock"), "w") as f:
        f.write(
            '{"host": "%s", "pid": %s, "started": "earlier", "command": "train"}'
            % (os.uname().nodename, dead.stdout.strip())
        )
    step, _ = train_in_process(*QUIET_RUN, f"--gin.MODEL_DIR={model_dir}", "--gin.TRAIN_STEPS=1")
    assert step == 1
    assert f"was left by a run that is gone (pid {dead.stdout.strip()}" in capsys.readouterr().out


def _all_bad_task(tmp_path, name: str) -> str:
    """Registers `name`: web pairs whose every record is bad (bad images and bad texts)."""
    from simvlm_jax.tasks import pretraining

    good_jpeg = bad_data.good_images()[0]
    pairs = [(good_jpeg[: len(good_jpeg) // 2], b"a truncated jpeg"), (good_jpeg, b""), (b"", b"no image")] * 4
    path = str(tmp_path / f"{name}.tfrecord")
    pretraining.write_web_pairs(path, pairs)
    pretraining.register_web_pairs_task(name, {"train": path})
    return name


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_a_task_with_no_good_record_stops_the_run_naming_it(embedded_data_dir, tmp_path, policy):
    task = _all_bad_task(tmp_path, f"all_bad_pairs_{policy}")
    args = [
        *QUIET_RUN,
        f"--gin.MODEL_DIR={tmp_path / 'run'}",
        "--gin.TRAIN_STEPS=2",
        f"--gin.MIXTURE_OR_TASK_NAME={task}",
        f"--gin.train.bad_record_policy={policy}",
        "--gin.train.max_bad_records_in_a_row=200",
    ]
    expected = rf"task '{task}' gave 200 bad records in a row" if policy == "skip" else "Bad input record with text"
    with pytest.raises(bad_records.BadRecordError, match=expected):
        train_in_process(*args)


def test_a_mixture_with_one_all_bad_task_stops_naming_that_task(embedded_data_dir, tmp_path):
    from simvlm_jax.tasks import common

    task = _all_bad_task(tmp_path, "all_bad_pairs_in_mix")
    common.add_mixture("mostly_good_mix", [("embedded_scenes_prefixlm", 99), (task, 1)])
    with pytest.raises(bad_records.BadRecordError, match=rf"task '{task}' gave 100 bad records in a row"):
        train_in_process(
            *QUIET_RUN,
            f"--gin.MODEL_DIR={tmp_path / 'run'}",
            "--gin.TRAIN_STEPS=50",
            "--gin.MIXTURE_OR_TASK_NAME=mostly_good_mix",
            "--gin.train.max_bad_records_in_a_row=100",
        )


def _tail(text: str, lines: int = 1) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()][-lines:]


def test_the_command_exits_at_once_on_a_source_with_no_good_record(embedded_data_dir, tmp_path):
    """With the default bound: an error naming the task, printed last, exit 1 (it used to spin for ever)."""
    _all_bad_task(tmp_path, "all_bad_pairs_cmd")  # writes the file; the command's own module registers it
    source = str(tmp_path / "all_bad_pairs_cmd.tfrecord")
    (tmp_path / "all_bad_tasks.py").write_text(
        "from simvlm_jax.tasks import pretraining\n"
        f"pretraining.register_web_pairs_task('all_bad_pairs_cmd', {{'train': {source!r}}})\n"
    )
    start = time.monotonic()
    done = run_module(
        "simvlm_jax.train",
        *QUIET_RUN,
        f"--gin.MODEL_DIR={tmp_path / 'run'}",
        "--gin.TRAIN_STEPS=2",
        "--gin.MIXTURE_OR_TASK_NAME=all_bad_pairs_cmd",
        "--gin.MIXTURE_OR_TASK_MODULE=all_bad_tasks",
        env={"PYTHONPATH": str(tmp_path)},
        timeout=300,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stderr[-3000:]
    last = _tail(done.stderr)[0]
    assert last.startswith("Error (BadRecordError): task 'all_bad_pairs_cmd' gave 10000 bad records in a row"), last
    print(f"all-bad task: exit 1 after {elapsed:.1f} s")


def test_a_failed_save_mid_run_ends_the_process_at_once_with_the_message_last(embedded_data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    start = time.monotonic()
    done = run_module(
        "simvlm_jax.train",
        *QUIET_RUN,
        f"--gin.MODEL_DIR={model_dir}",
        "--gin.TRAIN_STEPS=4",
        env={"SIMVLM_FAULT_FAIL_SAVE_AT": "2"},
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    last = _tail(done.stderr)[0]
    assert re.match(
        r"Error \(CheckpointSaveError\): Saving checkpoint_2 in .* failed \(.*No space left on device.*\); "
        r"checkpoint_1 is intact\.",
        last,
    ), last
    assert checkpoints.all_steps(model_dir) == [1] and not [n for n in os.listdir(model_dir) if ".tmp" in n]
    print(f"failed save: exit 1 after {time.monotonic() - start:.1f} s")


def test_sigterm_during_an_evaluation_stops_it_and_saves_at_once(embedded_data_dir, tmp_path):
    """The decoding evaluation is cut at its next batch; the checkpoint of the current step is saved; exit 0."""
    model_dir = str(tmp_path / "run")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simvlm_jax.train",
            "--gin_file=gin/tiny_cpu.gin",
            "--gin.BATCH_SIZE=8",
            f"--gin.MODEL_DIR={model_dir}",
            "--gin.TRAIN_STEPS=1000",
            "--gin.EVAL_PERIOD=2",
            "--gin.EVAL_STEPS=1",
            "--gin.CHECKPOINT_PERIOD=1000",
            "--gin.infer_eval/utils.DatasetConfig.batch_size=1",  # many short decoding batches
        ],
        cwd=tempfile.gettempdir(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stdout:
            if line.startswith("eval "):  # the teacher-forced eval is done: decoding starts next
                break
        time.sleep(1.0)  # inside the first decoding batch (or its compilation)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=300)
        took = time.monotonic() - sent
    finally:
        process.kill()
    assert process.returncode == 0, err[-3000:]
    assert "Evaluation at step 2 interrupted." in out, out[-3000:]
    assert "Stopped by SIGTERM at step 2; checkpoint_2 is saved" in out, out[-3000:]
    assert not re.search(r"^infer_eval \S+ @ 2:", out, re.M)  # no scores written for the cut evaluation
    assert checkpoints.latest_step(model_dir) == 2
    assert checkpoint_integrity.problem(checkpoints.checkpoint_dir(model_dir, 2)) is None
    assert took < 30, took
    print(f"SIGTERM during evaluation: exit 0 {took:.1f} s after the signal")


def test_parameters_only_restore_with_t5x_assignment_map(two_checkpoints, tmp_path, capsys):
    """`assignment_map = ((r'state/.*', None),)`: the parameters come from the checkpoint, the step and the
    optimizer state start afresh (fine-tuning from parameters only, as in T5X)."""
    from simvlm_jax.training.checkpoints import load_params

    model_dir = str(tmp_path / "finetune")
    source = checkpoints.checkpoint_dir(two_checkpoints, 2)
    step, state = train_in_process(
        *QUIET_RUN,
        f"--gin.MODEL_DIR={model_dir}",
        "--gin.TRAIN_STEPS=1",
        "--gin.CHECKPOINT_PERIOD=1000",
        f"--gin.utils.RestoreCheckpointConfig.path={source}",
        "--gin.utils.RestoreCheckpointConfig.assignment_map=((r'state/.*', None),)",
        "--gin.utils.RestoreCheckpointConfig.restore_dataset=False",
        "--gin.PEAK_LEARNING_RATE=0.0",  # the one step changes nothing: the parameters stay the checkpoint's
    )
    out = capsys.readouterr().out
    assert re.search(r"Restored .*checkpoint_2 partially: \d+ arrays restored, \d+ initialised afresh", out), out
    assert step == 1  # the step started afresh at 0
    import jax
    import numpy as np

    stored = load_params(source)
    for a, b in zip(jax.tree.leaves(stored), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_renaming_map_to_a_missing_key_is_refused_naming_it(two_checkpoints, tmp_path):
    with pytest.raises(ConfigError, match=r"target/shared_embedding/embedding is read from 'target/nowhere/embedding'"):
        train_in_process(
            *QUIET_RUN,
            f"--gin.MODEL_DIR={tmp_path / 'x'}",
            "--gin.TRAIN_STEPS=1",
            f"--gin.utils.RestoreCheckpointConfig.path={checkpoints.checkpoint_dir(two_checkpoints, 2)}",
            "--gin.utils.RestoreCheckpointConfig.assignment_map="
            "((r'target/shared_embedding/(.*)', r'target/nowhere/\\1'),)",
        )


@pytest.fixture
def small_disk(tmp_path):
    """A 200 MiB tmpfs of our own (a real file system that fills up), unmounted afterwards."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here ({mounted.stderr.decode().strip()}); the test needs root")
    yield str(mount_point)
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_real_disk_full_mid_run_is_one_line_on_stderr(embedded_data_dir, small_disk):
    """The disk fills up between two saves: Orbax's writer threads fail with ENOSPC. stderr holds the
    command's one-line error (and the start-up warning), not Orbax's per-thread tracebacks."""
    model_dir = os.path.join(small_disk, "run")
    run = [*QUIET_RUN, "--gin.TRAIN_STEPS=400", "--gin.CHECKPOINT_PERIOD=50", f"--gin.MODEL_DIR={model_dir}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "simvlm_jax.train", *run],
        cwd=tempfile.gettempdir(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not os.path.isdir(os.path.join(model_dir, "checkpoint_50")) and time.monotonic() < deadline:
        assert process.poll() is None
        time.sleep(0.2)
    free = shutil.disk_usage(small_disk).free
    with open(os.path.join(small_disk, "filler"), "wb") as f:  # leave 1 MiB: the next save cannot fit
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        for _ in range(free // (1 << 20) - 1):
            f.write(chunk)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert re.match(r"Error \(CheckpointSaveError\): Saving checkpoint_\d+ in .* failed .*No space left", lines[-1])
    assert "checkpoint_50 is intact" in lines[-1]
    assert len(lines) <= 3 and "Traceback" not in stderr, stderr[-3000:]
