"""The train state and the compiled steps. The maths are plain functions; `Trainer` only compiles
them once with explicit shardings and launches them (no host-device sync inside a step).

    TrainState(step int32 [], params PyTree, opt_state PyTree)   sharded by the logical-axis table
    train_step(state, batch) -> (state, metrics)                 state buffers donated
    eval_step(params, batch) -> metrics
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from simvlm_jax.model import loss_metrics as metrics_lib
from simvlm_jax.training import checkpoints, numerics
from simvlm_jax.training.grad_accumulation import loss_and_grads
from simvlm_jax.training.optimizers import as_optax
from simvlm_jax.training.partitioning import PjitPartitioner, params_logical_axes

PyTree = Any


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: PyTree
    opt_state: PyTree

    def to_checkpoint_tree(self) -> dict:
        return checkpoints.to_t5x_tree(self.params, self.step, self.opt_state)

    @classmethod
    def from_checkpoint_tree(cls, tree: Mapping[str, Any], reference: "TrainState") -> "TrainState":
        """The state in a restored checkpoint tree; `reference` (e.g. the abstract state) gives the optimizer
        state's structure, which T5X's on-disk form does not keep (see checkpoints.optimizer_state_dict)."""
        opt_state = checkpoints.optimizer_state_from_dict(reference.opt_state, tree["state"]["param_states"])
        return cls(step=tree["state"]["step"], params=tree["target"], opt_state=opt_state)


# --------------------------------------------------------------------------------------------------
# Pure step functions.
# --------------------------------------------------------------------------------------------------
def train_step(
    model,
    optimizer: optax.GradientTransformation,
    learning_rate_fn: Optional[Callable],
    dropout_rng: jax.Array,
    state: TrainState,
    batch: Mapping[str, jax.Array],
    num_microbatches: Optional[int] = None,
) -> tuple[TrainState, metrics_lib.Metrics]:
    """One optimizer update. The dropout RNG is folded with the step, so a resumed run repeats it.
    With num_microbatches > 1 the gradients are accumulated over batch slices (grad_accumulation).

    A step whose loss, gradient norm or new parameter norm is not finite leaves params and opt_state
    as they were (the step counter still advances) and reports `nonfinite_steps` = 1 (see numerics.py).
    """
    rng = jax.random.fold_in(dropout_rng, state.step)
    (loss, metrics), grads = loss_and_grads(model, state.params, batch, rng, num_microbatches)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    grad_norm, param_norm = optax.global_norm(grads), optax.global_norm(params)
    finite = numerics.is_finite(loss, grad_norm, param_norm)
    params, opt_state = numerics.keep_if_finite(finite, (params, opt_state), (state.params, state.opt_state))
    metrics["grad_norm"] = metrics_lib.scalar_average(grad_norm)
    metrics["param_norm"] = metrics_lib.scalar_average(optax.global_norm(params))
    metrics["nonfinite_steps"] = metrics_lib.Sum(total=1.0 - finite.astype(jnp.float32))
    if learning_rate_fn is not None:
        metrics["learning_rate"] = metrics_lib.scalar_average(learning_rate_fn(state.step))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(model, params: PyTree, batch: Mapping[str, jax.Array]) -> metrics_lib.Metrics:
    return model.eval_fn(params, batch)[1]


# --------------------------------------------------------------------------------------------------
# Shapes and shardings of the train state, before anything is allocated.
# --------------------------------------------------------------------------------------------------
class TrainStateLayout:
    """The abstract train state (shapes, dtypes) and its logical axes and shardings."""

    def __init__(
        self,
        model,
        partitioner: PjitPartitioner,
        input_shapes: Mapping[str, tuple],
        input_types: Optional[Mapping[str, Any]] = None,
    ):
        self.model = model
        self.partitioner = partitioner
        self.optimizer = as_optax(model.optimizer_def)
        self._input_shapes = dict(input_shapes)
        self._input_types = dict(input_types or {})
        with partitioner.axis_rules_context():
            variables = jax.eval_shape(
                lambda rng: model.get_initial_variables(rng, self._input_shapes, self._input_types), jax.random.key(0)
            )
        params_shape = flax.core.unfreeze(variables["params"])
        params_axes = flax.core.unfreeze(params_logical_axes(variables))
        opt_shape = jax.eval_shape(self.optimizer.init, params_shape)
        opt_axes = optax.tree_map_params(
            self.optimizer,
            lambda _, axes: axes,
            opt_shape,
            params_axes,
            transform_non_params=lambda _: PartitionSpec(),
            is_leaf=lambda x: isinstance(x, PartitionSpec),
        )
        self.logical_axes = TrainState(step=PartitionSpec(), params=params_axes, opt_state=opt_axes)
        self.shapes = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params_shape, opt_state=opt_shape)
        self.shardings = partitioner.logical_to_sharding(self.logical_axes)

    @property
    def input_shapes(self) -> dict[str, tuple]:
        """The global batch shapes the state was laid out for (feature name -> shape)."""
        return dict(self._input_shapes)

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """The global batch as ShapeDtypeStructs split along the mesh's batch axes (for compiling ahead)."""
        return {
            name: jax.ShapeDtypeStruct(
                shape, self._input_types.get(name, jnp.float32), sharding=self.partitioner.batch_sharding(len(shape))
            )
            for name, shape in self._input_shapes.items()
        }

    def abstract_state(self) -> TrainState:
        """ShapeDtypeStructs carrying their shardings: the target of a checkpoint restore."""
        # `shardings` is a prefix of `shapes` (an optimizer state without arrays has one spec).
        return jax.tree.map(
            lambda sharding, shapes: jax.tree.map(
                lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes
            ),
            self.shardings,
            self.shapes,
            is_leaf=lambda x: isinstance(x, NamedSharding),
        )

    def initialize(self, rng: jax.Array) -> TrainState:
        """A fresh train state, created directly in its shards (never whole on one device)."""

        def init(rng):
            params = self.model.get_initial_variables(rng, self._input_shapes, self._input_types)["params"]
            params = flax.core.unfreeze(params)
            return TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=self.optimizer.init(params))

        with self.partitioner.axis_rules_context():
            return jax.jit(init, out_shardings=self.shardings)(rng)

    def model_info_lines(self) -> list[str]:
        """T5X's model-info.txt: each parameter with its size, logical shape and partition spec."""
        lines = []
        mesh_axes = self.partitioner.logical_to_mesh_axes(self.logical_axes)
        flat_shapes = flax.traverse_util.flatten_dict(flax.core.unfreeze(self.shapes.params), sep="/")
        flat_axes = flax.traverse_util.flatten_dict(flax.core.unfreeze(self.logical_axes.params), sep="/")
        flat_mesh = flax.traverse_util.flatten_dict(flax.core.unfreeze(mesh_axes.params), sep="/")
        total = 0
        for name in sorted(flat_shapes):
            shape, axes = flat_shapes[name], tuple(flat_axes[name])
            size = int(np.prod(shape.shape))
            total += size
            shape_str = "(" + ", ".join(f"{a}={d}" for a, d in zip(axes, shape.shape)) + ")"
            lines.append(
                "Variable %-80s size %-12s shape %-40s partition spec %s"
                % (name, size, shape_str, tuple(flat_mesh[name]))
            )
        lines.append("Total number of parameters: %d" % total)
        return lines


