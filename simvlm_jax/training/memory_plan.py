"""The memory one training step needs on a mesh you do not have: a plan to read before renting hardware.

    sizes = train_state_sizes(model, lengths, rules)            # jax.eval_shape only: nothing allocated
    plan = plan_memory(sizes, config, lengths, 4608, MeshShape.parse("data:32,fsdp:4,model:1"))
    chip_fit.fit(plan, "v4"); chip_fit.suggestions(sizes, config, lengths, plan, chip_fit.CHIPS["v4"].hbm_bytes)

Every figure says how it was obtained:
  computed   exact, from the abstract train state (TrainStateLayout) and the logical-axis rules: an array's
             shard on one device is its shape with each dimension divided, rounding up as XLA pads, by the
             product of the sizes of the mesh axes its logical axis maps to (flax `logical_to_mesh_axes`);
  estimated  the activations, from memory_estimate's per-example count of the values the backward pass
             keeps (main terms only: XLA's fusion temporaries are left out, so it is a lower bound), and
             so every total that includes them.
Per device, with the AdamW of models/common.gin (optax.adamw: two float32 moments, mu and nu):
  parameters + optimizer state + gradients (one copy of the parameters, sharded like them; two with
  NUM_MICROBATCHES > 1: the accumulator and one microbatch's gradients) + input batch + activations.
`compile_train_step` compiles the real train step for emulated CPU devices and reads XLA's own buffer sizes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning
from jax.sharding import PartitionSpec

from simvlm_jax.data.feature_converter import model_input_specs
from simvlm_jax.training import memory_estimate
from simvlm_jax.training.config_checks import ConfigError
from simvlm_jax.training.partitioning import LOGICAL_AXIS_RULES, MESH_AXES, AxisRules, PjitPartitioner
from simvlm_jax.training.trainer import Trainer, TrainStateLayout

COMPUTED, ESTIMATED = "computed", "estimated"


# --------------------------------------------------------------------------------------------------
# The mesh and the arrays of the train state.
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MeshShape:
    """Sizes of the mesh axes of training/partitioning.py: data x fsdp x model devices."""

    data: int = 1
    fsdp: int = 1
    model: int = 1

    @classmethod
    def parse(cls, text: str) -> "MeshShape":
        """'data:32,fsdp:4,model:1' -> MeshShape(32, 4, 1); an axis left out has size 1."""
        sizes: dict[str, int] = {}
        for item in text.split(","):
            name, colon, value = (part.strip() for part in item.partition(":"))
            if not colon or name not in MESH_AXES or name in sizes or not value.isdigit() or int(value) < 1:
                raise ConfigError(
                    f"--mesh={text!r} is not a mesh: write data:D,fsdp:F,model:M with positive integers "
                    "(an axis left out is 1), e.g. --mesh=data:32,fsdp:4,model:1."
                )
            sizes[name] = int(value)
        return cls(**sizes)

    @property
    def devices(self) -> int:
        return self.data * self.fsdp * self.model

    @property
    def data_parallel(self) -> int:
        """Ways the batch is split (data x fsdp)."""
        return self.data * self.fsdp

    def size(self, axes: tuple[str, ...]) -> int:
        return math.prod(getattr(self, axis) for axis in axes)

    def __str__(self) -> str:
        return f"data:{self.data},fsdp:{self.fsdp},model:{self.model}"


@dataclasses.dataclass(frozen=True)
class ArrayLayout:
    """One array of the train state: its global shape and, per dimension, the mesh axes it is split over."""

    path: str  # e.g. "encoder/layers_0/mlp/wi/kernel"
    shape: tuple[int, ...]
    itemsize: int
    mesh_axes: tuple[tuple[str, ...], ...]  # () for a dimension that is not split

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def shard_shape(self, mesh: MeshShape) -> tuple[int, ...]:
        return tuple(-(-dim // mesh.size(axes)) for dim, axes in zip(self.shape, self.mesh_axes))

    def bytes_per_device(self, mesh: MeshShape) -> int:
        return math.prod(self.shard_shape(mesh)) * self.itemsize


def array_layouts(shapes: Any, logical_axes: Any, rules: AxisRules) -> list[ArrayLayout]:
    """Every array of `shapes` (ShapeDtypeStructs) with the mesh axes its logical axes map to under `rules`.
    `logical_axes` is a tree of PartitionSpecs of logical names shaped like `shapes`, or a prefix of it."""
    arrays: list[ArrayLayout] = []

    def visit(path, spec: PartitionSpec, subtree) -> None:
        for subpath, leaf in jax.tree_util.tree_flatten_with_path(subtree)[0]:
            names = tuple(spec) + (None,) * (len(leaf.shape) - len(spec))
            mesh_spec = nn_partitioning.logical_to_mesh_axes(names, rules)
            per_dim = tuple(() if a is None else (a,) if isinstance(a, str) else tuple(a) for a in mesh_spec)
            name = jax.tree_util.keystr(tuple(path) + tuple(subpath), simple=True, separator="/")
            arrays.append(ArrayLayout(name, tuple(leaf.shape), jnp.dtype(leaf.dtype).itemsize, per_dim))

    jax.tree_util.tree_map_with_path(visit, logical_axes, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))
    return arrays


@dataclasses.dataclass(frozen=True)
class TrainStateSizes:
    """The parameters and the optimizer state as ArrayLayouts (the step counter is left out: 4 bytes)."""

    params: tuple[ArrayLayout, ...]
    optimizer: tuple[ArrayLayout, ...]


def train_state_sizes(model, lengths: Mapping[str, int], rules: AxisRules = LOGICAL_AXIS_RULES) -> TrainStateSizes:
    """The train state of `model` laid out by TrainStateLayout under jax.eval_shape (nothing allocated; the
    one-device partitioner only supplies the rules: shapes and logical axes do not depend on the mesh)."""
    partitioner = PjitPartitioner(logical_axis_rules=rules, devices=jax.devices()[:1])
    shapes, types = model_input_specs(lengths, 1)
    layout = TrainStateLayout(model, partitioner, shapes, types)
    return TrainStateSizes(
        params=tuple(array_layouts(layout.shapes.params, layout.logical_axes.params, rules)),
        optimizer=tuple(array_layouts(layout.shapes.opt_state, layout.logical_axes.opt_state, rules)),
    )


_TOP_LEVEL_PARTS = {
    "shared_embedding": "token embedding",
    "image_stem": "image stem",
    "image_projection": "image projection",
}
_LAYER_PARTS = (
    ("encoder_decoder_attention", "cross-attention"),
    ("self_attention", "self-attention"),
    ("attention", "self-attention"),
    ("mlp", "MLP"),
    ("image_relative_position", "relative position"),
)
_PARTS_IN_ORDER = (
    ("token embedding", "position tables", "image stem", "image projection")
    + tuple(f"encoder {p}" for p in ("self-attention", "relative position", "MLP", "layer norms"))
    + tuple(f"decoder {p}" for p in ("self-attention", "cross-attention", "relative position", "MLP", "layer norms"))
)


def part_of(path: str) -> str:
    """The part of the network a parameter belongs to, for the breakdown: 'encoder MLP', 'image stem', ..."""
    names = path.split("/")
    if names[0] in _TOP_LEVEL_PARTS:
        return _TOP_LEVEL_PARTS[names[0]]
    if any(n.endswith("position_embedding") or n == "image_index_embedding" for n in names):
        return "position tables"
    for key, label in _LAYER_PARTS:
        if key in names:
            return f"{names[0]} {label}"
    if any("norm" in n for n in names):
        return f"{names[0]} layer norms"
    return names[0]


# --------------------------------------------------------------------------------------------------
# The plan of one mesh (whether it fits a chip: training/chip_fit.py).
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes of one training step; `*_per_device` on each of the mesh's devices."""

    mesh: MeshShape
    parameter_count: int  # computed
    parameters_by_part: dict[str, int]  # computed: part_of(path) -> parameters
    parameter_bytes: int  # computed, the whole model
    parameters_per_device: int  # computed
    optimizer_per_device: int  # computed
    gradients_per_device: int  # computed
    input_batch_per_device: int  # computed
    activations_per_device: int  # estimated
    global_batch: int
    per_device_batch: int
    num_microbatches: int
    remat_policy: str

    @property
    def state_per_device(self) -> int:
        """Parameters, optimizer state and gradients (computed)."""
        return self.parameters_per_device + self.optimizer_per_device + self.gradients_per_device

    @property
    def total_per_device(self) -> int:
        """Everything (estimated, as it includes the activations)."""
        return self.state_per_device + self.input_batch_per_device + self.activations_per_device

    def per_device(self) -> dict[str, tuple[int, str]]:
        """{figure: (bytes on one device, COMPUTED or ESTIMATED)}, the total last."""
        return {
            "parameters": (self.parameters_per_device, COMPUTED),
            "optimizer_state": (self.optimizer_per_device, COMPUTED),
            "gradients": (self.gradients_per_device, COMPUTED),
            "input_batch": (self.input_batch_per_device, COMPUTED),
            "activations": (self.activations_per_device, ESTIMATED),
            "total": (self.total_per_device, ESTIMATED),
        }


