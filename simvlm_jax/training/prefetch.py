"""Batches read by a background thread: up to `size` ahead of the step loop (device prefetch), or exactly on
demand (`size=0`), while the loop waits in a way that signals can interrupt.

Reading happens off the main thread in both modes, so the main thread never sits inside TensorFlow's
`get_next` where a SIGTERM handler cannot run: it waits on a queue, asking `give_up()` every 0.2 s, and a
True answer (a stop was requested and the data did not come in time) raises `InputStalled`.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Optional, TypeVar

T = TypeVar("T")

_END = object()
_POLL_S = 0.2


class InputStalled(RuntimeError):
    """The loop stopped waiting for a batch (see `prefetch_to_device`'s `give_up`)."""


def prefetch_to_device(
    batches: Iterator[T],
    put: Callable[[T], Any],
    size: int = 2,
    give_up: Optional[Callable[[], bool]] = None,
) -> Iterator[Any]:
    """Yields put(batch) for every batch, read by a daemon thread `size` batches ahead (0: only when asked).

    `put` is e.g. `Trainer.shard_batch` (numpy -> global arrays with the data sharding; the copy is
    asynchronous). The thread is a daemon, so an unfinished iterator never blocks exit; an exception in it
    is raised from the next call.

    With `size` > 0 the source runs ahead of the steps: a checkpoint of it (exact data resume) would skip
    those batches, so the train loop uses `size=0` when it saves the iterator. With `size=0` the thread
    reads one batch per request and is idle between requests, so the source may be saved between calls.
    """
    size = max(0, size)
    ready: queue.Queue = queue.Queue()
    permits = threading.Semaphore(size)  # batches the thread may read before the consumer asks

    def fill() -> None:
        try:
            for batch in batches:
                ready.put(put(batch))
                permits.acquire()
            ready.put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            ready.put(error)

    def drain() -> Iterator[Any]:  # a generator: the thread starts with the first request
        threading.Thread(target=fill, daemon=True, name="prefetch_to_device").start()
        while True:
            item = _wait(ready, give_up)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            permits.release()  # the consumer asks for the next batch

    return drain()


def _wait(ready: queue.Queue, give_up: Optional[Callable[[], bool]]) -> Any:
    while True:
        try:
            return ready.get(timeout=_POLL_S)
        except queue.Empty:
            if give_up is not None and give_up():
                raise InputStalled("gave up waiting for the next batch") from None