# --------------------------------------------------------------------------------------------------
# The Trainer: compiled steps with shardings (T5X's constructor signature).
# --------------------------------------------------------------------------------------------------
class Trainer:
    """Compiles and runs the train and eval steps on the partitioner's mesh.

    Args follow `t5x.trainer.Trainer`; `learning_rate_fn` is only reported (with optax the schedule
    lives inside the optimizer, as in T5X); `num_microbatches` > 1 accumulates gradients over that
    many slices of each batch inside the compiled step (same update, less activation memory).
    """

    def __init__(
        self,
        model,
        train_state: TrainState,
        partitioner: PjitPartitioner,
        eval_names=(),
        summary_dir: Optional[str] = None,
        train_state_axes: Optional[TrainState] = None,
        rng: Optional[jax.Array] = None,
        learning_rate_fn: Optional[Callable] = None,
        num_microbatches: Optional[int] = None,
    ):
        self.model = model
        self.train_state = train_state
        self.partitioner = partitioner
        self.eval_names = tuple(eval_names)
        self.summary_dir = summary_dir
        self.learning_rate_fn = learning_rate_fn
        state_shardings = jax.tree.map(lambda x: x.sharding, train_state)
        optimizer = as_optax(model.optimizer_def)
        dropout_rng = rng if rng is not None else jax.random.key(0)
        self._train_step = jax.jit(
            functools.partial(
                train_step, model, optimizer, learning_rate_fn, dropout_rng, num_microbatches=num_microbatches
            ),
            out_shardings=(state_shardings, partitioner.replicated()),
            donate_argnums=(0,),
        )
        self._eval_step = jax.jit(functools.partial(eval_step, model), out_shardings=partitioner.replicated())
        self._predict = jax.jit(
            lambda params, batch: model.predict_batch_with_aux(params, batch)[0],
            out_shardings=partitioner.batch_sharding(2),
        )

    def shard_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This host's numpy batch -> global arrays split along the batch axis of the mesh (arrays
        already on the devices, e.g. from `prefetch_to_device`, are kept as they are)."""
        return {
            name: value
            if isinstance(value, jax.Array)
            else jax.make_array_from_process_local_data(self.partitioner.batch_sharding(np.ndim(value)), value)
            for name, value in batch.items()
        }

    def train_step(self, batch: Mapping[str, np.ndarray]) -> metrics_lib.Metrics:
        """Runs one step asynchronously; returns its metrics still on device."""
        with self.partitioner.axis_rules_context():
            self.train_state, metrics = self._train_step(self.train_state, self.shard_batch(batch))
        return metrics

    def compile_train_step(self, batch: Mapping[str, Any]):
        """The train step compiled ahead of time for `batch` (arrays or ShapeDtypeStructs with shardings),
        without running it: its `memory_analysis()` is XLA's own account of the step's buffers."""
        with self.partitioner.axis_rules_context():
            return self._train_step.lower(self.train_state, batch).compile()

    def eval_step(self, batch: Mapping[str, np.ndarray]) -> metrics_lib.Metrics:
        with self.partitioner.axis_rules_context():
            return self._eval_step(self.train_state.params, self.shard_batch(batch))

    def predict(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Greedy-decoded tokens [B_local, L_dec] for this host's batch (the rows `shard_batch` took from it)."""
        with self.partitioner.axis_rules_context():
            tokens = self._predict(self.train_state.params, self.shard_batch(batch))
        if not tokens.is_fully_addressable:  # several processes: this host's rows of the global batch
            tokens = multihost_utils.global_array_to_host_local_array(
                tokens, self.partitioner.mesh, self.partitioner.batch_sharding(2).spec
            )
        return np.asarray(jax.device_get(tokens))
