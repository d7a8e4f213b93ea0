"""What the processes of a multi-process run agree on, through JAX's coordination service.

Agreement goes through the coordination service (its key-value store and barriers, with long timeouts),
not through device collectives: on the CPU backend a process that reaches its first collective more than
30 s after another (a slower compile, a busy host) fails gloo's context set-up, while a barrier here
waits as long as `BARRIER_TIMEOUT_S`. (`jax._src.distributed.global_state.client` is JAX's own handle on
the service; jax is pinned.)
"""

from __future__ import annotations

import itertools
import time
from typing import Optional

import jax

# How long a process waits for the others at a barrier (a compile or a checkpoint write on a busy host).
BARRIER_TIMEOUT_S = 1800
_barrier_numbers = itertools.count()


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Returns when every process has reached the barrier `name` (a no-op in one process). Every process
    must call the same barriers in the same order (each call is a new barrier)."""
    if jax.process_count() == 1:
        return
    _client().wait_at_barrier(f"simvlm_{next(_barrier_numbers)}_{name}", int(timeout_s * 1000))


def agreed_seed(random_seed: Optional[int]) -> int:
    """`random_seed`, or when it is None a seed from process 0's clock, the same on every process (T5X
    broadcasts it the same way): hosts initialising one sharded state from different keys would each
    write their shards of different models."""
    if random_seed is not None:
        return int(random_seed)
    seed = time.time_ns() // 1_000_000 % (2**31 - 1)
    if jax.process_count() == 1:
        return seed
    client = _client()
    if jax.process_index() == 0:
        client.key_value_set("simvlm_random_seed", str(seed))
    return int(client.blocking_key_value_get("simvlm_random_seed", BARRIER_TIMEOUT_S * 1000))
