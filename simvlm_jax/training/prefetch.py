"""Device prefetch: a background thread reads the next batches and puts them on the devices while the
current step runs, so the step loop never waits for the host pipeline or a host-to-device copy."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

_END = object()


def prefetch_to_device(batches: Iterator[T], put: Callable[[T], Any], size: int = 2) -> Iterator[Any]:
    """Yields put(batch) for every batch, with up to `size` of them read and put ahead.

    `put` is e.g. `Trainer.shard_batch` (numpy -> global arrays with the data sharding; the copy is
    asynchronous). The reading thread is a daemon, so an unfinished iterator never blocks exit; an
    exception in it is raised from the next call. size <= 0 returns the plain mapped iterator.

    The source iterator runs up to `size` batches ahead of the steps: a checkpoint of it (exact data
    resume) would skip them, so the train loop turns prefetch off when it saves the iterator.
    """
    if size <= 0:
        return map(put, batches)
    ready: queue.Queue = queue.Queue(maxsize=size)

    def fill() -> None:
        try:
            for batch in batches:
                ready.put(put(batch))
            ready.put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            ready.put(error)

    threading.Thread(target=fill, daemon=True, name="prefetch_to_device").start()

    def drain() -> Iterator[Any]:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    return drain()
