"""Loss and gradients of a batch, optionally accumulated over microbatches inside the jitted step.

With k microbatches the batch [B, ...] is viewed as [k, B/k, ...] and `jax.lax.scan` runs the forward
and backward pass on one slice at a time, so activation memory is that of B/k examples. The result
equals the full-batch gradient (up to float summation order), because the loss is a token sum divided
by a batch-wide normaliser: microbatch i's loss is divided by its own normaliser n_i, so it is scaled
by n_i / n (n = the full batch's normaliser, `model.loss_normalizer`) before it is added up:

    loss = sum_i (n_i / n) * loss_i = sum over all tokens / n,   grads likewise.

Metrics are merged as clu merges them (sums of totals and counts), except the batch scalars named in
`model.LOSS_METRICS` (loss, cross-entropy, z-loss), which get the same n_i / n weighting.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

PyTree = Any
Metrics = Mapping[str, Any]  # clu metrics (simvlm_jax.metrics); not imported, to stay free of clu


def loss_and_grads(
    model, params: PyTree, batch: Mapping[str, jax.Array], rng: Optional[jax.Array], num_microbatches: Optional[int]
) -> tuple[tuple[jax.Array, Metrics], PyTree]:
    """((loss, metrics), grads) of `model.loss_fn` over the batch, in `num_microbatches` slices."""
    grad_fn = jax.value_and_grad(model.loss_fn, has_aux=True)
    if not num_microbatches or num_microbatches == 1:
        return grad_fn(params, batch, rng)
    k = int(num_microbatches)
    batch_size = next(iter(batch.values())).shape[0]
    if batch_size % k:
        raise ValueError(f"batch size {batch_size} is not divisible by num_microbatches={k}")
    sliced = jax.tree.map(lambda x: x.reshape(k, batch_size // k, *x.shape[1:]), dict(batch))
    full_normalizer = model.loss_normalizer(batch)

    def body(grad_sum, inputs):
        index, microbatch = inputs
        micro_rng = None if rng is None else jax.random.fold_in(rng, index)
        (loss, metrics), grads = grad_fn(params, microbatch, micro_rng)
        share = model.loss_normalizer(microbatch) / full_normalizer
        grad_sum = jax.tree.map(lambda acc, g: acc + share * g, grad_sum, grads)
        return grad_sum, (share * loss, share, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (losses, shares, metrics) = jax.lax.scan(body, zeros, (jnp.arange(k), sliced))
    merged = {name: jax.tree.map(lambda x: jnp.sum(x, axis=0), m) for name, m in metrics.items()}
    for name in model.LOSS_METRICS:
        if name in merged:
            # A clu Average of one per-batch scalar: total = the weighted sum, count = 1.
            merged[name] = metrics[name].replace(
                total=jnp.sum(shares * metrics[name].compute()), count=jnp.ones((), jnp.float32)
            )
    return (jnp.sum(losses), merged), grads