def plan_memory(
    sizes: TrainStateSizes,
    config,
    lengths: Mapping[str, int],
    global_batch: int,
    mesh: MeshShape,
    num_microbatches: Optional[int] = None,
    remat_policy: Optional[str] = None,
) -> MemoryPlan:
    """The plan of one step on `mesh` for a network `config` (SimVLMConfig); `remat_policy` overrides the
    config's. Raises ConfigError where the batch does not split over the mesh or the microbatches."""
    if not isinstance(global_batch, int) or global_batch < 1:
        raise ConfigError(f"The batch size must be a positive integer, got {global_batch!r}.")
    if global_batch % mesh.data_parallel:
        raise ConfigError(
            f"The batch of {global_batch:,} examples does not split over data x fsdp = {mesh.data} x {mesh.fsdp} = "
            f"{mesh.data_parallel} devices: set --batch_size (or BATCH_SIZE) to a multiple of {mesh.data_parallel}, "
            "or choose another mesh."
        )
    microbatches = int(num_microbatches or 1)
    per_device = global_batch // mesh.data_parallel
    if global_batch % microbatches:
        raise ConfigError(f"The batch of {global_batch:,} is not divisible by NUM_MICROBATCHES={microbatches}.")
    config = dataclasses.replace(config, remat_policy=remat_policy or config.remat_policy)
    per_example = memory_estimate.activation_values_per_example(config, lengths) * jnp.dtype(config.dtype).itemsize
    shapes, types = model_input_specs(lengths, per_device, config.num_channels)
    params_per_device = sum(a.bytes_per_device(mesh) for a in sizes.params)
    parts = dict.fromkeys(_PARTS_IN_ORDER, 0)
    for array in sizes.params:
        parts[part_of(array.path)] = parts.get(part_of(array.path), 0) + array.size
    return MemoryPlan(
        mesh=mesh,
        parameter_count=sum(a.size for a in sizes.params),
        parameters_by_part={part: n for part, n in parts.items() if n},
        parameter_bytes=sum(a.size * a.itemsize for a in sizes.params),
        parameters_per_device=params_per_device,
        optimizer_per_device=sum(a.bytes_per_device(mesh) for a in sizes.optimizer),
        gradients_per_device=params_per_device * (2 if microbatches > 1 else 1),
        input_batch_per_device=sum(math.prod(s) * jnp.dtype(types[n]).itemsize for n, s in shapes.items()),
        activations_per_device=per_example * -(-per_device // microbatches),
        global_batch=global_batch,
        per_device_batch=per_device,
        num_microbatches=microbatches,
        remat_policy=config.remat_policy,
    )


# --------------------------------------------------------------------------------------------------
# XLA's own figures: the real train step compiled ahead of time for emulated CPU devices.
# --------------------------------------------------------------------------------------------------
MAX_COMPILE_DEVICES = 64  # emulated CPU devices
MAX_COMPILE_PARAMETERS = 300_000_000  # about Base: larger models take too long to compile on a CPU


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """`compiled.memory_analysis()` of the train step: bytes on one device, as XLA:CPU assigns buffers."""

    devices: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int  # outputs that reuse donated arguments (the train state)
    temp_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @property
    def label(self) -> str:
        return (
            f"computed by XLA:CPU on {self.devices} emulated devices "
            "(XLA:CPU's buffer assignment, a guide to but not equal to TPU/GPU's)"
        )


def check_compile_fits(mesh: MeshShape, parameter_count: int) -> None:
    """Refuses a compile this machine should not attempt (too many emulated devices, too large a model)."""
    if mesh.devices > MAX_COMPILE_DEVICES or parameter_count > MAX_COMPILE_PARAMETERS:
        raise ConfigError(
            f"--compile emulates the mesh's {mesh.devices} devices on this CPU and compiles a "
            f"{parameter_count / 1e6:,.0f}M-parameter model; it is limited to {MAX_COMPILE_DEVICES} devices and "
            f"{MAX_COMPILE_PARAMETERS / 1e6:,.0f}M parameters. Drop --compile (the other figures stand), or "
            "compile on the target machine itself."
        )


def compile_train_step(
    model,
    lengths: Mapping[str, int],
    global_batch: int,
    mesh: MeshShape,
    rules: AxisRules = LOGICAL_AXIS_RULES,
    num_microbatches: Optional[int] = None,
) -> CompiledMemory:
    """Compiles Trainer's train step (its jitted function, shardings and donation) for `mesh` on the CPU
    devices, which must number at least mesh.devices: XLA_FLAGS=--xla_force_host_platform_device_count=N,
    set before JAX starts (`python -m simvlm_jax.plan --compile` does this)."""
    cpus = jax.devices("cpu")
    if len(cpus) < mesh.devices:
        raise ConfigError(
            f"--compile needs {mesh.devices} CPU devices and JAX has {len(cpus)}: set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={mesh.devices} before JAX starts (as "
            "`python -m simvlm_jax.plan --compile` does)."
        )
    partitioner = PjitPartitioner(mesh.model, None, rules, mesh.fsdp, cpus[: mesh.devices])
    shapes, types = model_input_specs(lengths, global_batch)
    layout = TrainStateLayout(model, partitioner, shapes, types)
    state = layout.abstract_state()
    batch = {
        name: jax.ShapeDtypeStruct(shape, types[name], sharding=partitioner.batch_sharding(len(shape)))
        for name, shape in shapes.items()
    }
    trainer = Trainer(model, state, partitioner, num_microbatches=num_microbatches)
    compiled = trainer.compile_train_step(batch)
    stats = compiled.memory_analysis()
    return CompiledMemory(
        devices=mesh.devices,
        argument_bytes=int(stats.argument_size_in_bytes),
        output_bytes=int(stats.output_size_in_bytes),
        alias_bytes=int(stats.alias_size_in_bytes),
        temp_bytes=int(stats.temp_size_in_bytes),
    )
