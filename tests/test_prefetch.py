"""Device prefetch keeps order, applies `put`, and hands the reader's errors to the consumer."""

import pytest

from simvlm_jax.training.prefetch import prefetch_to_device


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetch_yields_every_batch_in_order(size):
    assert list(prefetch_to_device(iter(range(10)), lambda x: 2 * x, size)) == [2 * x for x in range(10)]


def test_prefetch_raises_the_readers_error():
    def batches():
        yield 1
        raise RuntimeError("bad shard")

    out = prefetch_to_device(batches(), lambda x: x, 2)
    assert next(out) == 1
    with pytest.raises(RuntimeError, match="bad shard"):
        next(out)


@pytest.mark.parametrize("size", [0, 2])
def test_the_reader_runs_at_most_size_batches_ahead(size):
    """size=0 reads only when asked (so the source may be checkpointed between calls)."""
    import time

    read = []

    def batches():
        for i in range(10):
            read.append(i)
            yield i

    out = prefetch_to_device(batches(), lambda x: x, size)
    for consumed in range(1, 5):
        assert next(out) == consumed - 1
        time.sleep(0.2)  # time for the reader to run ahead, if it would
        assert len(read) <= consumed + size, (consumed, read)
    assert len(read) == 4 + size


def test_a_waiting_consumer_gives_up_when_asked_and_is_not_stuck_in_the_source():
    import threading
    import time

    from simvlm_jax.training.prefetch import InputStalled

    never = threading.Event()

    def stuck():
        yield 0
        never.wait()  # a source that never yields again (a stuck input pipeline)
        yield 1

    asked = []
    out = prefetch_to_device(stuck(), lambda x: x, 0, give_up=lambda: len(asked) > 3 or asked.append(1))
    assert next(out) == 0
    start = time.monotonic()
    with pytest.raises(InputStalled):
        next(out)
    assert len(asked) == 4 and time.monotonic() - start < 5
    never.set()
