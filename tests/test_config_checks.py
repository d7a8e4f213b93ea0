"""Configuration errors are caught before any data or model is built, each naming the problem and the fix.

Most cases run in-process through `simvlm_jax.train.configure_and_train` (what the command runs after its
flags) and format the error as the command prints it (`cli.errors`); one case runs the real command to
check what a user sees: two lines on stderr, exit status 2, MODEL_DIR not created.
"""

import errno
import os
import shutil
from types import SimpleNamespace

import jax.numpy as jnp
import pytest

from simvlm_jax import train as train_entry
from simvlm_jax.cli import errors
from simvlm_jax.network import tiny_config
from simvlm_jax.training import checkpoints, config_checks
from tests.helpers import run_module

TINY = ["gin/tiny_cpu.gin"]


def _config_error(tmp_path, *bindings: str) -> str:
    """The message the command would print for these gin bindings (fails if training would start)."""
    model_dir = tmp_path / "run"
    with pytest.raises(Exception) as info:
        train_entry.configure_and_train(
            TINY, [f"MODEL_DIR = '{model_dir}'", "BATCH_SIZE = 8", "TRAIN_STEPS = 1", *bindings], finalize_config=False
        )
    message = errors.configuration_message(info.value, "train")
    assert message is not None, f"not reported as a configuration error: {info.value!r}"
    assert not model_dir.exists()  # nothing was written
    return message


@pytest.mark.parametrize(
    "bindings,expected",
    [
        (
            ["TASK_FEATURE_LENGTHS = {'inputs': 100, 'targets': 32, 'image': 64}"],
            ["TASK_FEATURE_LENGTHS['inputs']=100 exceeds the model's max_text_length 64", "lower it to at most 64"],
        ),
        (
            ["TASK_FEATURE_LENGTHS = {'inputs': 32, 'targets': 32, 'image': 60}"],
            ["TASK_FEATURE_LENGTHS['image']=60 cannot be tiled", "stride is 16 pixels", "e.g. 48 or 64"],
        ),
        (
            ["TASK_FEATURE_LENGTHS = {'inputs': 32, 'targets': 32, 'image': 4096}"],
            ["This run needs at least", "GiB of memory", "but the machine has", "lower BATCH_SIZE, the image size"],
        ),
        (
            ["network.SimVLMConfig.vocab_size = 1000"],
            [
                "VOCABULARY has 2000 ids but the model's embedding table has vocab_size=1000",
                "set network.SimVLMConfig.vocab_size = 2000",
            ],
        ),
        (["network.SimVLMConfig.num_heads = -1"], ["SimVLMConfig.num_heads must be a positive integer, got -1"]),
        (["TRAIN_STEP = 3"], ["Gin macro TRAIN_STEP is set", "Did you mean TRAIN_STEPS"]),
        (
            ["train.total_step = 3"],
            ["train() has no argument 'total_step'", "did you mean train.total_steps"],
        ),
        (["utils.SaveCheckpointConfig.perod = 3"], ["Did you mean utils.SaveCheckpointConfig.period?"]),
        (
            ["network.SimVLMConfig.emb_dimm = 3"],
            [
                "doesn't have a parameter named 'emb_dimm'",
                "(bindings string line",
                "Did you mean network.SimVLMConfig.emb_dim",
            ],
        ),
        (
            ["MIXTURE_OR_TASK_NAME = 'embedded_prefixlm_mixx'"],
            ["No SeqIO task or mixture named 'embedded_prefixlm_mixx'", "Did you mean 'embedded_prefixlm_mix'"],
        ),
        (
            ["MIXTURE_OR_TASK_NAME = 'embedded_scenes_captioning'"],
            ["Task 'embedded_scenes_captioning' has no 'train' split (it has 'validation', 'heldout')"],
        ),
        (
            ["MIXTURE_OR_TASK_MODULE = 'no_such_tasks_module'"],
            ["MIXTURE_OR_TASK_MODULE='no_such_tasks_module' cannot be imported", "PYTHONPATH"],
        ),
        (["BATCH_SIZE = 0"], ["BATCH_SIZE must be a positive integer, got 0"]),
        (["CHECKPOINTS_TO_KEEP = -1"], ["CHECKPOINTS_TO_KEEP must be a positive integer", "None keeps every"]),
        (["TRAIN_STEPS = 0"], ["total_steps (0) must be larger than start_step (0): set TRAIN_STEPS above"]),
        (["train.bad_record_policy = 'skipp'"], ["bad_record_policy must be one of"]),
        (["train.max_bad_records_in_a_row = 0"], ["train.max_bad_records_in_a_row must be a positive integer"]),
        (["train.corrupt_checkpoint_policy = 'ignore'"], ["corrupt_checkpoint_policy must be one of"]),
        # A full-size preset on the 2,000-piece embedded vocabulary (what an unset $SIMVLM_SPM_MODEL gives).
        (
            ["network.SimVLMConfig.preset = 'base'", "network.SimVLMConfig.dtype = 'float32'"],
            [
                "VOCABULARY has 2000 ids but SimVLM-base's embedding table has 32000 rows",
                "Set $SIMVLM_SPM_MODEL to a 32000-piece SentencePiece model",
                "--gin.train.allow_vocabulary_size_mismatch=True",
            ],
        ),
        # T5X settings this trainer does not implement are refused, never ignored.
        (
            ["utils.SaveCheckpointConfig.dtype = 'bfloat16'"],
            ["utils.SaveCheckpointConfig.dtype = 'bfloat16' is not supported", "float32 parameters"],
        ),
        (
            ["train/utils.DatasetConfig.pack = True"],
            ["utils.DatasetConfig.pack = True is not supported", "cannot be packed"],
        ),
        (
            [
                "utils.RestoreCheckpointConfig.path = '/tmp/some_model_dir'",
                "utils.RestoreCheckpointConfig.mode = 'specific'",
            ],
            ["mode='specific' restores one checkpoint_<step> folder", "set mode='latest'"],
        ),
    ],
)
def test_configuration_errors(gin_entry_points, embedded_data_dir, tmp_path, bindings, expected):
    message = _config_error(tmp_path, *bindings)
    assert len(message.splitlines()) <= 2, message
    for text in expected:
        assert text in message, message


