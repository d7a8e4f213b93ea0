"""The memory planner (`python -m simvlm_jax.plan`, training/memory_plan.py): figures against hand arithmetic.

Everything here runs under jax.eval_shape (nothing of Base's or Huge's size is allocated), except one tiny
ahead-of-time compile in a child process with 4 emulated CPU devices.
"""

import json

import pytest

from simvlm_jax import plan as planner
from simvlm_jax.training import chip_fit, memory_plan
from simvlm_jax.training.memory_plan import MeshShape
from tests.helpers import entry_point_gin, run_module

F32 = 4  # bytes: parameters and AdamW moments are float32


def _read(gin_file: str) -> planner.GinRun:
    with entry_point_gin():
        return planner.read_gin_run([gin_file], [])


@pytest.fixture(scope="module")
def base():
    run = _read("gin/simvlm_base.gin")
    return run, memory_plan.train_state_sizes(run.model, run.lengths, run.rules)


@pytest.fixture(scope="module")
def huge():
    run = _read("gin/simvlm_huge.gin")
    return run, memory_plan.train_state_sizes(run.model, run.lengths, run.rules)


def _plan(run_and_sizes, mesh: str, **kwargs) -> memory_plan.MemoryPlan:
    run, sizes = run_and_sizes
    batch = kwargs.pop("batch", run.batch_size)
    return memory_plan.plan_memory(sizes, run.model.module.config, run.lengths, batch, MeshShape.parse(mesh), **kwargs)


# ----------------------------------------------------------------------------------------------- Base


def test_base_parameters_by_part_match_the_config_dims(base):
    # Base (models/base.gin): width d=768, 12 heads x 64 (hk=768), MLP m=3072, 12+12 layers, vocabulary 32,000,
    # text tables of 512 rows, 224x224 images -> a 14x14 grid (stem stride 16), ResNet-101 stem of width 64.
    d, hk, m, layers, heads = 768, 12 * 64, 3072, 12, 12
    attention = 4 * d * hk + 3 * hk + d  # q, k, v [d, h, k] and out [h, k, d] kernels, their biases
    mlp = 2 * d * m + m + d  # wi [d, m], wo [m, d] and their biases
    norm = 2 * d  # scale and bias
    relative = (2 * 14 - 1) ** 2 * heads  # a (27 x 27 offsets) x heads bias table per encoder layer
    # The stem: a 7x7 root conv + GroupNorm, then stages of (3, 4, 23) bottlenecks (inner 64 * 2**s, out 4x),
    # convs without biases; each block's first adds a 1x1 projection shortcut.
    stem, channels = 7 * 7 * 3 * 64 + 2 * 64, 64
    for stage, blocks in enumerate((3, 4, 23)):
        inner, out = 64 * 2**stage, 256 * 2**stage
        for block in range(blocks):
            c_in = channels if block == 0 else out
            stem += c_in * inner + 9 * inner * inner + inner * out + 2 * (inner + inner + out)
            stem += (c_in * out + 2 * out) if block == 0 else 0
        channels = out
    expected = {
        "token embedding": 32000 * d,  # one table, shared with the logits
        "position tables": (512 + 512 + 14 * 14) * d,  # encoder text, decoder, image positions
        "image stem": stem,
        "image projection": 1024 * d + d,  # the stem's 4 * 256 channels -> d
        "encoder self-attention": layers * attention,
        "encoder relative position": layers * relative,
        "encoder MLP": layers * mlp,
        "encoder layer norms": (2 * layers + 1) * norm,  # two per layer and the final one
        "decoder self-attention": layers * attention,
        "decoder cross-attention": layers * attention,
        "decoder MLP": layers * mlp,
        "decoder layer norms": (3 * layers + 1) * norm,
    }
    plan = _plan(base, "data:8")
    assert plan.parameters_by_part == expected
    assert plan.parameter_count == sum(expected.values()) == 252_419_408
    assert plan.parameter_bytes == F32 * plan.parameter_count


# (path, data:8, fsdp:8, model:4, fsdp:5) per-device float32 values of single Base parameters. The rules table
# maps embed -> fsdp, mlp/heads/vocab -> model, and replicates kv, relpos_buckets and the conv axes.
LEAVES = {
    "encoder/layers_0/mlp/wi/kernel": (768 * 3072, 96 * 3072, 768 * 768, 154 * 3072),  # 768/5 -> 154: XLA pads
    "shared_embedding/embedding": (32000 * 768, 32000 * 96, 8000 * 768, 32000 * 154),
    "encoder/layers_0/attention/query/kernel": (768 * 12 * 64, 96 * 12 * 64, 768 * 3 * 64, 154 * 12 * 64),
    "encoder/layers_0/image_relative_position/rel_embedding": (729 * 12, 729 * 12, 729 * 3, 729 * 12),
    "encoder/layers_0/pre_mlp_layer_norm/scale": (768, 96, 768, 154),
    "image_stem/root_conv/kernel": (7 * 7 * 3 * 64,) * 4,
}
MESHES = ("data:8", "fsdp:8", "model:4", "fsdp:5")


@pytest.mark.parametrize("column, mesh", enumerate(MESHES), ids=MESHES)
def test_base_per_device_bytes_of_single_parameters(base, column, mesh):
    arrays = {a.path: a for a in base[1].params}
    for path, values in LEAVES.items():
        assert arrays[path].bytes_per_device(MeshShape.parse(mesh)) == F32 * values[column], path


@pytest.mark.parametrize("mesh, per_device_batch", [("data:8", 576), ("fsdp:8", 576), ("model:4", 4608),
                                                    ("data:32,fsdp:4", 36)])  # fmt: skip
