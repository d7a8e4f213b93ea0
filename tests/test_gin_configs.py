"""Every gin file in gin/ parses, binds known parameters, and required macros fail by name."""

import glob
import os
import sys

import gin
import pytest

from simvlm_jax import eval as eval_lib
from simvlm_jax import infer as infer_lib
from simvlm_jax import train as train_lib
from simvlm_jax.cli import gin_flags as gin_utils
from tests.helpers import FINETUNE_GINS, GIN_DIR

ALL_GIN_FILES = sorted(glob.glob(os.path.join(GIN_DIR, "**", "*.gin"), recursive=True))
# The downstream fine-tuning gins (gin/finetune/<dataset>.gin and <dataset>_tiny.gin): experiments too.
FINETUNE = FINETUNE_GINS
EXPERIMENTS = ["simvlm_base.gin", "simvlm_large.gin", "simvlm_huge.gin", "tiny_cpu.gin", "tiny_easy_vqa.gin", *FINETUNE]
# What an experiment leaves to the command line besides MODEL_DIR.
EXPERIMENT_FLAGS = {
    name: ["INITIAL_CHECKPOINT_PATH = '/tmp/pretrained/checkpoint_1200'"] for name in ["tiny_easy_vqa.gin", *FINETUNE]
}
# Macros a file leaves to others: model gins need TRAIN_STEPS (from a run/experiment); the run gin
# needs a MODEL, LEARNING_RATE_SCHEDULE (from a model gin); common.gin needs VOCABULARY.
RUN_GINS_REQUIRED = {
    os.path.join("runs", "pretrain.gin"): ["MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "MODEL_DIR"],
    os.path.join("runs", "eval.gin"): ["CHECKPOINT_PATH", "MIXTURE_OR_TASK_NAME", "EVAL_OUTPUT_DIR"],
    os.path.join("runs", "eval_vqa_v2_closed_set.gin"): ["CHECKPOINT_PATH", "EVAL_OUTPUT_DIR"],
    os.path.join("runs", "infer.gin"): ["CHECKPOINT_PATH", "MIXTURE_OR_TASK_NAME", "INFER_OUTPUT_DIR"],
    os.path.join("runs", "finetune.gin"): [
        "INITIAL_CHECKPOINT_PATH",
        "INITIAL_STEP",
        "MIXTURE_OR_TASK_NAME",
        "MODEL_DIR",
        "TASK_FEATURE_LENGTHS",
        "TRAIN_STEPS",
    ],
}
CONTEXT = [
    "TRAIN_STEPS = 10",
    "MODEL_DIR = '/tmp/x'",
    "VOCABULARY = None",
    "MODEL = None",
    "LEARNING_RATE_SCHEDULE = None",
]


@pytest.fixture(autouse=True)
def clean_gin(monkeypatch):
    # As under `python -m simvlm_jax.train`: gin files `import __main__ as train_script`.
    monkeypatch.setattr(sys.modules["__main__"], "train", train_lib.train, raising=False)
    monkeypatch.setattr(sys.modules["__main__"], "evaluate", eval_lib.evaluate, raising=False)
    monkeypatch.setattr(sys.modules["__main__"], "infer", infer_lib.infer, raising=False)
    gin.clear_config(clear_constants=False)
    gin.enter_interactive_mode()
    yield
    gin.clear_config(clear_constants=False)
    gin.exit_interactive_mode()


def test_every_gin_file_is_covered():
    """Each gin file is either an experiment, a run gin with its required macros listed, or a model gin."""
    names = {os.path.relpath(p, GIN_DIR) for p in ALL_GIN_FILES}
    model_gins = {n for n in names if n.startswith("models" + os.sep)}
    assert names == set(EXPERIMENTS) | set(RUN_GINS_REQUIRED) | model_gins
    assert model_gins == {os.path.join("models", f"{m}.gin") for m in ("common", "tiny", "base", "large", "huge")}


@pytest.mark.parametrize("path", ALL_GIN_FILES, ids=lambda p: os.path.relpath(p, GIN_DIR))
def test_gin_file_parses(path):
    gin.add_config_file_search_path(GIN_DIR)
    run_gin = os.path.relpath(path, GIN_DIR)
    if run_gin in RUN_GINS_REQUIRED:
        # Alone, a run gin leaves exactly the macros its header lists as required.
        gin.parse_config_files_and_bindings([path], [], finalize_config=False)
        assert gin_utils.missing_required_macros() == sorted(RUN_GINS_REQUIRED[run_gin])
        return
    name = run_gin
    bindings = EXPERIMENT_FLAGS.get(name, []) if name in EXPERIMENTS else CONTEXT
    gin.parse_config_files_and_bindings([path], bindings + ["MODEL_DIR = '/tmp/x'"], finalize_config=False)
    assert gin_utils.missing_required_macros() == []


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_builds_its_model_and_configs(experiment):
    from simvlm_jax.model import simvlm_model as models

    gin.add_config_file_search_path(GIN_DIR)
    gin.parse_config_files_and_bindings(
        [os.path.join(GIN_DIR, experiment)],
        ["MODEL_DIR = '/tmp/x'"] + EXPERIMENT_FLAGS.get(experiment, []),
        finalize_config=False,
    )
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    assert isinstance(model, models.SimVLMModel)
    lengths = gin.query_parameter("%TASK_FEATURE_LENGTHS")
    assert set(lengths) - {"num_images"} == {"inputs", "targets", "image"}
    assert lengths["image"] == model.module.config.image_size
    assert lengths.get("num_images", 1) <= model.module.config.max_images
    schedule = gin.query_parameter("%LEARNING_RATE_SCHEDULE").scoped_configurable_fn()
    steps = gin.query_parameter("%TRAIN_STEPS")
    start = gin.query_parameter("%INITIAL_STEP") if experiment in EXPERIMENT_FLAGS else 0  # fine-tuning
    peak = gin.query_parameter("%PEAK_LEARNING_RATE")
    assert float(schedule(start)) == 0.0 and abs(float(schedule(start + int(0.02 * (steps - start)))) - peak) < 1e-9
    assert abs(float(schedule(steps))) < 1e-9


def test_missing_required_macro_fails_at_once_naming_it():
    with pytest.raises(ValueError, match=r"MODEL_DIR.*--gin\.MODEL_DIR="):
        gin_utils.parse_gin_flags([GIN_DIR], [os.path.join(GIN_DIR, "tiny_cpu.gin")], [], finalize_config=False)


def test_gin_shorthand_flags_are_rewritten_and_bare_paths_quoted():
    assert gin_utils.rewrite_gin_args(
        [
            "prog",
            "--gin.MODEL_DIR=/tmp/run",
            "--gin.TRAIN_STEPS=6",
            "--gin.X='a'",
            "--gin.Y=@f()",
            "--gin.Z=gs://b/x",
            "--other=1",
        ]
    ) == [
        "prog",
        "--gin_bindings=MODEL_DIR = '/tmp/run'",
        "--gin_bindings=TRAIN_STEPS = 6",
        "--gin_bindings=X = 'a'",
        "--gin_bindings=Y = @f()",
        "--gin_bindings=Z = 'gs://b/x'",
        "--other=1",
    ]
    with pytest.raises(ValueError, match="no '='"):
        gin_utils.rewrite_gin_args(["--gin.MODEL_DIR"])


@pytest.mark.parametrize("experiment", [f for f in FINETUNE if not f.endswith("_tiny.gin")])
def test_finetune_gins_follow_the_papers_recipe(experiment):
    """gin/finetune/<dataset>.gin: the pretrained parameters with a fresh optimizer state, AdamW at a peak
    learning rate from the paper's grid, dropout 0.1 and stochastic depth 0.1, a registered task."""
    import seqio

    gin.add_config_file_search_path(GIN_DIR)
    gin.parse_config_files_and_bindings(
        [os.path.join(GIN_DIR, experiment)],
        ["MODEL_DIR = '/tmp/x'"] + EXPERIMENT_FLAGS[experiment],
        finalize_config=False,
    )
    assert gin.query_parameter("%PEAK_LEARNING_RATE") in (1e-5, 2e-5, 5e-5)
    assert gin.query_parameter("%DROPOUT_RATE") == 0.1 and gin.query_parameter("%STOCHASTIC_DEPTH_RATE") == 0.1
    assignment_map = gin.query_parameter("utils.RestoreCheckpointConfig.assignment_map")
    assert (r"state/param_states/.*", None) in assignment_map  # a fresh optimizer state
    assert all(replacement is None for _, replacement in assignment_map)  # others: new parameters kept at init
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    assert model.module.config.preset == "base" or model.module.config.emb_dim == 768
    assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") in seqio.TaskRegistry.names()
