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
