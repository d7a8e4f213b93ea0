"""Learning-rate schedules as optax schedules (step -> learning rate), usable by optax and T5X alike."""

from __future__ import annotations

import optax


def warmup_linear_decay(
    peak_value: float,
    total_steps: int,
    warmup_fraction: float = 0.02,
    end_value: float = 0.0,
    start_step: int = 0,
) -> optax.Schedule:
    """SimVLM's schedule: linear warm-up over the first `warmup_fraction` of training to `peak_value`,
    then linear decay to `end_value` at `total_steps` (paper: 2% warm-up, peak 5e-4; assumed, see docs).

    `start_step` shifts the whole schedule to run over [start_step, total_steps]: fine-tuning from a
    checkpoint of step 1200 for 600 steps is start_step=1200, total_steps=1800 (T5X's convention: the
    step count goes on from the checkpoint's, and TRAIN_STEPS is absolute).
    """
    length = total_steps - start_step
    if length < 1:
        raise ValueError(
            f"total_steps ({total_steps}) must be larger than start_step ({start_step}): set "
            "TRAIN_STEPS above INITIAL_STEP (fine-tuning) or above 0."
        )
    warmup_steps = max(1, int(round(warmup_fraction * length)))
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak_value, warmup_steps),
            optax.linear_schedule(peak_value, end_value, max(1, length - warmup_steps)),
        ],
        boundaries=[warmup_steps],
    )
    if start_step == 0:
        return schedule
    return lambda count: schedule(count - start_step)
