"""Every reader of a checkpoint outside training verifies it first (`checkpoints.read_verified_state`):
inspect_checkpoint, eval / infer (`restore_for_inference`) and caption refuse a flipped byte in one line
naming the file, instead of loading NaN parameters; `--compare` counts NaN and Inf as differences; a model
dir's newest checkpoint deleted while it is read gives way to the newest one left."""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from simvlm_jax.cli import model_dir as restore
from simvlm_jax.training import checkpoint_integrity, checkpoints
from tests.helpers import inspect_checkpoint, run_module


def _largest_state_file(checkpoint: str) -> str:
    files = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(checkpoint, "state")) for f in names]
    return max(files, key=os.path.getsize)


@pytest.fixture
def corrupt_copy(model_dir, tmp_path):
    """The session's tiny model dir, copied, with three bytes flipped in its largest parameter file."""
    copy = str(tmp_path / "run")
    shutil.copytree(model_dir, copy)
    path = _largest_state_file(os.path.join(copy, "checkpoint_1"))
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        for k in range(3):
            data[len(data) // 2 + 7 * k] ^= 0x5A
        f.seek(0)
        f.write(data)
    return copy, os.path.relpath(path, os.path.join(copy, "checkpoint_1"))


def test_inspect_checkpoint_refuses_a_flipped_byte_naming_the_file(corrupt_copy):
    copy, flipped = corrupt_copy
    listed = inspect_checkpoint(copy)
    assert listed.returncode == 2 and listed.stdout == ""
    (line,) = listed.stderr.strip().splitlines()
    assert line == f"error: checkpoint_1 is corrupt: {flipped} does not match its checksum (the data changed after " + (
        "it was written)."
    )


def test_eval_and_infer_refuse_a_flipped_byte_before_loading(corrupt_copy, embedded_data_dir):
    copy, flipped = corrupt_copy
    with pytest.raises(checkpoint_integrity.CorruptCheckpointError, match=f"checkpoint_1 is corrupt: {flipped}"):
        restore.restore_for_inference(copy, "embedded_heldout_captioning", None, "simvlm_jax.tasks", "validation")


def test_caption_refuses_a_flipped_byte_in_one_line(corrupt_copy, tmp_path):
    copy, flipped = corrupt_copy
    image = str(tmp_path / "red.png")
    Image.fromarray(np.full((64, 64, 3), (200, 30, 30), np.uint8)).save(image)
    done = run_module("simvlm_jax.caption", f"--checkpoint={copy}", image)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: checkpoint_1 is corrupt: {flipped}")


def test_compare_counts_nan_and_inf_as_differences(model_dir, tmp_path):
    params = checkpoints.load_params(model_dir)
    kernel = np.array(params["decoder"]["layers_0"]["mlp"]["wi"]["kernel"])
    kernel[0, 0] = np.nan
    params["decoder"]["layers_0"]["mlp"]["wi"]["kernel"] = jnp.asarray(kernel)
    with_nan = str(tmp_path / "nan_run")
    checkpoints.CheckpointManager(with_nan).save(1, checkpoints.to_t5x_tree(params, jnp.int32(1), {}))

    for a, b in ((model_dir, with_nan), (with_nan, with_nan)):
        compared = inspect_checkpoint(a, "--compare", b)
        assert compared.returncode == 0, compared.stderr
        lines = compared.stdout.strip().splitlines()
        assert lines[-1] == "max_abs_diff: inf", lines[-3:]
        (nan_line,) = [line for line in lines if line.startswith("decoder/layers_0/mlp/wi/kernel ")]
        assert "non-finite values (NaN/Inf)" in nan_line
    same = inspect_checkpoint(model_dir, "--compare", model_dir)
    assert same.stdout.strip().splitlines()[-1] == "max_abs_diff: 0"


def test_a_newest_checkpoint_deleted_while_read_gives_way_to_the_next(model_dir, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    shutil.copytree(model_dir, run)
    shutil.copytree(os.path.join(run, "checkpoint_1"), os.path.join(run, "checkpoint_2"))
    read = checkpoints.read_state_as_numpy

    def deleted_under_the_reader(state_dir):
        if "checkpoint_2" in state_dir:  # a training run's keep-N removes it mid-read
            shutil.rmtree(os.path.dirname(state_dir))
            raise AttributeError("'NoneType' object has no attribute 'tree'")  # what Orbax raised then
        return read(state_dir)

    monkeypatch.setattr(checkpoints, "read_state_as_numpy", deleted_under_the_reader)
    directory, _ = checkpoints.load_verified_params(run)
    assert directory == os.path.join(run, "checkpoint_1")
    with pytest.raises(FileNotFoundError, match="does not exist"):  # a named checkpoint is not replaced
        checkpoints.load_verified_params(os.path.join(run, "checkpoint_2"))