def test_checkpoint_with_another_vocabulary_is_refused_before_restoring(gin_entry_points, model_dir, tmp_path):
    message = _config_error(
        tmp_path,
        f"utils.RestoreCheckpointConfig.path = '{model_dir}/checkpoint_1'",
        "network.SimVLMConfig.vocab_size = 3000",
    )
    assert "was trained with a vocabulary of 2000 ids" in message and "this model has 3000" in message, message
    assert "use the checkpoint's VOCABULARY" in message


def test_a_resume_with_fewer_layers_names_the_extra_parameters_and_the_recorded_field(
    gin_entry_points, model_dir, tmp_path
):
    """A checkpoint holding a decoder layer the model lacks is refused (restoring it would drop the layer
    silently), naming the parameters and the field that differs from the run's model_config.json."""
    message = _config_error(
        tmp_path,
        f"utils.RestoreCheckpointConfig.path = '{model_dir}/checkpoint_1'",
        "network.SimVLMConfig.num_decoder_layers = 1",
    )
    assert "0 missing and" in message and "decoder/layers_1/" in message and "not in the model" in message, message
    assert "network.num_decoder_layers: 2 recorded, 1 now" in message, message
    assert len(message.splitlines()) <= 2, message


def test_a_refused_resume_leaves_the_model_dirs_record_as_it_was(gin_entry_points, model_dir, tmp_path):
    """The reproduction: resuming a run with a decoder layer fewer used to rewrite model_config.json before
    the restore failed, and `caption` then rebuilt the wrong model from it."""
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    before = {name: (run / name).read_bytes() for name in ("model_config.json", "config.gin")}
    with pytest.raises(config_checks.ConfigError, match="extra parameter"):
        train_entry.configure_and_train(
            TINY,
            [
                f"MODEL_DIR = '{run}'",
                "BATCH_SIZE = 8",
                "TRAIN_STEPS = 3",
                "network.SimVLMConfig.num_decoder_layers = 1",
            ],
            finalize_config=False,
        )
    assert {name: (run / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(run)) == sorted(os.listdir(model_dir))  # nothing added, nothing moved


def test_a_resume_with_another_width_is_not_blamed_on_the_vocabulary(gin_entry_points, model_dir, tmp_path):
    message = _config_error(
        tmp_path,
        f"utils.RestoreCheckpointConfig.path = '{model_dir}/checkpoint_1'",
        "network.SimVLMConfig.emb_dim = 64",
    )
    assert "vocabulary" not in message.split(" Use ")[0].lower(), message
    assert "network.emb_dim:" in message and "64 now" in message, message


def test_an_unquoted_path_with_a_space_names_the_macro_and_the_quoting(gin_entry_points, tmp_path):
    message = _config_error(tmp_path, "MODEL_DIR = /tmp/my run")
    assert message.startswith("Cannot parse the binding of MODEL_DIR ('/tmp/my run'"), message
    assert "--gin.MODEL_DIR=\"'/tmp/my run'\"" in message, message


def test_a_missing_checkpoint_to_restore_is_named_before_any_data(gin_entry_points, embedded_data_dir, tmp_path):
    message = _config_error(
        tmp_path,
        f"utils.RestoreCheckpointConfig.path = '{tmp_path}/nowhere/checkpoint_5'",
        "utils.RestoreCheckpointConfig.fallback_to_scratch = False",
    )
    assert "nowhere/checkpoint_5" in message and "INITIAL_CHECKPOINT_PATH" in message, message


def test_model_dir_that_is_a_file_or_unwritable(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(config_checks.ConfigError, match="is a file, not a directory"):
        config_checks.check_model_dir(str(blocker))
    with pytest.raises(config_checks.ConfigError, match="cannot be made"):
        config_checks.check_model_dir(str(blocker / "run"))
    with pytest.raises(config_checks.ConfigError, match="is not writable.*--gin.MODEL_DIR="):
        config_checks.check_model_dir("/proc/simvlm_run")
    config_checks.check_model_dir(str(tmp_path / "new" / "run"))
    assert not (tmp_path / "new").exists()  # checked, not created


@pytest.mark.subprocess
def test_the_command_reports_a_mistake_in_two_lines_and_writes_nothing(embedded_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    done = run_module(
        "simvlm_jax.train",
        "--gin_file=gin/tiny_cpu.gin",
        f"--gin.MODEL_DIR={model_dir}",
        "--gin.network.SimVLMConfig.emb_dimm=3",
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        "Configuration error: Configurable 'network.SimVLMConfig' doesn't have a parameter named 'emb_dimm'. "
        "(bindings string line 2: network.SimVLMConfig.emb_dimm = 3)",
        "Did you mean network.SimVLMConfig.emb_dim or network.SimVLMConfig.mlp_dim or network.SimVLMConfig.head_dim?",
    ]
    assert done.stdout == "" and not model_dir.exists()


@pytest.mark.subprocess
def test_batch_size_not_divisible_by_the_data_parallel_size(embedded_data_dir, tmp_path):
    done = run_module(
        "simvlm_jax.train",
        "--gin_file=gin/tiny_cpu.gin",
        f"--gin.MODEL_DIR={tmp_path / 'run'}",
        "--gin.BATCH_SIZE=3",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "BATCH_SIZE=3 is not divisible by the data-parallel size 2" in done.stderr, done.stderr[-3000:]


def test_model_dir_without_room_for_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10 << 20, used=9 << 20, free=1 << 20))
    with pytest.raises(config_checks.ConfigError, match=r"has 1.0 MiB free but one checkpoint needs about 15.0 MiB"):
        config_checks.check_model_dir(str(tmp_path / "run"), needed_bytes=10 << 20)
    config_checks.check_model_dir(str(tmp_path / "run"), needed_bytes=100 << 10)  # fits


def test_preflight_wants_room_for_the_kept_checkpoints_and_one_more(gin_entry_points, tmp_path, monkeypatch):
    """CHECKPOINTS_TO_KEEP=2 keeps two checkpoints while a third is written: room for three is asked."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10 << 20, used=9 << 20, free=1 << 20))
    message = _config_error(tmp_path, "CHECKPOINTS_TO_KEEP = 2")
    assert "has 1.0 MiB free but 3 more checkpoint(s) (CHECKPOINTS_TO_KEEP=2, plus the one being written)" in message


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


def test_a_smaller_vocabulary_is_refused_for_full_size_presets_only():
    vocabulary = SimpleNamespace(vocab_size=2000)
    config_checks.check_vocabulary(vocabulary, tiny_config(vocab_size=3000))  # tiny: fine
    with pytest.raises(config_checks.ConfigError, match="SimVLM-large's embedding table has 32000 rows"):
        config_checks.check_vocabulary(vocabulary, SimpleNamespace(vocab_size=32000, preset="large"))
    config_checks.check_vocabulary(
        vocabulary, SimpleNamespace(vocab_size=32000, preset="large"), allow_size_mismatch=True
    )


def test_a_task_may_add_extra_ids_to_the_models_sentencepiece_model_if_the_table_has_rows_for_them():
    # Stand-ins with what the check reads: vocab_size and the SentencePiece model file.
    model_vocabulary = SimpleNamespace(vocab_size=2000, sentencepiece_model_file="/models/spm.model")
    with_sentinels = SimpleNamespace(vocab_size=2100, sentencepiece_model_file="/models/spm.model")
    other = SimpleNamespace(vocab_size=2100, sentencepiece_model_file="/models/other.model")
    config_checks.check_task_vocabulary(with_sentinels, model_vocabulary, "span", embedding_rows=2100)
    with pytest.raises(config_checks.ConfigError, match="vocabulary of 2100 ids"):
        config_checks.check_task_vocabulary(with_sentinels, model_vocabulary, "span", embedding_rows=2000)
    with pytest.raises(config_checks.ConfigError, match="vocabulary of 2100 ids"):
        config_checks.check_task_vocabulary(other, model_vocabulary, "other", embedding_rows=2100)


def test_a_mixture_over_an_unprepared_tfds_dataset_names_it_and_how_to_prepare_it(tmp_path):
    """The docs' mixture of one's own pairs with C4, where C4 was never prepared: named before any data is read."""
    import seqio

    from simvlm_jax.data.embedded import embedded_vocabulary
    from simvlm_jax.tasks import common

    name = "test_unprepared_c4_prefixlm"
    seqio.TaskRegistry.remove(name)
    source = seqio.TfdsDataSource("c4/en:3.1.0", tfds_data_dir=str(tmp_path / "empty_tfds"))
    common.add_task(name, source, embedded_vocabulary(), common.text_only_preprocessors(text_key="text"))
    seqio.MixtureRegistry.remove(name + "_mix")
    seqio.MixtureRegistry.add(name + "_mix", [("embedded_scenes_prefixlm", 4096), (name, 512)])
    with pytest.raises(config_checks.ConfigError) as raised:
        config_checks.check_data_prepared(name + "_mix", "train")
    message = str(raised.value)
    assert f"Task '{name}' reads the TFDS dataset 'c4/en/3.1.0', which is not prepared" in message
    assert "tfds build c4/en" in message and "--tfds_data_dir" in message
