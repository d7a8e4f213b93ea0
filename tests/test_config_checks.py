"""Configuration errors are caught before anything compiles, each naming the problem and the fix.

The command-line cases run the real `python -m simvlm_jax.train`; they fail within seconds of start-up.
"""

import errno
import os
import shutil
from types import SimpleNamespace

import jax.numpy as jnp
import pytest

from simvlm_jax import checkpoints, config_checks
from simvlm_jax.network import tiny_config
from tests.conftest import run_module

TINY = ["--gin_file=gin/tiny_cpu.gin", "--gin.BATCH_SIZE=8"]


def _fails(tmp_path, *args, env=None):
    done = run_module("simvlm_jax.train", *TINY, f"--gin.MODEL_DIR={tmp_path / 'run'}", *args, env=env, timeout=300)
    assert done.returncode != 0, done.stdout[-2000:]
    assert "step 1/" not in done.stdout  # nothing trained (or compiled)
    return done.stderr


@pytest.mark.parametrize("args,expected", [
    (["--gin.TASK_FEATURE_LENGTHS={'inputs': 100, 'targets': 32, 'image': 64}"],
     ["TASK_FEATURE_LENGTHS['inputs']=100 exceeds the model's max_text_length 64", "lower it to at most 64"]),
    (["--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32, 'image': 60}"],
     ["TASK_FEATURE_LENGTHS['image']=60 cannot be tiled", "stride is 16 pixels", "e.g. 48 or 64"]),
    (["--gin.network.SimVLMConfig.vocab_size=1000"],
     ["VOCABULARY has 2000 ids but the model's embedding table has vocab_size=1000",
      "set network.SimVLMConfig.vocab_size = 2000"]),
    (["--gin.TRAIN_STEP=3"], ["Gin macro TRAIN_STEP is set", "Did you mean TRAIN_STEPS"]),
    (["--gin.train.total_step=3"], ["train() has no argument 'total_step'", "did you mean train.total_steps"]),
    (["--gin.utils.SaveCheckpointConfig.perod=3"], ["Did you mean utils.SaveCheckpointConfig.period?"]),
    (["--gin.MIXTURE_OR_TASK_NAME=embedded_prefixlm_mixx"],
     ["No SeqIO task or mixture named 'embedded_prefixlm_mixx'", "Did you mean 'embedded_prefixlm_mix'"]),
])
def test_command_line_configuration_errors(embedded_data_dir, tmp_path, args, expected):
    stderr = _fails(tmp_path, *args)
    for text in expected:
        assert text in stderr, stderr[-3000:]


def test_batch_size_not_divisible_by_the_data_parallel_size(embedded_data_dir, tmp_path):
    stderr = _fails(tmp_path, "--gin.BATCH_SIZE=3", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert "BATCH_SIZE=3 is not divisible by the data-parallel size 2" in stderr, stderr[-3000:]


def test_checkpoint_with_another_vocabulary_is_refused_before_restoring(model_dir, tmp_path):
    stderr = _fails(tmp_path, f"--gin.utils.RestoreCheckpointConfig.path={model_dir}/checkpoint_1",
                    "--gin.network.SimVLMConfig.vocab_size=3000")
    assert "was trained with a vocabulary of 2000 ids" in stderr and "this model has 3000" in stderr, stderr[-3000:]
    assert "use the checkpoint's VOCABULARY" in stderr


def test_model_dir_that_is_a_file_or_unwritable(embedded_data_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    done = run_module("simvlm_jax.train", *TINY, f"--gin.MODEL_DIR={blocker}", timeout=300)
    assert done.returncode != 0 and "is a file, not a directory" in done.stderr, done.stderr[-2000:]
    done = run_module("simvlm_jax.train", *TINY, "--gin.MODEL_DIR=/proc/simvlm_run", timeout=300)
    assert done.returncode != 0 and "is not writable" in done.stderr and "--gin.MODEL_DIR=" in done.stderr


def test_model_dir_without_room_for_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10 << 20, used=9 << 20, free=1 << 20))
    with pytest.raises(config_checks.ConfigError, match=r"has 1.0 MiB free but one checkpoint needs about 15.0 MiB"):
        config_checks.check_model_dir(str(tmp_path / "run"), needed_bytes=10 << 20)
    config_checks.check_model_dir(str(tmp_path / "run"), needed_bytes=100 << 10)  # fits


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model_dir = str(tmp_path / "run")
    manager = checkpoints.CheckpointManager(model_dir, keep=1)
    tree = checkpoints.to_t5x_tree({"w": jnp.ones((3,))}, jnp.int32(1), {})
    manager.save(1, tree)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(manager._checkpointer, "save", disk_full)
    with pytest.raises(checkpoints.CheckpointSaveError, match="No space left on device.*checkpoint_1 is intact"):
        manager.save(2, checkpoints.to_t5x_tree({"w": jnp.zeros((3,))}, jnp.int32(2), {}))
    assert sorted(os.listdir(model_dir)) == ["checkpoint_1"]  # not removed by keep=1, no .tmp left
    restored = manager.restore(checkpoints.checkpoint_dir(model_dir, 1), tree)
    assert float(restored["target"]["w"][0]) == 1.0


def test_interrupted_saves_are_removed_on_start(tmp_path):
    model_dir = tmp_path / "run"
    (model_dir / "checkpoint_4.tmp" / "state").mkdir(parents=True)
    (model_dir / "checkpoint_3").mkdir()
    assert checkpoints.remove_incomplete(str(model_dir)) == ["checkpoint_4.tmp"]
    assert sorted(os.listdir(model_dir)) == ["checkpoint_3"]


def test_image_size_and_feature_length_checks_directly():
    config = tiny_config(image_size=64)
    config_checks.check_image_size(64, config)
    config_checks.check_image_size(128, config)  # another resolution: the position table is resized
    with pytest.raises(config_checks.ConfigError, match="multiple of 16"):
        config_checks.check_image_size(72, config)
    vit = tiny_config(num_conv_blocks=0, patch_size=8, image_size=64)
    with pytest.raises(config_checks.ConfigError, match="patch_size=8"):
        config_checks.check_image_size(20, vit)
    with pytest.raises(config_checks.ConfigError, match="'targets'"):
        config_checks.check_feature_lengths({"inputs": 4, "image": 64}, config)
