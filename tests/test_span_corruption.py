"""T5 span corruption (the objective ablation): spans, sentinels, and the tasks that use it."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from simvlm_jax.data import span_corruption
from simvlm_jax.data.span_corruption import corrupt_spans, corrupted_mask

SENTINEL = 99  # the first sentinel id in these tests; the k-th is 99 - k


def _restore(inputs, targets):
    """The original tokens from (inputs, targets): each sentinel in the inputs takes its target span."""
    spans, current = {}, None
    for token in targets:
        if token > SENTINEL - 10:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    restored = []
    for token in inputs:
        restored.extend(spans[token] if token > SENTINEL - 10 else [token])
    return restored


def test_corrupt_spans_replaces_each_run_by_its_sentinel():
    tokens = tf.constant([10, 11, 12, 13, 14, 15, 16])
    mask = tf.constant([False, True, True, False, False, True, False])
    inputs, targets = corrupt_spans(tokens, mask, SENTINEL)
    assert inputs.numpy().tolist() == [10, 99, 13, 14, 98, 16]
    assert targets.numpy().tolist() == [99, 11, 12, 98, 15]
    # A run at the very start (after a roll) gets the first sentinel too.
    inputs, targets = corrupt_spans(tokens, tf.constant([True] + [False] * 5 + [True]), SENTINEL)
    assert inputs.numpy().tolist() == [99, 11, 12, 13, 14, 15, 98]
    assert targets.numpy().tolist() == [99, 10, 98, 16]


@pytest.mark.parametrize("length", [2, 5, 10, 32])
def test_masks_have_the_density_and_spans_are_spread_and_restorable(length):
    tokens = tf.range(length)
    hits = np.zeros(length)
    for i in range(300):
        mask = corrupted_mask(tf.constant(length), 0.15, 3.0, tf.constant([i, 7]))
        assert mask.shape == (length,)
        assert mask.numpy().sum() == min(max(round(length * 0.15), 1), length - 1)
        inputs, targets = corrupt_spans(tokens, mask, SENTINEL)
        assert _restore(inputs.numpy().tolist(), targets.numpy().tolist()) == list(range(length))
        hits += mask.numpy()
    # The random roll: every position is corrupted sometimes, not only the end of the text.
    assert np.all(hits > 0), hits


def test_a_single_token_is_not_corrupted():
    assert not np.any(corrupted_mask(tf.constant(1), 0.15, 3.0, tf.constant([0, 1])).numpy())


def test_a_vocabulary_without_sentinels_is_refused():
    features = {"targets": seqio.Feature(seqio.PassThroughVocabulary(100), add_eos=True)}
    dataset = tf.data.Dataset.from_tensors({"text_tokens": tf.range(5)})
    with pytest.raises(ValueError, match="needs sentinel ids"):
        span_corruption.span_corruption(dataset, {"inputs": 8, "targets": 8}, features)


def test_the_embedded_span_corruption_tasks_emit_sentinels_and_keep_the_image(embedded_data_dir):
    from simvlm_jax.tasks import embedded

    vocabulary = embedded.VOCABULARY_WITH_SENTINELS
    first_sentinel = vocabulary.vocab_size - 1
    assert vocabulary.vocab_size == 2000 + embedded.SENTINEL_IDS
    for name, has_image in (("embedded_scenes_span_corruption", 1.0), ("embedded_text_span_corruption", 0.0)):
        dataset = seqio.get_mixture_or_task(name).get_dataset(
            {"inputs": 32, "targets": 32, "image": 64}, split="validation", shuffle=False, seed=0
        )
        for example in dataset.take(8).as_numpy_iterator():
            inputs, targets = example["inputs"].tolist(), example["targets"].tolist()
            assert targets[0] == first_sentinel and targets[-1] == 1  # first sentinel ... EOS
            assert first_sentinel in inputs
            assert example["image_mask"].tolist() == [has_image]
