"""The PrefixLM split, the preprocessors and the feature converter on mixed batches."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from simvlm_jax.data import preprocessors
from simvlm_jax.data.feature_converter import SimVLMFeatureConverter

LENGTHS = {"inputs": 6, "targets": 5, "image": 8}


@pytest.mark.parametrize("min_prefix,max_prefix,min_target", [(0, None, 1), (2, None, 1), (0, 3, 2), (0, 0, 1)])
def test_prefix_split_bounds_hold_for_every_length(min_prefix, max_prefix, min_target):
    max_in, max_t = LENGTHS["inputs"], LENGTHS["targets"]
    for n in range(0, max_in + max_t):  # every cropped length 0 .. max_in + max_t - 1
        low, high = (
            int(v)
            for v in preprocessors.prefix_split_bounds(
                tf.constant(n), max_in, max_t, min_prefix, max_prefix, min_target
            )
        )
        assert 0 <= low <= high <= min(n, max_in), (n, low, high)
        assert n - low <= max_t - 1  # the suffix and EOS fit the decoder for every k in range
        if n >= min_prefix + min_target and n <= max_in + max_t - 1 - 0:
            # the user's bounds hold wherever the hard limits allow them
            if n - (max_t - 1) <= min(max_in, n - min_target, max_prefix if max_prefix is not None else max_in):
                assert high <= n - min_target, (n, high)
                if max_prefix is not None:
                    assert high <= max(max_prefix, n - (max_t - 1))
            if min_prefix <= min(max_in, n - min_target):
                assert low >= min_prefix


def _split(texts, seed, **kwargs):
    ds = tf.data.Dataset.from_tensor_slices({"text_tokens": tf.ragged.constant(texts)})
    ds = ds.map(lambda ex: {"text_tokens": ex["text_tokens"]})
    with seqio.utils.map_seed_manager(seed):
        out = preprocessors.prefix_lm_split(ds, LENGTHS, **kwargs)
    return [(list(ex["inputs"]), list(ex["targets"])) for ex in out.as_numpy_iterator()]


def test_prefix_split_keeps_order_and_is_deterministic_given_seed():
    texts = [list(range(10, 10 + n)) for n in (1, 3, 7, 10)] * 8
    first, second = _split(texts, seed=3), _split(texts, seed=3)
    assert first == second
    assert _split(texts, seed=4) != first  # another seed, another split
    for text, (inputs, targets) in zip(texts, first):
        assert inputs + targets == text  # a split, nothing lost or reordered
        assert len(inputs) <= LENGTHS["inputs"] and len(targets) <= LENGTHS["targets"] - 1
        assert len(targets) >= 1  # at least one token to predict
    # k really varies: over 8 copies of the 7-token text several prefix lengths occur
    assert len({len(i) for t, (i, _) in zip(texts, first) if len(t) == 7}) >= 3


def test_prefix_split_with_zero_max_prefix_is_captioning():
    out = _split([[5, 6, 7]], seed=0, max_prefix_tokens=0)
    assert out == [([], [5, 6, 7])]


def test_overlong_text_is_cropped_to_what_fits():
    ((inputs, targets),) = _split([list(range(1, 30))], seed=0)
    assert inputs + targets == list(range(1, LENGTHS["inputs"] + LENGTHS["targets"]))


def test_long_documents_get_every_prefix_length_from_anywhere_in_the_document():
    """random_window=True (text-only tasks): on documents far longer than the window, k covers its whole
    range 0 .. inputs about uniformly, the window starts all over the document, and the prefix and target are
    contiguous pieces of it (targets full)."""
    max_in, max_t = LENGTHS["inputs"], LENGTHS["targets"]
    document = list(range(1, 201))
    out = _split([document] * 700, seed=5, random_window=True)
    prefix_lengths = np.bincount([len(i) for i, _ in out], minlength=max_in + 1)
    assert len(prefix_lengths) == max_in + 1 and prefix_lengths.min() >= 60, prefix_lengths  # 100 expected each
    starts = []
    for inputs, targets in out:
        assert len(targets) == max_t - 1
        piece = inputs + targets
        start = piece[0] - 1
        assert piece == document[start : start + len(piece)]
        starts.append(start)
    assert min(starts) < 10 and max(starts) > 180  # the whole document is used
    # Without the window (captions), a long text is cropped to its start and k is forced to fill the encoder.
    cropped = _split([document] * 20, seed=5)
    assert {len(i) for i, _ in cropped} == {max_in} and all(i[0] == 1 for i, _ in cropped)
    # Short texts split as before, window or not.
    short = [list(range(10, 10 + n)) for n in (1, 3, 7, 10)] * 4
    assert _split(short, seed=3, random_window=True) == _split(short, seed=3)


def test_plain_language_modelling_on_long_documents_has_an_empty_prefix():
    out = _split([list(range(1, 100))] * 10, seed=1, random_window=True, max_prefix_tokens=0)
    assert all(inputs == [] and len(targets) == LENGTHS["targets"] - 1 for inputs, targets in out)


def _example(tokens, image_value, has_image):
    return {
        "inputs": np.asarray(tokens[:2], np.int32),
        "targets": np.asarray(tokens[2:] + [1], np.int32),
        "image": np.full((8, 8, 3), image_value, np.float32),
        "image_mask": np.array([has_image], np.float32),
    }


def test_feature_converter_on_a_mixed_batch():
    examples = [_example([7, 8, 9, 10], 0.5, 1.0), _example([11, 12, 13], 0.0, 0.0)]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={
            "inputs": tf.TensorSpec([None], tf.int32),
            "targets": tf.TensorSpec([None], tf.int32),
            "image": tf.TensorSpec([8, 8, 3], tf.float32),
            "image_mask": tf.TensorSpec([1], tf.float32),
        },
    )
    converted = SimVLMFeatureConverter(pack=False)(ds, LENGTHS)
    batch = next(converted.batch(2).as_numpy_iterator())
    assert set(batch) == {
        "encoder_input_tokens",
        "decoder_input_tokens",
        "decoder_target_tokens",
        "decoder_loss_weights",
        "encoder_image",
        "encoder_image_mask",
    }
    np.testing.assert_array_equal(batch["encoder_input_tokens"], [[7, 8, 0, 0, 0, 0], [11, 12, 0, 0, 0, 0]])
    np.testing.assert_array_equal(batch["decoder_target_tokens"], [[9, 10, 1, 0, 0], [13, 1, 0, 0, 0]])
    np.testing.assert_array_equal(batch["decoder_input_tokens"], [[0, 9, 10, 1, 0], [0, 13, 1, 0, 0]])
    np.testing.assert_array_equal(batch["decoder_loss_weights"], [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(batch["encoder_image_mask"], [[1.0], [0.0]])
    assert batch["encoder_image"].shape == (2, 8, 8, 3) and batch["encoder_image"][0, 0, 0, 0] == 0.5


def test_one_feature_converter_serves_two_images_then_one():
    """A converter used for a two-image task (NLVR2) converts a one-image task next (an evaluator over a
    mixture reuses one instance): the image's rank follows each call, not the first."""

    def dataset(image_shape, mask_shape):
        example = {
            "inputs": np.array([7, 8], np.int32),
            "targets": np.array([9, 1], np.int32),
            "image": np.zeros(image_shape, np.float32),
            "image_mask": np.ones(mask_shape, np.float32),
        }
        return tf.data.Dataset.from_tensors(example)

    converter = SimVLMFeatureConverter(pack=False)
    two = next(converter(dataset((2, 8, 8, 3), (2,)), {**LENGTHS, "num_images": 2}).as_numpy_iterator())
    assert two["encoder_image"].shape == (2, 8, 8, 3) and two["encoder_image_mask"].shape == (2,)
    one = next(converter(dataset((8, 8, 3), (1,)), LENGTHS).as_numpy_iterator())
    assert one["encoder_image"].shape == (8, 8, 3) and one["encoder_image_mask"].shape == (1,)


