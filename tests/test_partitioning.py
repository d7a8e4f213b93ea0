"""The logical-axis table and the mesh: the same step on 1 device and on 8 emulated devices."""

import json

import pytest
from flax.linen import partitioning as nn_partitioning
from jax.sharding import PartitionSpec as P

from simvlm_jax.training import partitioning
from tests.helpers import REPO_ROOT, run_module


def test_rules_shard_what_they_should():
    rules = partitioning.LOGICAL_AXIS_RULES
    assert nn_partitioning.logical_to_mesh_axes(("embed", "mlp"), rules) == P("fsdp", "model")
    assert nn_partitioning.logical_to_mesh_axes(("vocab", "embed"), rules) == P("model", "fsdp")
    # Activations: batch over data x fsdp; embed then cannot reuse fsdp and stays whole.
    assert nn_partitioning.logical_to_mesh_axes(("batch", "length", "embed"), rules) == P(("data", "fsdp"), None, None)
    assert nn_partitioning.logical_to_mesh_axes(("conv_height", "conv_width", "conv_in", "conv_out"), rules) == P(
        None, None, None, None
    )


def test_additional_rules_cover_every_name_t5x_lacks():
    extra = dict(partitioning.simvlm_additional_rules())
    assert {"conv_in", "conv_out", "image_positions", "text_positions", "image_index"} <= set(extra)
    assert "embed" not in extra and all(v is None for v in extra.values())


def test_batch_size_must_divide_the_data_parallel_size():
    partitioner = partitioning.PjitPartitioner()
    assert partitioner.get_data_layout(4).batch_size == 4
    with pytest.raises(ValueError, match="not divisible"):
        partitioning.PjitPartitioner.get_data_layout(_FakeMesh(3), 4)


class _FakeMesh:
    def __init__(self, size):
        self.data_parallel_size = size


def test_train_step_on_an_8_device_mesh_matches_one_device():
    """data=4 x model=2 and data=2 x fsdp=2 x model=2 against 1 device, in a subprocess whose XLA
    flags force 8 CPU devices (tests/mesh_step_check.py)."""
    done = run_module(
        "tests.mesh_step_check", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": REPO_ROOT}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    for mesh in ("data4_model2", "data2_fsdp2_model2", "scanned_data2_fsdp2_model2"):
        single = result["scanned_single_loss" if mesh.startswith("scanned") else "single_loss"]
        assert abs(result[mesh]["loss"] - single) < 1e-5, result
        assert result[mesh]["max_param_diff"] < 1e-5, result  # one SGD step, same update
        # the MLP kernel [embed, mlp] really is split: mlp over model=2 (and embed over fsdp=2)
        assert result[mesh]["mlp_shard_shape"][1] * 2 == result[mesh]["mlp_full_shape"][1]
    assert result["data2_fsdp2_model2"]["mlp_shard_shape"][0] * 2 == result["data2_fsdp2_model2"]["mlp_full_shape"][0]


@pytest.mark.parametrize("saved_on", ["data8", "data2_fsdp2_model2"])
def test_a_checkpoint_restores_onto_other_meshes_with_equal_values(saved_on):
    """Saved from one mesh, restored by the trainer's CheckpointManager onto data 8, data 2 x model 4,
    fsdp 8, data 2 x fsdp 2 x model 2 and one device (tests/mesh_restore_check.py, 8 forced CPU devices):
    every array of the train state equal, laid out as the target mesh says. (2 processes -> 1 process:
    tests/test_multiprocess.py.)"""
    done = run_module(
        "tests.mesh_restore_check",
        saved_on,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": REPO_ROOT},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert set(result) == {"data8", "data2_model4", "fsdp8", "data2_fsdp2_model2", "one_device"}
    for mesh, found in result.items():
        assert found["all_equal"] and found["same_sharding_as_layout"] and found["leaves"] > 100, (mesh, found)
    # the targets really differ: [embed 128, mlp 512] split over model 4, over fsdp 8, over both, or not at all
    assert result["data2_model4"]["mlp_shard_shape"] == [128, 128]
    assert result["fsdp8"]["mlp_shard_shape"] == [16, 512]
    assert result["data2_fsdp2_model2"]["mlp_shard_shape"] == [64, 256]
    assert result["one_device"]["devices"] == 1 and result["one_device"]["mlp_shard_shape"] == [128, 512]
