"""Bad input records (corrupt, odd-mode, empty, huge images; empty, non-UTF-8, overlong text) are
dropped and counted by reason, or stop the run naming the record; never an XLA crash or garbage."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simvlm_jax.data import bad_records
from tests import bad_data
from tests.helpers import REPO_ROOT, run_module, train_in_process


def test_every_image_mode_becomes_rgb_uint8_with_its_values_kept():
    gray16 = Image.fromarray(np.full((4, 5), 65535, np.uint16))
    rgb, reason, _ = bad_records.decode_rgb(bad_data.encode(gray16))
    assert reason is None and rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert (rgb == 255).all()  # scaled from 16 bits, not clipped garbage
    transparent = Image.new("RGBA", (3, 3), (255, 0, 0, 0))
    rgb, _, _ = bad_records.decode_rgb(bad_data.encode(transparent))
    assert (rgb == 255).all()  # alpha composited onto white
    for encoded in bad_data.good_images():
        rgb, reason, detail = bad_records.decode_rgb(encoded)
        assert reason is None, detail
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


def test_one_pass_over_the_generated_dataset_counts_each_reason_exactly(tmp_path):
    from simvlm_jax.tasks import pretraining

    path = str(tmp_path / "pairs.tfrecord")
    expected = bad_data.write_dataset(path)
    task = pretraining.register_web_pairs_task("bad_web_pairs_in_process", {"train": path})
    bad_records.reset_counts()
    ds = task.get_dataset({"inputs": 8, "targets": 8, "image": 16}, split="train", shuffle=False, num_epochs=1)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 25  # 24 good pairs + the long (cropped) caption
    for ex in examples:
        assert ex["image"].shape == (16, 16, 3) and np.isfinite(ex["image"]).all()
    assert bad_records.skipped_counts() == expected
    assert sum(expected.values()) == 11


def test_policy_fail_stops_at_the_first_bad_record_naming_it(tmp_path):
    path = str(tmp_path / "pairs.tfrecord")
    bad_data.write_dataset(path)
    from simvlm_jax.tasks import pretraining

    task = pretraining.register_web_pairs_task("bad_web_pairs_fail", {"train": path})
    with bad_records.applied(bad_records.RecordPolicy("fail")):
        ds = task.get_dataset({"inputs": 8, "targets": 8, "image": 16}, split="train", shuffle=False, num_epochs=1)
    # The policy was bound when the pipeline was built: it holds although the records are read outside.
    assert bad_records.active().on_bad == "skip"
    with pytest.raises(tf.errors.OpError, match="a truncated jpeg.*corrupt_image"):
        list(ds.as_numpy_iterator())


def _train_args(tmp_path, *extra):
    """(gin flags of a 4-step run on the generated bad-pairs task, expected skip counts, model dir, env)."""
    path = str(tmp_path / "pairs.tfrecord")
    expected = bad_data.write_dataset(path)
    (tmp_path / "bad_pairs_tasks.py").write_text(bad_data.TASK_MODULE_SOURCE)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}", "BAD_PAIRS_PATH": path}
    model_dir = str(tmp_path / "run")
    args = [
        "--gin_file=gin/tiny_cpu.gin",
        f"--gin.MODEL_DIR={model_dir}",
        "--gin.TRAIN_STEPS=4",
        "--gin.BATCH_SIZE=8",
        f"--gin.MIXTURE_OR_TASK_NAME={bad_data.TASK_NAME}",
        "--gin.MIXTURE_OR_TASK_MODULE=bad_pairs_tasks",
        "--gin.SHUFFLE_TRAIN_EXAMPLES=False",
        "--gin.train.train_eval_dataset_cfg=None",
        "--gin.train.infer_eval_dataset_cfg=None",
        "--gin.SAVE_DATASET=False",
        "--gin.train.stats_period=2",
        *extra,
    ]
    return args, expected, model_dir, env


def test_training_skips_and_counts_bad_records(embedded_data_dir, tmp_path, monkeypatch, capsys):
    """The loop's behaviour, run in this process (the command's exit on policy 'fail' is tested below)."""
    args, expected, model_dir, env = _train_args(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the user's task module, as PYTHONPATH gives it to the command
    monkeypatch.setenv("BAD_PAIRS_PATH", env["BAD_PAIRS_PATH"])
    step, _ = train_in_process(*args)
    out = capsys.readouterr().out
    assert step == 4 and "step 4/4" in out
    last = [line for line in out.splitlines() if line.startswith("skipped records:")][-1]
    counts = {reason: int(n) for reason, n in (part.split() for part in last[len("skipped records: ") :].split(", "))}
    assert set(counts) == set(expected)
    for reason, n in expected.items():  # 4 steps x 8 > 25 good records: at least one full pass was read
        assert counts[reason] >= n, (reason, counts)
    tags = set()
    for events in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(events):
            tags.update(value.tag for value in event.summary.value)
    assert {f"data/skipped_records/{reason}" for reason in expected} <= tags


def test_train_command_with_policy_fail_names_the_record(embedded_data_dir, tmp_path):
    args, _, _, env = _train_args(tmp_path, "--gin.train.bad_record_policy=fail")
    done = run_module("simvlm_jax.train", *args, env=env, timeout=1200)
    assert done.returncode != 0
    assert "BadRecordError" in done.stderr and "'a truncated jpeg'" in done.stderr, done.stderr[-3000:]
    assert "corrupt_image" in done.stderr and "bad_record_policy" in done.stderr
