"""Learning-rate schedules as optax schedules (step -> learning rate), usable by optax and T5X alike."""

from __future__ import annotations

import optax


def warmup_linear_decay(
    peak_value: float, total_steps: int, warmup_fraction: float = 0.02, end_value: float = 0.0
) -> optax.Schedule:
    """SimVLM's schedule: linear warm-up over the first `warmup_fraction` of training to `peak_value`,
    then linear decay to `end_value` at `total_steps` (paper: 2% warm-up, peak 5e-4; assumed, see docs)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}.")
    warmup_steps = max(1, int(round(warmup_fraction * total_steps)))
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak_value, warmup_steps),
            optax.linear_schedule(peak_value, end_value, max(1, total_steps - warmup_steps)),
        ],
        boundaries=[warmup_steps],
    )
