"""The gin files under real T5X (`python -m t5x.train`), and model dirs passed between the two trainers.

These run only where T5X is importable (installed from source as docs/t5x.md shows); CI cannot install it
and skips them with that reason. tests/test_t5x_contract.py checks the same contract without T5X.
"""

import importlib.util
import os
import re

import pytest

from simvlm_jax.training import checkpoints
from tests.helpers import REPO_ROOT, run_module

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("t5x") is None,
    reason="T5X is not installed (it is not on PyPI; docs/t5x.md installs it from source)",
)
SMALL = ["--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=2", "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_STEPS=1"]
NO_DECODING = ["--gin.train.infer_eval_dataset_cfg=None"]


def _t5x(model_dir, steps, *extra):
    """The design card's command, from the repository root with no search-path flag."""
    env = {k: v for k, v in os.environ.items() if k not in ("SIMVLM_IGNORE_T5X", "SIMVLM_USE_T5X")}
    return run_module(
        "t5x.train",
        "--gin_file=gin/tiny_cpu.gin",
        f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.TRAIN_STEPS={steps}",
        *SMALL,
        *extra,
        env=env,
        timeout=1200,
        cwd=REPO_ROOT,
    )


def _ours(model_dir, steps, *extra):
    return run_module(
        "simvlm_jax.train", "--gin_file=gin/tiny_cpu.gin", f"--gin.MODEL_DIR={model_dir}", f"--gin.TRAIN_STEPS={steps}",
        *SMALL, *extra, timeout=1200,
    )  # fmt: skip


def test_t5x_trains_tiny_cpu_gin_and_writes_the_decoding_metrics(embedded_data_dir, tmp_path):
    model_dir = str(tmp_path / "t5x")
    done = _t5x(model_dir, 2, "--gin.infer_eval/utils.DatasetConfig.batch_size=64")
    assert done.returncode == 0, done.stderr[-4000:]
    assert checkpoints.latest_step(model_dir) == 2
    for task in ("embedded_scenes_captioning", "embedded_heldout_captioning"):
        with open(os.path.join(model_dir, "inference_eval", f"{task}-metrics.jsonl")) as f:
            assert '"cider"' in f.read()


def test_a_model_dir_goes_ours_then_t5x_then_ours_with_its_whole_state(embedded_data_dir, tmp_path):
    model_dir = str(tmp_path / "both")
    first = _ours(model_dir, 2, *NO_DECODING)
    assert first.returncode == 0, first.stderr[-4000:]
    second = _t5x(model_dir, 4, *NO_DECODING)
    assert second.returncode == 0, second.stderr[-4000:]
    log = second.stdout + second.stderr
    assert "Not restoring" not in log
    assert re.search(r"Restor\w+ .*checkpoint_2", log), log[-3000:]
    third = _ours(model_dir, 6, *NO_DECODING)
    assert third.returncode == 0, third.stderr[-4000:]
    assert "Restored" in third.stdout and "checkpoint_4 (step 4, with the data iterator)" in third.stdout
    assert checkpoints.latest_step(model_dir) == 6


def test_the_card_command_parses_simvlm_large_and_names_the_missing_data(tmp_path):
    """`python -m t5x.train --gin_file=gin/simvlm_large.gin` from the repository root: every include resolves,
    and with no C4 prepared the run stops at once with our message (raised where both trainers pass)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SIMVLM_IGNORE_T5X", "SIMVLM_USE_T5X")}
    done = run_module(
        "t5x.train",
        "--gin_file=gin/simvlm_large.gin",
        f"--gin.MODEL_DIR='{tmp_path / 'large'}'",
        f"--tfds_data_dir={tmp_path / 'empty_tfds'}",
        env=env,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert done.returncode != 0
    assert "Unable to open file" not in done.stderr
    assert "`tfds build c4/en" in done.stderr or "`tfds build laion400m/images" in done.stderr, done.stderr[-3000:]


def test_the_smoke_command_of_docs_t5x_md_word_for_word(embedded_data_dir, tmp_path):
    """docs/t5x.md's CPU smoke command, as printed there (only its MODEL_DIR moved to a temporary folder),
    run by bash from the repository root."""
    import subprocess
    import sys

    with open(os.path.join(REPO_ROOT, "docs", "t5x.md")) as f:
        blocks = re.findall(r"```bash\n(.*?)\n```", f.read(), re.S)
    (smoke,) = [b for b in blocks if "t5x.train" in b and "gin/tiny_cpu.gin" in b]
    command = smoke.replace("/tmp/t5x_tiny", str(tmp_path / "t5x_tiny"))
    env = {k: v for k, v in os.environ.items() if k not in ("SIMVLM_IGNORE_T5X", "SIMVLM_USE_T5X")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    done = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    assert checkpoints.latest_step(str(tmp_path / "t5x_tiny")) == 2