def test_feature_converter_refuses_packing():
    with pytest.raises(ValueError, match="cannot be packed"):
        SimVLMFeatureConverter(pack=True)


def test_images_of_any_mode_are_decoded_resized_and_normalised():
    import io

    from PIL import Image

    encoded = []
    for mode in ("L", "RGBA", "P", "RGB"):
        buffer = io.BytesIO()
        Image.new(mode, (37, 23), color=200 if mode in ("L", "P") else (200, 10, 10, 255)[: len(mode)]).save(
            buffer, "PNG"
        )
        encoded.append(buffer.getvalue())
    ds = tf.data.Dataset.from_tensor_slices({"image": encoded})
    ds = preprocessors.resize_and_normalize_image(preprocessors.decode_image(ds), {"image": 16})
    for ex in ds.as_numpy_iterator():
        assert ex["image"].shape == (16, 16, 3) and ex["image"].dtype == np.float32
        assert ex["image_mask"] == 1.0
        assert np.all(np.isfinite(ex["image"]))


def test_blank_image_for_text_only():
    ds = tf.data.Dataset.from_tensor_slices({"text": ["hello world"]})
    ex = next(preprocessors.add_blank_image(ds, {"image": 16}).as_numpy_iterator())
    assert ex["image_mask"] == 0.0 and ex["image"].shape == (16, 16, 3) and not ex["image"].any()


def test_missing_image_length_is_a_clear_error():
    ds = tf.data.Dataset.from_tensor_slices({"text": ["x"]})
    with pytest.raises(ValueError, match=r"TASK_FEATURE_LENGTHS\['image'\]"):
        preprocessors.add_blank_image(ds, {"inputs": 4, "targets": 4})
