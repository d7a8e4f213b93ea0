"""Tests of the embedded data: scenes, pydoc documents, TFDS builders and the vocabulary.

The TFDS datasets are prepared once per module, with the split sizes patched down to keep it fast.
"""

from __future__ import annotations

import collections
import os
import re

import numpy as np
import pytest
import sentencepiece as spm
import seqio
import tensorflow_datasets as tfds

from simvlm_jax.data import data_dirs, embedded, scenes, text_corpus, vocabulary

SMALL_SIZES = {"train": 120, "validation": 16, "heldout": 16}
VOCAB_SIZE = 2000

# "colour shape" as it appears in captions, e.g. "red triangle".
_PAIR_RE = re.compile(r"\b(%s) (%s)\b" % ("|".join(scenes.COLOUR_NAMES), "|".join(scenes.SHAPES)))


def _pairs_in_caption(caption: str) -> set[tuple[str, str]]:
    return set(_PAIR_RE.findall(caption))


def _describe(obj: dict) -> str:
    return f"a {obj['size']} {obj['colour']} {obj['shape']}"


def _as_object(obj: dict) -> scenes.SceneObject:
    return scenes.SceneObject(obj["colour"], obj["shape"], obj["size"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Everything prepared once, with small scene splits, into a temporary data directory: the
    `embedded.prepare` paths."""
    data_dir = str(tmp_path_factory.mktemp("simvlm_data"))
    return embedded.prepare(data_dir, vocab_size=VOCAB_SIZE, split_sizes=SMALL_SIZES)


# ---------------------------------------------------------------------------
# Scenes.
# ---------------------------------------------------------------------------


def test_scenes_are_deterministic_and_order_independent():
    first = list(scenes.generate_split("train", 12))
    second = list(scenes.generate_split("train", 12))
    for (img_a, cap_a, meta_a), (img_b, cap_b, meta_b) in zip(first, second):
        np.testing.assert_array_equal(img_a, img_b)
        assert (cap_a, meta_a) == (cap_b, meta_b)
    # Example i alone equals the i-th of the iterator; other splits and indices differ.
    img, cap, meta = scenes.generate_example("train", 7)
    np.testing.assert_array_equal(img, first[7][0])
    assert (cap, meta) == first[7][1:]
    assert meta["id"] == "train-00007"
    assert not np.array_equal(scenes.generate_example("validation", 7)[0], img)
    assert len({c for _, c, _ in first}) > 6
    # The caption-only path gives the same captions.
    assert list(scenes.split_captions("train", 12)) == [c for _, c, _ in first]


def test_generate_scene_shapes_and_caption_grammar():
    grammar = re.compile(
        r"^a (small|large) (%s) (%s)( (to the left of|to the right of|above|below) "
        r"a (small|large) (%s) (%s))?$" % (("|".join(scenes.COLOUR_NAMES), "|".join(scenes.SHAPES)) * 2)
    )
    counts = collections.Counter()
    for image, caption, meta in scenes.generate_split("train", 200):
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert grammar.match(caption), caption
        assert set(caption.split()) <= set(scenes.caption_vocabulary())
        counts[meta["num_objects"]] += 1
    assert 60 < counts[1] < 140 and counts[1] + counts[2] == 200  # About half each.


def test_heldout_pairs_never_in_train_or_validation():
    heldout = set(scenes.HELDOUT_PAIRS)
    # Every held-out colour and shape still occurs in training, with other partners.
    train_pairs = set()
    for caption in scenes.split_captions("train", 3000):
        pairs = _pairs_in_caption(caption)
        assert not pairs & heldout, caption
        train_pairs |= pairs
    assert {c for c, _ in heldout} <= {c for c, _ in train_pairs}
    assert {s for _, s in heldout} <= {s for _, s in train_pairs}
    assert len(train_pairs) == len(scenes.COLOUR_NAMES) * len(scenes.SHAPES) - len(heldout)
    # The same from metadata, on the whole validation split and the start of train.
    for split, count in (("validation", scenes.SPLIT_SIZES["validation"]), ("train", 500)):
        for _, caption, meta in scenes.generate_split(split, count):
            assert not meta["has_heldout_pair"]
            assert not {(o["colour"], o["shape"]) for o in meta["objects"]} & heldout, caption


def test_heldout_split_always_has_a_heldout_pair():
    seen = set()
    for _, caption, meta in scenes.generate_split("heldout", 300):
        pairs = {(o["colour"], o["shape"]) for o in meta["objects"]} & set(scenes.HELDOUT_PAIRS)
        assert pairs and meta["has_heldout_pair"], caption
        assert pairs <= _pairs_in_caption(caption)
        seen |= pairs
    assert seen == set(scenes.HELDOUT_PAIRS)


def test_relations_are_true_to_positions():
    relations = collections.Counter()
    for split in ("train", "heldout"):
        for _, caption, meta in scenes.generate_split(split, 300):
            objects = meta["objects"]
            assert caption.startswith(f"a {objects[0]['size']} {objects[0]['colour']}")
            if meta["num_objects"] == 1:
                assert meta["relation"] == ""
                continue
            a, b = objects
            ax0, ay0, ax1, ay1 = a["bbox"]
            bx0, by0, bx1, by1 = b["bbox"]
            dx, dy = b["x"] - a["x"], b["y"] - a["y"]
            expected = {  # Boxes strictly apart on the relation's axis, which dominates.
                "to the left of": ax1 < bx0 and abs(dx) > 2 * abs(dy),
                "to the right of": bx1 < ax0 and abs(dx) > 2 * abs(dy),
                "above": ay1 < by0 and abs(dy) > 2 * abs(dx),
                "below": by1 < ay0 and abs(dy) > 2 * abs(dx),
            }
            assert expected[meta["relation"]], (caption, meta)
            assert sum(expected.values()) == 1
            assert caption == f"{_describe(a)} {meta['relation']} {_describe(b)}"
            # Canonical mention order: larger first, then colour order, then shape order.
            assert scenes.mention_key(_as_object(a)) < scenes.mention_key(_as_object(b))
            relations[meta["relation"]] += 1
    assert set(relations) == set(scenes.RELATIONS)


def test_colours_and_sizes_are_in_the_pixels():
    nominal = np.array(list(scenes.COLOURS.values()), np.int32)  # [colours, 3]
    for image, caption, meta in scenes.generate_split("train", 300):
        pixels = image.astype(np.int32)
        # Background (a corner no object covers) is far from every object colour.
        corner = pixels[0, 0]
        assert np.abs(nominal - corner).max(axis=1).min() > 100, caption
        for obj in meta["objects"]:
            centre = pixels[obj["y"], obj["x"]]
            assert np.abs(centre - scenes.COLOURS[obj["colour"]]).max() <= scenes.COLOUR_JITTER
            nearest = scenes.COLOUR_NAMES[int(np.abs(nominal - centre).sum(axis=1).argmin())]
            assert nearest == obj["colour"], caption
            # Object colours are flat: count the pixels of exactly this colour.
            area = int(np.all(pixels == np.array(obj["rgb"]), axis=-1).sum())
            if obj["size"] == "small":
                assert 40 < area < 250, (caption, area)
            else:
                assert area > 250, (caption, area)


# ---------------------------------------------------------------------------
# Pydoc documents.
# ---------------------------------------------------------------------------


def test_pydoc_documents_are_english_prose():
    train, validation = text_corpus.documents("train"), text_corpus.documents("validation")
    assert len(train) > 100 and len(validation) >= 3
    assert 0.02 < len(validation) / (len(train) + len(validation)) < 0.1
    assert not {d.topic for d in train} & {d.topic for d in validation}
    ids = [d.id for d in train + validation]
    assert len(ids) == len(set(ids))
    words = []
    for doc in train + validation:
        assert len(doc.text.split()) >= text_corpus.MIN_WORDS, doc.id
        assert not re.search(r"(?m)^[*=-]{3,}$", doc.text)  # Heading underlines are removed.
        words += re.findall(r"[a-z]+", doc.text.lower())
    assert len(words) > 40_000
    frequent = collections.Counter(words)
    for word in ("the", "of", "is", "a", "and", "to"):
        assert frequent[word] / len(words) > 0.01, word
    # Validation shares no long paragraph with train.
    train_paras = {p for d in train for p in d.text.split("\n\n") if len(p.split()) >= 8}
    assert not [p for d in validation for p in d.text.split("\n\n") if p in train_paras]
    assert text_corpus.documents("train") == train  # Deterministic.


# ---------------------------------------------------------------------------
# TFDS builders.
# ---------------------------------------------------------------------------


def test_embedded_scenes_builder(prepared):
    expected = SMALL_SIZES
    assert embedded.split_counts(os.path.dirname(prepared["tfds_data_dir"]))["embedded_scenes"] == (expected)
    for split, count in expected.items():
        ds = tfds.load("embedded_scenes", split=split, data_dir=prepared["tfds_data_dir"], download=False)
        examples = list(tfds.as_numpy(ds))
        assert len(examples) == count
        for ex in examples[:8]:
            assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
            caption = ex["caption"].decode("utf-8")
            index = int(ex["id"].decode().split("-")[1])
            image, expected_caption, meta = scenes.generate_example(split, index)
            assert caption == expected_caption
            np.testing.assert_array_equal(ex["image"], image)  # PNG is lossless.
            assert ex["num_objects"] == meta["num_objects"]
            assert ex["relation"].decode() == meta["relation"]
            assert bool(ex["has_heldout_pair"]) == (split == "heldout")


def test_pydoc_text_builder(prepared):
    for split in text_corpus.SPLITS:
        ds = tfds.load("pydoc_text", split=split, data_dir=prepared["tfds_data_dir"], download=False)
        texts = {ex["id"].decode(): ex["text"].decode() for ex in tfds.as_numpy(ds)}
        assert texts == {d.id: d.text for d in text_corpus.documents(split)}


# ---------------------------------------------------------------------------
# Vocabulary.
# ---------------------------------------------------------------------------


def test_vocabulary_is_deterministic(prepared, tmp_path):
    again = embedded.prepare_vocabulary(str(tmp_path), vocab_size=VOCAB_SIZE, split_sizes=SMALL_SIZES)
    assert again != prepared["vocabulary"]
    with open(again, "rb") as f, open(prepared["vocabulary"], "rb") as g:
        assert f.read() == g.read()
    # Idempotent: a second call keeps the file.
    mtime = os.path.getmtime(again)
    assert embedded.prepare_vocabulary(str(tmp_path), vocab_size=VOCAB_SIZE, split_sizes=SMALL_SIZES) == again
    assert os.path.getmtime(again) == mtime
    with pytest.raises(ValueError, match="pieces"):
        embedded.prepare_vocabulary(str(tmp_path), vocab_size=VOCAB_SIZE + 1)


def test_vocabulary_round_trips_captions(prepared):
    vocab = seqio.SentencePieceVocabulary(prepared["vocabulary"])
    assert vocab.vocab_size == VOCAB_SIZE
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab.tokenizer.bos_id() == -1
    captions = [c for split in scenes.SPLITS for c in scenes.split_captions(split, 50)]
    for caption in captions:
        ids = vocab.encode(caption)
        assert vocab.unk_id not in ids
        assert vocab.decode(ids) == caption
    # Every caption word is a single piece (why the embedded vocabulary is BPE).
    for word in scenes.caption_vocabulary():
        assert len(vocab.encode(word)) == 1, word
    ids = vocab.encode_tf(captions[0]).numpy().tolist()
    assert ids == vocab.encode(captions[0])


def test_embedded_vocabulary_is_prepared_on_first_use(tmp_path):
    vocab = embedded.embedded_vocabulary(str(tmp_path / "lazy"))
    assert isinstance(vocab, seqio.SentencePieceVocabulary)
    path = vocab.sentencepiece_model_file
    assert path == embedded.vocabulary_path(str(tmp_path / "lazy")) and not os.path.exists(path)
    assert vocab.decode(vocab.encode("a large red circle")) == "a large red circle"
    # What `prepare` makes with the default split sizes, as `python -m simvlm_jax.data.embedded` would.
    explicit = embedded.prepare_vocabulary(str(tmp_path / "explicit"))
    with open(path, "rb") as f, open(explicit, "rb") as g:
        assert f.read() == g.read()


def test_default_data_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(data_dirs.DATA_DIR_ENV, str(tmp_path))
    assert data_dirs.default_data_dir() == str(tmp_path)
    assert embedded.vocabulary_path() == str(tmp_path / "vocab" / "simvlm_embedded.model")
    monkeypatch.delenv(data_dirs.DATA_DIR_ENV)
    assert data_dirs.default_data_dir().endswith(os.path.join(".cache", "simvlm_jax"))


def test_vocabulary_command_line(tmp_path, capsys):
    lines = [d.text.replace("\n", " ") for d in text_corpus.documents("train")[:60]]
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefix = str(tmp_path / "out" / "mine")
    argv = [f"--input={source}", f"--model_prefix={prefix}", "--vocab_size=300"]
    assert vocabulary.main(argv) == 0
    path = capsys.readouterr().out.strip()
    assert path == prefix + ".model"
    processor = spm.SentencePieceProcessor(model_file=path)
    assert processor.get_piece_size() == 300
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (
        0,
        1,
        2,
        -1,
    )
    assert os.path.exists(prefix + ".vocab")
    assert not [name for name in os.listdir(tmp_path / "out") if ".tmp" in name]


def test_embedded_command_line_prints_paths_and_counts(prepared, capsys):
    assert embedded.main([f"--data_dir={prepared['data_dir']}"]) == 0  # Already prepared.
    out = capsys.readouterr().out
    assert prepared["vocabulary"] in out
    assert f"train={SMALL_SIZES['train']}" in out
    assert f"heldout={SMALL_SIZES['heldout']}" in out


def test_vocabulary_from_a_seqio_task_and_a_file(embedded_data_dir, tmp_path, capsys):
    """`--task` reads a registered task's raw texts (here the scene captions, field `caption`), mixed with a
    text file; the model has the T5 layout and covers both."""
    from simvlm_jax.data import vocabulary as vocabulary_cli

    extra = tmp_path / "extra.txt"
    extra.write_text("zebra crossing\n" * 20, encoding="utf-8")
    prefix = str(tmp_path / "from_task")
    argv = [
        "--task=embedded_scenes_prefixlm",
        "--task_module=simvlm_jax.tasks",
        "--text_key=caption",
        "--max_texts=600",
        f"--input={extra}",
        f"--model_prefix={prefix}",
        "--vocab_size=80",
        "--model_type=bpe",
    ]
    assert vocabulary_cli.main(argv) == 0
    processor = spm.SentencePieceProcessor(model_file=capsys.readouterr().out.strip())
    assert processor.get_piece_size() == 80
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (0, 1, 2, -1)
    for text in ["a large red circle above a small blue square", "zebra crossing"]:
        assert processor.unk_id() not in processor.encode(text) and processor.decode(processor.encode(text)) == text
    with pytest.raises(ValueError, match="has no field 'text'"):
        vocabulary_cli.main(argv[:2] + [f"--model_prefix={prefix}2", "--vocab_size=80"])
