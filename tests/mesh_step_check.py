"""Run in a subprocess with 8 forced CPU devices (see test_partitioning.py): one train step of the tiny
model on a 1-device mesh and on a data=4 x model=2 mesh (and data=2 x fsdp=2 x model=2, also with scanned
layers, remat and 2 microbatches against the scanned model on one device); prints JSON."""

import json
import sys

import jax
import numpy as np
import optax
import seqio

from simvlm_jax.model.simvlm_model import SimVLMModel
from simvlm_jax.network import SimVLMNetwork, tiny_config
from simvlm_jax.training.partitioning import PjitPartitioner
from simvlm_jax.training.trainer import Trainer, TrainStateLayout

B, S = 8, 32


def batch():
    rng = np.random.default_rng(0)
    targets = rng.integers(2, 64, size=(B, 6)).astype(np.int32)
    targets[:, 4:] = 0
    return {
        "encoder_image": rng.normal(size=(B, S, S, 3)).astype(np.float32),
        "encoder_image_mask": (np.arange(B) % 4 != 0).astype(np.float32),
        "encoder_input_tokens": rng.integers(1, 64, size=(B, 5)).astype(np.int32),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
        "decoder_loss_weights": (targets > 0).astype(np.int32),
    }


def one_step(partitioner, scanned=False, num_microbatches=None):
    vocab = seqio.PassThroughVocabulary(size=64, eos_id=1)
    switches = dict(scan_layers=True, remat_policy="full") if scanned else {}
    config = tiny_config(vocab_size=64, image_size=S, num_conv_blocks=0, patch_size=8, **switches)
    model = SimVLMModel(
        SimVLMNetwork(config), vocab, vocab, optax.sgd(0.5)
    )  # SGD: parameters comparable across meshes (Adam amplifies noise)
    data = batch()
    layout = TrainStateLayout(model, partitioner, {k: v.shape for k, v in data.items()})
    state = layout.initialize(jax.random.key(0))
    trainer = Trainer(model, state, partitioner, rng=jax.random.key(1), num_microbatches=num_microbatches)
    metrics = trainer.train_step(data)
    loss = float(metrics["loss"].compute())
    params = jax.device_get(trainer.train_state.params)
    if scanned:  # [layers, embed, mlp]: the stacked layer axis is never split
        mlp_kernel = trainer.train_state.params["encoder"]["layers"]["mlp"]["wi"]["kernel"]
        shard_shape, full_shape = mlp_kernel.addressable_shards[0].data.shape, mlp_kernel.shape
        assert shard_shape[0] == full_shape[0]
        return loss, params, shard_shape[1:], full_shape[1:]
    mlp_kernel = trainer.train_state.params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]
    return loss, params, mlp_kernel.addressable_shards[0].data.shape, mlp_kernel.shape


def main():
    assert jax.device_count() == 8, jax.devices()
    single_loss, single_params, _, _ = one_step(PjitPartitioner(devices=jax.devices()[:1]))
    scanned_loss, scanned_params, _, _ = one_step(PjitPartitioner(devices=jax.devices()[:1]), scanned=True)
    out = {"single_loss": single_loss, "scanned_single_loss": scanned_loss}
    for name, partitioner, scanned, microbatches in (
        ("data4_model2", PjitPartitioner(num_partitions=2), False, None),
        ("data2_fsdp2_model2", PjitPartitioner(num_partitions=2, fsdp_partitions=2), False, None),
        ("scanned_data2_fsdp2_model2", PjitPartitioner(num_partitions=2, fsdp_partitions=2), True, 2),
    ):
        loss, params, shard_shape, full_shape = one_step(partitioner, scanned, microbatches)
        reference = scanned_params if scanned else single_params
        diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), reference, params)
        out[name] = {
            "loss": loss,
            "max_param_diff": max(jax.tree.leaves(diffs)),
            "mlp_shard_shape": list(shard_shape),
            "mlp_full_shape": list(full_shape),
        }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
