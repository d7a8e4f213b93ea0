"""What the processes of a multi-process run must agree on before they build one sharded state."""

from __future__ import annotations

import time
from typing import Optional

import jax
import numpy as np


def agreed_seed(random_seed: Optional[int]) -> int:
    """`random_seed`, or when it is None a seed from the clock, process 0's on every process (T5X
    broadcasts it the same way): hosts initialising one sharded state from different keys would each
    write their shards of different models."""
    if random_seed is not None:
        return int(random_seed)
    seed = np.int64(time.time_ns() // 1_000_000 % (2**31 - 1))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        seed = multihost_utils.broadcast_one_to_all(seed)
    return int(seed)
