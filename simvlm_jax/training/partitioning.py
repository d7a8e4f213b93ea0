"""The device mesh and THE table of logical-axis rules.

Every parameter and key activation in `simvlm_jax.network` names its axes with the logical names in
`LOGICAL_AXIS_RULES`; this table alone decides how they map onto the mesh axes

    data   pure data parallelism (replicated parameters)
    fsdp   data parallelism whose parameters and optimizer state are sharded along `embed` (ZeRO-3 style)
    model  tensor parallelism (heads, MLP and vocabulary dimensions)

The batch is split over `data` x `fsdp`. With fsdp = model = 1 (the default) this is plain data
parallelism. Flax resolves rules in order and skips a mesh axis already used in the same array, so
`embed` of an activation sharded on (data, fsdp) falls through to the replicated rule.

Under real T5X, whose meshes have only (data, model), gin binds T5X's `standard_logical_axis_rules`
with `additional_rules=simvlm_additional_rules()` so the extra names of this project resolve there too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import numpy as np
from flax.linen import partitioning as nn_partitioning
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
AxisRules = Sequence[tuple[str, Any]]

LOGICAL_AXIS_RULES: AxisRules = (
    # Activations and inputs.
    ("batch", ("data", "fsdp")),  # examples: every data-parallel shard gets its own
    ("length", None),  # sequence positions: never split
    # Transformer parameters (and the same names on activations).
    ("vocab", "model"),  # token embedding rows / logits
    ("mlp", "model"),  # MLP hidden units
    ("heads", "model"),  # attention heads
    ("kv", None),  # per-head width
    ("joined_kv", "model"),  # heads*kv flattened (T5X name; kept for compatibility)
    ("embed", "fsdp"),  # model width: parameter shards under fsdp ...
    ("embed", None),  # ... replicated where fsdp is taken (activations sharded by batch)
    # Conv stem and position tables: small, replicated.
    ("conv_height", None),
    ("conv_width", None),
    ("conv_in", None),
    ("conv_out", None),
    ("image_positions", None),
    ("text_positions", None),
    ("image_index", None),
    ("relpos_buckets", None),
    ("layers", None),  # the stacked-layer axis when layers are scanned
)


def simvlm_additional_rules() -> AxisRules:
    """The rules for the logical names T5X's standard table does not know (all replicated)."""
    t5x_names = {"batch", "length", "vocab", "mlp", "heads", "kv", "joined_kv", "embed", "relpos_buckets", "layers"}
    return tuple((name, None) for name, _ in LOGICAL_AXIS_RULES if name not in t5x_names)


def standard_logical_axis_rules(additional_rules: Optional[AxisRules] = None) -> AxisRules:
    """Our table (plus `additional_rules` appended, as in T5X's function of the same name)."""
    return tuple(LOGICAL_AXIS_RULES) + tuple(additional_rules or ())


@dataclasses.dataclass(frozen=True)
class DataLayout:
    """How this host takes part in reading data (T5X's name and fields)."""

    batch_size: int  # the global batch
    shard_id: int  # this host's shard of the input files/examples
    num_shards: int
    is_first_host_in_replica_set: bool = True


class PjitPartitioner:
    """Builds the (data, fsdp, model) mesh and turns logical axes into shardings.

    Args:
      num_partitions: size of the `model` axis (tensor parallelism); T5X's argument name.
      model_parallel_submesh: accepted for T5X compatibility; only None is supported here.
      logical_axis_rules: defaults to `LOGICAL_AXIS_RULES`.
      fsdp_partitions: size of the `fsdp` axis.
      devices: the devices to use (default: all of `jax.devices()`).
    The `data` axis takes the remaining devices.
    """

    def __init__(
        self,
        num_partitions: Optional[int] = 1,
        model_parallel_submesh: Optional[Any] = None,
        logical_axis_rules: Optional[AxisRules] = None,
        fsdp_partitions: int = 1,
        devices: Optional[Sequence[jax.Device]] = None,
    ):
        if model_parallel_submesh is not None:
            raise ValueError("model_parallel_submesh is a T5X TPU option; use num_partitions / fsdp_partitions.")
        devices = list(devices if devices is not None else jax.devices())
        model = int(num_partitions or 1)
        fsdp = int(fsdp_partitions)
        if len(devices) % (model * fsdp):
            raise ValueError(
                f"{len(devices)} devices cannot be split into model={model} x fsdp={fsdp} partitions: "
                "choose num_partitions and fsdp_partitions whose product divides the device count."
            )
        data = len(devices) // (model * fsdp)
        self.mesh = Mesh(np.asarray(devices).reshape(data, fsdp, model), MESH_AXES)
        self.logical_axis_rules = tuple(logical_axis_rules or LOGICAL_AXIS_RULES)

    @property
    def data_parallel_size(self) -> int:
        return self.mesh.shape["data"] * self.mesh.shape["fsdp"]

    def get_data_layout(self, batch_size: int) -> DataLayout:
        """Each host reads a disjoint 1/process_count of the data and feeds its local devices."""
        if batch_size % self.data_parallel_size:
            raise ValueError(
                f"BATCH_SIZE={batch_size} is not divisible by the data-parallel size "
                f"{self.data_parallel_size} (data x fsdp): choose a multiple of it."
            )
        return DataLayout(batch_size, jax.process_index(), jax.process_count())

    def logical_to_mesh_axes(self, logical_axes: Any) -> Any:
        """A tree of logical-axis tuples (or PartitionSpecs of names) -> a tree of mesh PartitionSpecs."""
        return jax.tree.map(
            lambda axes: nn_partitioning.logical_to_mesh_axes(tuple(axes), self.logical_axis_rules),
            logical_axes,
            is_leaf=_is_axes_leaf,
        )

    def logical_to_sharding(self, logical_axes: Any) -> Any:
        """A tree of logical-axis tuples -> a tree of NamedShardings on this mesh."""
        return jax.tree.map(
            lambda spec: NamedSharding(self.mesh, spec),
            self.logical_to_mesh_axes(logical_axes),
            is_leaf=lambda x: isinstance(x, PartitionSpec),
        )

    def batch_sharding(self, rank: int) -> NamedSharding:
        """Inputs are split along their batch axis only."""
        return NamedSharding(
            self.mesh, nn_partitioning.logical_to_mesh_axes(("batch",) + (None,) * (rank - 1), self.logical_axis_rules)
        )

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def axis_rules_context(self):
        """A context in which the network's `with_sharding_constraint` annotations take effect."""
        return nn_partitioning.axis_rules(self.logical_axis_rules)


def params_logical_axes(variables: Any) -> Any:
    """The `params_axes` collection (written by `param_with_axes`) as a tree of PartitionSpec names,
    shaped like `variables['params']`."""
    axes = nn_partitioning.get_axis_names(variables["params_axes"])
    return jax.tree.map(lambda spec: PartitionSpec(*spec), axes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def _is_axes_leaf(x: Any) -> bool:
    return isinstance(x, PartitionSpec) or (isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x))
