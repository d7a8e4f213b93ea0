"""Registered tasks: the real pretraining tasks over TFDS mock data, users' TFRecord pairs, and the
embedded mixture batching image-text and text-only examples together."""

import io

import numpy as np
import seqio
import tensorflow_datasets as tfds
from PIL import Image

import simvlm_jax.tasks  # noqa: F401  (registers)
from simvlm_jax.data import embedded
from simvlm_jax.data.feature_converter import SimVLMFeatureConverter
from simvlm_jax.tasks import pretraining

LENGTHS = {"inputs": 16, "targets": 16, "image": 32}


def _check_examples(examples, has_image):
    assert examples, "no examples"
    for ex in examples:
        assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.float32
        assert ex["image_mask"].tolist() == [1.0 if has_image else 0.0]
        assert (np.abs(ex["image"]).sum() > 0) == has_image
        assert len(ex["inputs"]) <= 16 and 1 <= len(ex["targets"]) <= 16 and ex["targets"][-1] == 1  # EOS


def _take(task_name, split, n=4):
    ds = seqio.get_mixture_or_task(task_name).get_dataset(
        LENGTHS, split=split, shuffle=False, seed=0, try_in_mem_cache=False
    )
    return list(ds.take(n).as_numpy_iterator())


def test_laion_and_c4_tasks_over_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        _check_examples(_take("laion400m_prefixlm", "train"), has_image=True)
        _check_examples(_take("c4_en_prefixlm", "validation"), has_image=False)
        mixture = seqio.get_mixture_or_task("simvlm_pretrain_laion_c4")
        assert [t.name for t in mixture.tasks] == ["c4_en_prefixlm", "laion400m_prefixlm"]
        rates = {task.name: mixture.get_rate(task) for task in mixture.tasks}
        assert rates["laion400m_prefixlm"] == 8 * rates["c4_en_prefixlm"]  # 4,096 pairs : 512 documents
        mixed = mixture.get_dataset(LENGTHS, split="train", shuffle=False, seed=0, try_in_mem_cache=False)
        batch = next(SimVLMFeatureConverter(pack=False)(mixed, LENGTHS).batch(4).as_numpy_iterator())
        assert batch["encoder_image"].shape == (4, 32, 32, 3)


def _png(color, size=(40, 30), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_users_tfrecord_pairs(tmp_path, embedded_data_dir):
    path = str(tmp_path / "pairs.tfrecord")
    count = pretraining.write_web_pairs(
        path,
        [
            (_png((255, 0, 0)), "a red picture"),
            (_png(128, mode="L"), "a grey picture of a cat"),
            (_png((0, 0, 255, 128), mode="RGBA"), "blue glass"),
        ],
    )
    assert count == 3
    vocab = embedded.embedded_vocabulary()  # stands in for a user's SentencePiece model
    task = pretraining.register_web_pairs_task("test_web_pairs", {"train": path}, vocabulary=vocab)
    examples = list(task.get_dataset(LENGTHS, split="train", shuffle=False, seed=0).as_numpy_iterator())
    assert len(examples) == 3
    for ex in examples:
        assert ex["image"].shape == (32, 32, 3) and ex["image_mask"] == 1.0
    red = examples[0]["image"]
    assert red[..., 0].mean() > red[..., 2].mean()  # channel order survives decoding + normalising


def _train_batches(mixture: str, count: int, size: int = 64) -> list:
    """The first `count` batches of `size` model features of a mixture's train split (seed 1)."""
    ds = seqio.get_dataset(
        mixture,
        {"inputs": 32, "targets": 32, "image": 64},
        dataset_split="train",
        shuffle=True,
        seed=1,
        feature_converter=SimVLMFeatureConverter(pack=False),
    )
    return list(ds.batch(size).take(count).as_numpy_iterator())


def test_embedded_mixture_batches_both_sources(embedded_data_dir):
    masks = np.concatenate([b["encoder_image_mask"] for b in _train_batches("embedded_prefixlm_mix", 4)])
    text_only = float(np.mean(masks == 0.0))
    assert 0.03 < text_only < 0.25, text_only  # rate 8:1 -> about 11% text-only
    assert set(np.unique(masks)) == {0.0, 1.0}


def test_the_plain_lm_ablation_has_no_text_in_the_encoder(embedded_data_dir):
    """embedded_plain_lm_mix: image -> whole caption, documents -> a window predicted from nothing (the text-only
    examples have an empty encoder, which the network handles: test_network.py)."""
    (batch,) = _train_batches("embedded_plain_lm_mix", 1)
    assert not batch["encoder_input_tokens"].any()
    text_only = batch["encoder_image_mask"].reshape(64) == 0
    assert text_only.any() and (~text_only).any()
    assert (batch["decoder_target_tokens"][text_only] > 0).sum(axis=1).min() == 32  # full windows of long docs
