"""Stop cleanly on SIGTERM / SIGINT: the train loop saves a checkpoint at the current step and returns.

Preemptible machines send SIGTERM before they go; Ctrl-C sends SIGINT. Either sets a flag that the loop
reads after each step (no host sync on one process). With several processes the hosts must stop at the
same step, by either of two routes:

- JAX's preemption sync point: when `jax.distributed` is initialised, its coordination service gets
  the scheduler's preemption notice (SIGTERM to any process) and
  `multihost_utils.reached_preemption_sync_point(step)` turns True on every process at the same step.
  It is asked after every step (a local check until a notice arrives).
- Our own flag, for signals the service does not see (e.g. SIGINT to one process): all-gathered at the
  loop's sync points (every `stats_period` steps), and every host stops there.

A second signal interrupts at once.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Optional

import jax
import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager that turns SIGTERM/SIGINT into a request the train loop honours."""

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._signal_time: Optional[float] = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers only install there
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:  # the second signal: stop now
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} received twice")
        self.signal_name = signal.Signals(signum).name
        self._signal_time = time.monotonic()
        print(f"{self.signal_name} received: saving a checkpoint after this step, then stopping.", flush=True)

    def seconds_since_request(self) -> float:
        """Seconds since the signal arrived (-inf before one)."""
        return -float("inf") if self._signal_time is None else time.monotonic() - self._signal_time

    def requested_here(self) -> bool:
        """Whether this process got a signal, when it runs alone: an evaluation then stops early. (With
        several processes an evaluation runs to its end, so that every host leaves it at the same batch.)"""
        return self.signal_name is not None and jax.process_count() == 1

    def should_stop(self, step: int, at_sync_point: bool) -> bool:
        """Whether to stop after `step` (all processes agree on the answer)."""
        if jax.process_count() == 1:
            return self.signal_name is not None
        from jax.experimental import multihost_utils

        if _reached_jax_preemption_sync_point(multihost_utils, step):
            self.signal_name = self.signal_name or "a preemption notice"
            return True
        if not at_sync_point:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self.signal_name is not None, np.int32))
        return bool(np.any(flags))


def _reached_jax_preemption_sync_point(multihost_utils, step: int) -> bool:
    """JAX's agreed preemption step; False where jax.distributed (and its preemption service) is absent."""
    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except (RuntimeError, AttributeError, ValueError):
        return False
