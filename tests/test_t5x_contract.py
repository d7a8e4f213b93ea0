"""The contract with real T5X, checked without T5X installed (CI cannot install it; docs/t5x.md).

T5X's interfaces are recorded here as read from its source at commit cc342d4 (t5x/train.py `train`,
t5x/utils.py config records, t5x/trainer.py `Trainer`, t5x/partitioning.py `PjitPartitioner`); the gin files
may bind nothing else, or `python -m t5x.train` stops at parse time. The checkpoint half compares our
checkpoint tree with the tree of a checkpoint T5X wrote (tests/fixtures/t5x_tiny_checkpoint_tree.json: its
paths and shapes, read from `state/_METADATA` of a `python -m t5x.train --gin_file=gin/tiny_cpu.gin`
run), so that either trainer restores the other's model dir, optimizer moments and data iterator included.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from simvlm_jax.cli import gin_flags
from simvlm_jax.training import checkpoints
from tests.helpers import FINETUNE_GINS, GIN_DIR, REPO_ROOT

T5X_TRAIN_ARGUMENTS = {
    "model", "train_dataset_cfg", "train_eval_dataset_cfg", "infer_eval_dataset_cfg", "checkpoint_cfg",
    "partitioner", "trainer_cls", "model_dir", "total_steps", "eval_steps", "eval_period", "relative_steps",
    "stats_period", "random_seed", "use_hardware_rng", "summarize_config_fn", "inference_evaluator_cls",
    "get_dataset_fn", "concurrent_metrics", "actions", "train_eval_get_dataset_fn", "run_eval_before_training",
    "train_state_initializer_cls", "use_orbax", "verify_matching_vocabs_fn", "gc_period",
}  # fmt: skip
T5X_FIELDS = {
    "utils.DatasetConfig": {
        "mixture_or_task_name", "task_feature_lengths", "split", "batch_size", "shuffle", "seed", "use_cached",
        "pack", "use_custom_packing_ops", "module", "use_memory_cache", "trim_output_features",
        "runtime_preprocessors", "num_prefetch_threads", "num_workers",
    },
    "utils.SaveCheckpointConfig": {
        "dtype", "period", "checkpoint_steps", "keep", "keep_dataset_checkpoints", "save_dataset",
        "checkpointer_cls", "state_transformation_fns", "checkpoint_manager_cls",
    },
    "utils.RestoreCheckpointConfig": {
        "path", "mode", "assignment_map", "strict", "fallback_to_scratch", "dtype", "restore_dataset",
        "checkpointer_cls", "state_transformation_fns", "checkpoint_manager_cls",
    },
    "utils.CheckpointConfig": {"save", "restore"},
    "trainer.Trainer": {"num_microbatches", "learning_rate_fn", "weight_metrics_computer"},
    "partitioning.PjitPartitioner": {
        "num_partitions", "model_parallel_submesh", "params_on_devices", "backend", "ici_mesh_shape",
        "dcn_mesh_shape", "logical_axis_rules",
    },
    "partitioning.standard_logical_axis_rules": {
        "activation_partitioning_dims", "parameter_partitioning_dims", "additional_rules",
    },
}  # fmt: skip
EXPERIMENTS = {
    "tiny_cpu.gin": [],
    "tiny_easy_vqa.gin": ["INITIAL_CHECKPOINT_PATH = '/tmp/pretrained/checkpoint_1200'"],
    "simvlm_base.gin": [],
    "simvlm_large.gin": [],
    "simvlm_huge.gin": [],
    **{name: ["INITIAL_CHECKPOINT_PATH = '/tmp/pretrained/checkpoint_1200'"] for name in FINETUNE_GINS},
}
FIXTURE = os.path.join(REPO_ROOT, "tests", "fixtures", "t5x_tiny_checkpoint_tree.json")


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_the_gin_files_bind_only_what_t5x_has(gin_entry_points, experiment):
    import gin

    gin.parse_config_files_and_bindings(
        [os.path.join(GIN_DIR, experiment)], EXPERIMENTS[experiment] + ["MODEL_DIR = '/tmp/x'"], finalize_config=False
    )
    checked = 0
    for binding in gin_flags._bindings():
        if binding.selector == "train_script.train":
            assert binding.arg_name in T5X_TRAIN_ARGUMENTS, f"T5X's train() has no {binding.arg_name!r}"
            checked += 1
        elif binding.selector in T5X_FIELDS:
            assert binding.arg_name in T5X_FIELDS[binding.selector], (binding.selector, binding.arg_name)
            checked += 1
    assert checked > 30


def test_the_checker_sees_a_binding_t5x_lacks(gin_entry_points):
    import gin

    gin.parse_config_files_and_bindings(
        [os.path.join(GIN_DIR, "tiny_cpu.gin")], ["MODEL_DIR = '/tmp/x'", "train.prefetch_batches = 4"],
        finalize_config=False,
    )  # fmt: skip
    extra = [b.arg_name for b in gin_flags._bindings() if b.selector == "train_script.train"]
    assert "prefetch_batches" in extra and "prefetch_batches" not in T5X_TRAIN_ARGUMENTS


def _our_checkpoint_tree():
    """Paths and shapes of the tree our trainer writes for tiny_cpu.gin's model and optimizer."""
    from simvlm_jax.data.feature_converter import model_input_specs
    from simvlm_jax.model import simvlm_model as models
    from simvlm_jax.network import SimVLMNetwork, tiny_config
    from simvlm_jax.training import optimizers, partitioning
    from simvlm_jax.training.trainer import TrainStateLayout

    class Vocabulary:
        vocab_size = 2000
        eos_id = 1

    schedule = optax.linear_schedule(0.0, 1e-3, 10)  # a schedule, as the gins bind: its count is state too
    optimizer = optimizers.chain(
        [optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01, mask=optimizers.weight_decay_mask())]
    )
    model = models.SimVLMModel(SimVLMNetwork(tiny_config()), Vocabulary(), Vocabulary(), optimizer)
    shapes, types = model_input_specs({"inputs": 32, "targets": 32, "image": 64}, 8)
    layout = TrainStateLayout(model, partitioning.PjitPartitioner(num_partitions=1), shapes, types)
    tree = layout.abstract_state().to_checkpoint_tree()
    return {"/".join(path): list(leaf.shape) for path, leaf in traverse_util.flatten_dict(tree).items()}