def test_base_state_and_batch_per_device(base, mesh, per_device_batch):
    plan = _plan(base, mesh)
    if mesh == "data:8":  # replicated: every device holds the whole model
        assert plan.parameters_per_device == plan.parameter_bytes
    # AdamW's two float32 moments shard like the parameters, plus two int32 step counts (adam's, the schedule's).
    assert plan.optimizer_per_device == 2 * plan.parameters_per_device + 2 * 4
    assert plan.gradients_per_device == plan.parameters_per_device
    assert plan.global_batch == 4608 and plan.per_device_batch == per_device_batch  # 4,096 pairs + 512 documents
    # Inputs per example: tokens 64 + 3 x 64 (int32), a 224x224x3 image and its mask (float32).
    assert plan.input_batch_per_device == per_device_batch * 4 * (4 * 64 + 224 * 224 * 3 + 1)
    assert plan.activations_per_device > 0


def test_microbatches_shrink_activations_and_add_a_gradient_accumulator(base):
    one, four = _plan(base, "data:8"), _plan(base, "data:8", num_microbatches=4)
    assert four.activations_per_device * 4 == one.activations_per_device
    assert four.gradients_per_device == 2 * one.gradients_per_device


# ----------------------------------------------------------------------------------------------- Huge


def test_huge_on_a_v4_slice_and_on_eight_h100s(huge):
    run, sizes = huge
    config = run.model.module.config
    slice_plan = _plan(huge, "data:32,fsdp:4")  # 128 chips: a v4-256 slice (v4-128 is 64 chips)
    print("\n" + planner.format_text(planner.make_report(run, MeshShape(32, 4), "v4", None, False), ["huge"]))
    # About the paper's 1.4B: this Huge (32+32 layers, width 1280) has 1.557B (configs.py explains the gap).
    assert 1.3e9 < slice_plan.parameter_count < 1.7e9
    # fsdp=4 shards every embed-axis array 4 ways; only the stem, position and relative tables stay whole.
    assert slice_plan.parameter_bytes / 4 < slice_plan.parameters_per_device < slice_plan.parameter_bytes / 3.5
    assert chip_fit.CHIPS["v4"].slice_name(128) == "v4-256"
    assert chip_fit.fit(slice_plan, "v4").verdict in ("tight", "does not fit")  # 36 examples a chip: ~32 GiB
    remedies = chip_fit.suggestions(sizes, config, run.lengths, slice_plan, chip_fit.CHIPS["v4"].hbm_bytes)
    assert remedies and all(r.plan.total_per_device <= 0.9 * 32 * 2**30 for r in remedies)

    gpus = _plan(huge, "fsdp:8")  # one 8 x H100 host: 576 examples per GPU
    assert gpus.per_device_batch == 576 and chip_fit.fit(gpus, "h100").verdict == "does not fit"
    remedies = chip_fit.suggestions(sizes, config, run.lengths, gpus, chip_fit.CHIPS["h100"].hbm_bytes)
    assert [r.change for r in remedies] == ["NUM_MICROBATCHES=8"]  # no single change of mesh helps on 8 GPUs


# ----------------------------------------------------------------------------------------------- the command


@pytest.mark.subprocess
def test_compile_reports_xla_buffer_sizes_on_emulated_devices():
    result = run_module("simvlm_jax.plan", "--gin_file=gin/tiny_cpu.gin", "--mesh=data:2,fsdp:2", "--compile", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    xla, device = report["xla"], report["per_device"]
    assert xla["temp_bytes"] > 0 and xla["devices"] == 4
    assert xla["basis"].startswith("computed by XLA:CPU on 4 emulated devices")
    # XLA's arguments are exactly the planner's computed state and batch (plus the int32 step counter).
    state = sum(device[k]["bytes"] for k in ("parameters", "optimizer_state", "input_batch"))
    assert xla["argument_bytes"] == state + 4
    assert {v["basis"] for v in device.values()} == {"computed", "estimated"}
    assert device["activations"]["basis"] == device["total"]["basis"] == "estimated"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "args, message",
    [
        (["--mesh=data:8,fsdp", "--chip=v4"], "is not a mesh: write data:D,fsdp:F,model:M"),
        (["--mesh=data:8", "--chip=v7"], "Unknown chip 'v7': --chip must be one of v4, v5e, v5p, v6e, h100, h200"),
        (["--mesh=data:3"], "The batch of 32 examples does not split over data x fsdp = 3 x 1 = 3 devices"),
    ],
    ids=["malformed_mesh", "unknown_chip", "batch_does_not_split"],
)
def test_bad_input_is_one_line_and_exit_status_2(args, message):
    result = run_module("simvlm_jax.plan", "--gin_file=gin/tiny_cpu.gin", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("Configuration error:"), result.stderr


def test_compile_is_refused_where_it_does_not_fit_this_machine():
    with pytest.raises(memory_plan.ConfigError, match="limited to 64 devices"):
        memory_plan.check_compile_fits(MeshShape(32, 4), 1_556_708_160)


def test_start_jax_for_the_plan_emulates_the_mesh_only_with_compile():
    env = {"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=2"}
    planner.start_jax_for_the_plan(["plan", "--mesh=data:2,fsdp:2,model:2", "--compile"], env)
    assert env == {"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    env = {}
    planner.start_jax_for_the_plan(["plan", "--mesh", "fsdp:8", "--nocompile"], env)
    assert env == {"JAX_PLATFORMS": "cpu"}
