"""Run in a subprocess with 8 forced CPU devices (see test_multiprocess.py): a train state saved from one
mesh and restored, through the trainer's own CheckpointManager and TrainStateLayout, onto others; prints JSON."""

import json
import sys
import tempfile

import jax
import numpy as np

from simvlm_jax.training.checkpoints import CheckpointManager
from simvlm_jax.training.partitioning import PjitPartitioner
from simvlm_jax.training.trainer import Trainer, TrainState, TrainStateLayout
from tests.helpers import make_batch, make_model

MESHES = {  # name -> (model partitions, fsdp partitions, devices)
    "data8": (1, 1, 8),
    "data2_model4": (4, 1, 8),
    "fsdp8": (1, 8, 8),
    "data2_fsdp2_model2": (2, 2, 8),
    "one_device": (1, 1, 1),
}


def batch_of_8() -> dict:
    parts = [make_batch(seed) for seed in range(4)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def layout_on(name: str) -> TrainStateLayout:
    model_partitions, fsdp, devices = MESHES[name]
    partitioner = PjitPartitioner(model_partitions, None, None, fsdp, jax.devices()[:devices])
    batch = batch_of_8()
    return TrainStateLayout(make_model(vocab_size=64), partitioner, {k: v.shape for k, v in batch.items()})


def main(saved_on: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    source = layout_on(saved_on)
    state = source.initialize(jax.random.key(0))
    trainer = Trainer(source.model, state, source.partitioner, rng=jax.random.key(1))
    trainer.train_step(batch_of_8())  # a trained state: the optimizer moments are not zeros
    saved = jax.tree.map(np.asarray, jax.device_get(trainer.train_state))
    model_dir = tempfile.mkdtemp()
    CheckpointManager(model_dir).save(1, trainer.train_state.to_checkpoint_tree())
    results = {}
    for name in MESHES:
        target = layout_on(name)
        abstract = target.abstract_state()
        tree = CheckpointManager(model_dir).restore(f"{model_dir}/checkpoint_1", abstract.to_checkpoint_tree())
        restored = TrainState.from_checkpoint_tree(tree, abstract)
        equal = jax.tree.map(lambda a, b: bool(np.array_equal(a, np.asarray(b))), saved, jax.device_get(restored))
        kernel = restored.params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
        results[name] = {
            "all_equal": all(jax.tree.leaves(equal)),
            "leaves": len(jax.tree.leaves(equal)),
            "devices": len(kernel.sharding.device_set),
            "mlp_shard_shape": list(kernel.addressable_shards[0].data.shape),
            "mlp_full_shape": list(kernel.shape),
            "same_sharding_as_layout": all(
                a.sharding.is_equivalent_to(b.sharding, a.ndim)
                for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract))
            ),
        }
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