def test_our_checkpoint_tree_is_the_tree_t5x_writes():
    with open(FIXTURE) as f:
        t5x_tree = json.load(f)["tree"]
    ours = _our_checkpoint_tree()
    assert sorted(set(t5x_tree) - set(ours)) == [] and sorted(set(ours) - set(t5x_tree)) == []
    assert {path: ours[path] for path in t5x_tree} == t5x_tree
    assert any(path.startswith("state/param_states/1/0/mu/") for path in t5x_tree)  # adamw's moments


def test_the_optimizer_state_round_trips_through_t5x_form():
    params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}, "norm": {"scale": jnp.ones(2)}}
    from simvlm_jax.training import optimizers

    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(1e-2, weight_decay=0.1, mask=optimizers.weight_decay_mask())
    )
    state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = optimizer.update(grads, state, params)
    on_disk = checkpoints.optimizer_state_dict(state)
    flat = traverse_util.flatten_dict(on_disk, sep="/")
    assert set(flat) == {"1/0/count"} | {
        f"1/0/{m}/{p}" for m in ("mu", "nu") for p in ("dense/kernel", "dense/bias", "norm/scale")
    }
    back = checkpoints.optimizer_state_from_dict(optimizer.init(params), on_disk)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="has no '1/0/mu/dense/"):
        checkpoints.optimizer_state_from_dict(optimizer.init(params), {"1": {"0": {"count": 1}}})


def _dataset_config(cls, name, module="simvlm_jax.tasks", split="train"):
    return cls(name, {"inputs": 8, "targets": 8, "image": 64}, split, 8, False, 0, module=module)


def test_under_t5x_a_dataset_config_checks_its_task_and_data_when_built(tmp_path, embedded_data_dir):
    """What `t5x_compat.utils.DatasetConfig` is under `t5x.train` (T5X's class with our checks), built here on
    our own DatasetConfig: the trainer-independent one-line errors appear when gin builds the config."""
    import seqio

    from simvlm_jax.t5x_compat.utils import checked_dataset_config
    from simvlm_jax.training import run_config
    from simvlm_jax.training.config_checks import ConfigError

    checked = checked_dataset_config(run_config.DatasetConfig)
    good = _dataset_config(checked, "embedded_prefixlm_mix")
    assert isinstance(good, run_config.DatasetConfig) and good.batch_size == 8
    with pytest.raises(ConfigError, match=r"No SeqIO task or mixture named 'embedded_prefixlm_mixx'.*Did you mean"):
        _dataset_config(checked, "embedded_prefixlm_mixx")
    with pytest.raises(ConfigError, match=r"MIXTURE_OR_TASK_MODULE='no_such_tasks' cannot be imported"):
        _dataset_config(checked, "my_task", module="no_such_tasks")
    seqio.set_tfds_data_dir_override(str(tmp_path))  # an empty TFDS data dir: C4 is not prepared there
    try:
        with pytest.raises(ConfigError, match=r"Task 'c4_en_prefixlm' reads the TFDS dataset .*`tfds build c4/en"):
            _dataset_config(checked, "simvlm_pretrain_laion_c4")
    finally:
        seqio.set_tfds_data_dir_override(None)
