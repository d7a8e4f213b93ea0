"""End to end through the real command line: train 2 steps, write the model dir, resume to 4; SIGTERM."""

import glob
import json
import os

from tests.helpers import inspect_checkpoint, run_module

TINY_RUN = [
    "--gin_file=gin/tiny_cpu.gin",
    "--gin.BATCH_SIZE=8",
    "--gin.EVAL_PERIOD=2",
    "--gin.EVAL_STEPS=1",
    "--gin.CHECKPOINT_PERIOD=2",
    "--gin.train.stats_period=1",
    # one learning-rate schedule for the 2-step and the 4-step runs, so they can be compared
    "--gin.schedules.warmup_linear_decay.total_steps=4",
]
NO_DECODING = "--gin.train.infer_eval_dataset_cfg=None"  # for runs that only compare parameters


def test_train_then_resume_from_the_command_line(embedded_data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    first = run_module("simvlm_jax.train", *TINY_RUN, f"--gin.MODEL_DIR={model_dir}", "--gin.TRAIN_STEPS=2")
    assert first.returncode == 0, first.stderr[-4000:]
    assert "step 2/2" in first.stdout
    assert os.path.isdir(os.path.join(model_dir, "checkpoint_2", "state"))
    assert glob.glob(os.path.join(model_dir, "checkpoint_2", "dataset", "train_ds-000-of-001*"))
    config = open(os.path.join(model_dir, "config.gin")).read()
    assert "total_steps = 2" in config or "TRAIN_STEPS = 2" in config
    assert os.path.isfile(os.path.join(model_dir, "model_config.json"))  # the model in plain form
    info = open(os.path.join(model_dir, "model-info.txt")).read()
    assert "Total number of parameters:" in info and "shape (vocab=2000, embed=128)" in info
    assert glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))
    for task in ("embedded_scenes_prefixlm", "embedded_text_prefixlm", "embedded_heldout_captioning"):
        assert glob.glob(os.path.join(model_dir, "training_eval", task, "events.out.tfevents.*")), task
    assert "greedy:" in first.stdout  # samples of image tasks are written to the log
    # Decoded-prediction metrics (seqio.Evaluator) on both captioning tasks, and the curves picture.
    for task in ("embedded_scenes_captioning", "embedded_heldout_captioning"):
        lines = open(os.path.join(model_dir, "inference_eval", f"{task}-metrics.jsonl")).read().splitlines()
        assert {"cider", "bleu_4", "exact_match"} <= set(json.loads(lines[-1])), lines
        assert f"infer_eval {task} @ 2: " in first.stdout
    with open(os.path.join(model_dir, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # The decoding evaluation's report: every decoded example of both tasks, and the run's last line names it.
    page_path = os.path.join(model_dir, "inference_eval", "report.html")
    page = open(page_path).read()
    assert all(f'<h2 id="{task}">' in page for task in ("embedded_scenes_captioning", "embedded_heldout_captioning"))
    assert first.stdout.strip().splitlines()[-1].startswith(f"  report:       {page_path}")

    second = run_module(
        "simvlm_jax.train",
        *TINY_RUN,
        f"--gin.MODEL_DIR={model_dir}",
        "--gin.TRAIN_STEPS=4",
        NO_DECODING,
        "--gin.train.train_eval_dataset_cfg=None",  # the evaluations were checked in the first run
    )
    assert second.returncode == 0, second.stderr[-4000:]
    assert "Restored" in second.stdout and "checkpoint_2" in second.stdout and "with the data iterator" in second.stdout
    assert "step 3/4" in second.stdout and "step 1/" not in second.stdout  # continues, not restarts
    assert os.path.isdir(os.path.join(model_dir, "checkpoint_4"))

    # That the resumed run ends bitwise where a straight run does is tested with real kills in test_kill_resume.py.
    listing = inspect_checkpoint(model_dir)
    assert (
        "step: 4" in listing.stdout
        and "shared_embedding/embedding" in listing.stdout
        and "(2000, 128)" in listing.stdout
    )


def test_unset_model_dir_fails_at_once_naming_the_macro():
    done = run_module("simvlm_jax.train", "--gin_file=gin/tiny_cpu.gin", timeout=120)
    assert done.returncode != 0
    assert "MODEL_DIR" in done.stderr and "--gin.MODEL_DIR=" in done.stderr


def test_sigterm_saves_a_checkpoint_at_the_current_step_and_exits_cleanly_and_a_second_run_is_refused(
    embedded_data_dir, tmp_path
):
    import re
    import signal
    import subprocess
    import sys
    import tempfile

    model_dir = str(tmp_path / "preempted")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simvlm_jax.train",
            *TINY_RUN,
            NO_DECODING,
            f"--gin.MODEL_DIR={model_dir}",
            "--gin.TRAIN_STEPS=100000",
            "--gin.EVAL_PERIOD=100000",
        ],
        cwd=tempfile.gettempdir(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stdout:  # wait until training really runs
            if line.startswith("step 3/"):
                break
        # A second run on the same MODEL_DIR is refused at start, naming the first.
        second = run_module("simvlm_jax.train", *TINY_RUN, NO_DECODING, f"--gin.MODEL_DIR={model_dir}")
        assert second.returncode == 2, second.stderr[-3000:]
        assert re.search(rf"MODEL_DIR .* is in use by another run \(pid {process.pid} on ", second.stderr), (
            second.stderr
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, err[-3000:]
    stopped = re.search(r"Stopped by SIGTERM at step (\d+); checkpoint_\1 is saved", out)
    assert stopped, out[-2000:]
    from simvlm_jax.training import checkpoints

    assert checkpoints.latest_step(model_dir) == int(stopped.group(1)) >= 3  # saved at the step it stopped
    assert not [name for name in os.listdir(model_dir) if name.endswith(".tmp")]  # no half-written save
