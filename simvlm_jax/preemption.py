"""Stop cleanly on SIGTERM / SIGINT: the train loop saves a checkpoint at the current step and returns.

Preemptible machines send SIGTERM before they go; Ctrl-C sends SIGINT. Either sets a flag that the loop
reads after each step (no host sync on one process). With several processes the hosts must stop at the
same step, so the flag is combined across processes at the loop's sync points (every `stats_period`
steps) and every host stops there. A second signal interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

import jax
import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager that turns SIGTERM/SIGINT into a request the train loop honours."""

    def __init__(self):
        self.signal_name: Optional[str] = None
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
        print(f"{self.signal_name} received: saving a checkpoint after this step, then stopping.", flush=True)

    def should_stop(self, at_sync_point: bool) -> bool:
        """Whether to stop after the current step (all processes agree on the answer)."""
        if jax.process_count() == 1:
            return self.signal_name is not None
        if not at_sync_point:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self.signal_name is not None, np.int32))
        return bool(np.any(flags))
