"""NLVR2: the builder over fixtures in the official release format, the task's two-image examples, the
two images traced through the loader into a tiny two-image model (train step, decoding, left vs right),
the errors a bad release gives, and the two fine-tuning gin files.

The fixtures are a handful of records in exactly the released layout (lil-lab/nlvr's nlvr2/data/*.json,
JSON lines with the release's fields; the images as the direct download unpacks them) with small
generated images: each left image is reddish and each right image bluish, so the order can be checked
after decoding, and one "PNG" is a JPEG, as some of the release's are. The task is registered with a
byte vocabulary, so decoding is exact and no SentencePiece model is trained.
"""

from __future__ import annotations

import functools
import json
import os
import re

import numpy as np
import PIL.Image
import pytest
import seqio

from simvlm_jax import metrics
from simvlm_jax.data import bad_records, data_dirs, embedded, raw_files
from simvlm_jax.tasks import nlvr2
from tests.helpers import GIN_DIR, entry_point_gin, postprocessed_targets

S = 32
LENGTHS = {"inputs": 64, "targets": 8, "image": S, "num_images": 2}

# (identifier, directory or None, sentence, label) per release file.
RECORDS = {
    "train": [
        ("train-10171-0-0", 99, "The left image has twice as many dogs as the right.", "True"),
        ("train-10171-0-1", 99, "There are exactly two dogs in total.", "False"),
        ("train-7-1-0", 3, "One image shows a bird on a branch.", "False"),
    ],
    "dev": [
        ("dev-850-0-0", None, "Each image contains a single laptop.", "True"),
        ("dev-850-1-1", None, "The right image shows an open laptop.", "False"),
    ],
    "test1": [("test1-42-2-0", None, "A bus is in the left image.", "True")],
}
LEFT_COLOUR, RIGHT_COLOUR = (210, 40, 40), (40, 40, 210)
JPEG_PAIR = "train-7-1"  # its left image is a JPEG named .png


def _image_folder(root: str, split: str, directory) -> str:
    if split == "train":
        return os.path.join(root, "images", "train", str(directory))
    if split == "test1":
        return os.path.join(root, "images", "test1")  # the second layout the builder accepts
    return os.path.join(root, split)


def _write_image(path: str, colour: tuple, seed: int, image_format: str = "PNG") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    size = (20 + 4 * (seed % 5), 28)  # the images of a pair need not share a size
    noise = rng.integers(-10, 11, size=(*size, 3))
    pixels = np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)
    PIL.Image.fromarray(pixels).save(path, format=image_format)


def _release_record(identifier: str, directory, sentence: str, label: str) -> dict:
    """One line of nlvr2/data/<split>.json, with the release's fields."""
    record = {
        "validation": {"77": label},
        "sentence": sentence,
        "left_url": "https://example.com/left.jpg",
        "writer": "103",
        "label": label,
        "right_url": "https://example.com/right.jpg",
        "synset": "dog",
        "query": "dogs2",
        "identifier": identifier,
        "extra_validations": {"56": label},
    }
    if directory is not None:
        record["directory"] = directory
    return record


def write_nlvr2(root: str) -> dict[str, dict]:
    """The NLVR2 fixture under root/nlvr2; returns {identifier: record written}."""
    folder = os.path.join(root, "nlvr2")
    os.makedirs(folder, exist_ok=True)
    written = {}
    for split, records in RECORDS.items():
        with open(os.path.join(folder, f"{split}.json"), "w") as f:
            for n, (identifier, directory, sentence, label) in enumerate(records):
                record = _release_record(identifier, directory, sentence, label)
                f.write(json.dumps(record) + "\n")
                written[identifier] = record
                pair = identifier.rsplit("-", 1)[0]
                images = _image_folder(folder, split, directory)
                left_format = "JPEG" if pair == JPEG_PAIR else "PNG"
                _write_image(os.path.join(images, f"{pair}-img0.png"), LEFT_COLOUR, 2 * n, left_format)
                _write_image(os.path.join(images, f"{pair}-img1.png"), RIGHT_COLOUR, 2 * n + 1)
    return written


@pytest.fixture(scope="module")
def task(tmp_path_factory, embedded_data_dir):
    """The task over the fixture, registered with a byte vocabulary; re-registered with the defaults
    afterwards. The environment stays patched for the module (the source prepares its data on first read;
    the images are read from the raw folder whenever the data is read)."""
    raw_dir, data_dir = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("data")
    records = write_nlvr2(str(raw_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIMVLM_RAW_DATA_DIR", str(raw_dir))
        patch.setenv("SIMVLM_DATA_DIR", str(data_dir))
        yield nlvr2.register(seqio.ByteVocabulary()), records
    nlvr2.register()


def _examples(task: seqio.Task, split: str, lengths=LENGTHS) -> list[dict]:
    return list(task.get_dataset(lengths, split=split, shuffle=False).as_numpy_iterator())


def _normalised(colour) -> np.ndarray:
    return (np.array(colour) / 255.0 - np.array((0.485, 0.456, 0.406))) / np.array((0.229, 0.224, 0.225))


# ----------------------------------------------------------------------------------------------------
# The builder and the task.
# ----------------------------------------------------------------------------------------------------


def test_builder_finds_each_splits_images_in_the_release_layout(task):
    registered, _ = task
    assert [registered.num_input_examples(s) for s in ("train", "validation", "test")] == [3, 2, 1]
    train = nlvr2.read_split("train")
    assert [r["identifier"] for r in train] == [r[0] for r in RECORDS["train"]]
    assert train[0]["left_image_file"] == "images/train/99/train-10171-0-img0.png"
    assert train[1]["right_image_file"] == "images/train/99/train-10171-0-img1.png"  # both sentences share it
    assert train[2]["left_image_file"] == "images/train/3/train-7-1-img0.png"
    (dev, _) = nlvr2.read_split("validation")
    assert dev["right_image_file"] == "dev/dev-850-0-img1.png" and dev["label"] == "True"
    (test,) = nlvr2.read_split("test")
    assert test["left_image_file"] == "images/test1/test1-42-2-img0.png"


def test_task_puts_left_then_right_image_and_the_sentence_in_the_encoder(task):
    registered, records = task
    examples = _examples(registered, "train")
    assert len(examples) == 3  # the JPEG named .png included
    vocabulary = registered.output_features["targets"].vocabulary
    left, right = _normalised(LEFT_COLOUR), _normalised(RIGHT_COLOUR)
    for ex in examples:
        record = records[ex["example_id"].decode()]
        assert ex["inputs_pretokenized"].decode() == record["sentence"]
        assert vocabulary.decode(ex["inputs"].tolist()) == record["sentence"]  # no EOS
        assert ex["targets_pretokenized"].decode() == record["label"].lower()
        assert ex["targets"][-1] == vocabulary.eos_id
        assert vocabulary.decode(ex["targets"][:-1].tolist()) == record["label"].lower()
        assert ex["image"].shape == (2, S, S, 3) and ex["image_mask"].tolist() == [1.0, 1.0]
        # image 0 is img0 (left, reddish), image 1 is img1 (right, bluish): mean colours within the noise
        np.testing.assert_allclose(ex["image"][0].mean(axis=(0, 1)), left, atol=0.2)
        np.testing.assert_allclose(ex["image"][1].mean(axis=(0, 1)), right, atol=0.2)
        assert not any(key.endswith("_image_file") or key == "images" for key in ex)
    targets = postprocessed_targets(registered, examples)
    gold = [records[ex["example_id"].decode()]["label"] for ex in examples]  # "True"/"False": case ignored
    (metric,) = registered.metric_fns
    assert metric(targets, gold) == {"accuracy": 100.0, "consistency": 100.0}
    # three sentences (no two examples share one here): consistency = accuracy
    assert metric(targets, ["false"] * 3) == pytest.approx({"accuracy": 200 / 3, "consistency": 200 / 3})
    (test_example,) = _examples(registered, "test")
    assert test_example["targets_pretokenized"].decode() == "true"


def test_consistency_groups_the_examples_of_one_sentence():
    """dev-850-<pair>-0 are one sentence about three image pairs, dev-850-0-1 another: one wrong answer
    about sentence 0 makes it inconsistent; accuracy counts examples."""
    identifiers = ["dev-850-0-0", "dev-850-1-0", "dev-850-2-0", "dev-850-0-1"]
    labels = [b"true", b"false", b"true", b"false"]
    targets = [
        nlvr2.label_and_sentence(label, {"example_id": identifier.encode()}, is_target=True)
        for identifier, label in zip(identifiers, labels)
    ]
    assert [t["group"] for t in targets] == ["dev-850-0", "dev-850-0", "dev-850-0", "dev-850-1"]
    assert nlvr2.label_and_sentence("true") == "true"  # a prediction stays its text
    scores = metrics.accuracy_and_consistency(targets, ["true", "false", "false", "False "])
    assert scores == pytest.approx({"accuracy": 75.0, "consistency": 50.0})
    assert metrics.accuracy_and_consistency(targets, ["true", "false", "true", "false"])["consistency"] == 100.0
    with pytest.raises(ValueError, match="not <split>-<set_id>-<pair_id>-<sentence_id>"):
        nlvr2.sentence_group("dev-850-0")


def test_task_needs_num_images_two_in_the_feature_lengths(task):
    registered, _ = task
    lengths = {k: v for k, v in LENGTHS.items() if k != "num_images"}
    with pytest.raises(ValueError, match=r"set TASK_FEATURE_LENGTHS\['num_images'\] = 2"):
        _examples(registered, "validation", lengths)


# ----------------------------------------------------------------------------------------------------
# The two images through the data path into the model.
# ----------------------------------------------------------------------------------------------------


def _model_batch(examples: list[dict], lengths=LENGTHS) -> dict[str, np.ndarray]:
    """Task examples -> the model features SimVLMFeatureConverter makes of them, built by hand: tokens
    padded with 0, decoder inputs = targets shifted right, image [B, N, S, S, C] and image_mask [B, N]."""

    def padded(key: str, length: int) -> np.ndarray:
        return np.stack([np.pad(ex[key], (0, length - len(ex[key]))) for ex in examples]).astype(np.int32)

    targets = padded("targets", lengths["targets"])
    return {
        "encoder_input_tokens": padded("inputs", lengths["inputs"]),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
        "decoder_loss_weights": (targets > 0).astype(np.int32),
        "encoder_image": np.stack([ex["image"] for ex in examples]),
        "encoder_image_mask": np.stack([ex["image_mask"] for ex in examples]),
    }


@pytest.fixture(scope="module")
def batch_and_model(task):
    """The first two train examples as a model batch, and a tiny two-image model for the byte vocabulary."""
    from tests.helpers import make_model

    registered, _ = task
    batch = _model_batch(_examples(registered, "train")[:2])
    vocab_size = registered.output_features["targets"].vocabulary.vocab_size
    return batch, make_model(max_images=2, image_size=S, vocab_size=vocab_size)


def test_loader_batches_carry_both_images(batch_and_model):
    """`loader.get_dataset` (the trainer's data path) gives the batch above: both images, left first."""
    from simvlm_jax.data import loader
    from simvlm_jax.data.feature_converter import model_input_specs
    from simvlm_jax.training.run_config import DatasetConfig

    expected, _ = batch_and_model
    config = DatasetConfig(
        mixture_or_task_name="nlvr2",
        task_feature_lengths=LENGTHS,
        split="train",
        batch_size=2,
        shuffle=False,
        seed=0,
        module="simvlm_jax.tasks.nlvr2",
    )
    batch = next(loader.numpy_batches(iter(loader.get_dataset(config, num_epochs=1))))
    shapes, types = model_input_specs(LENGTHS, batch_size=2)
    assert {k: v.shape for k, v in batch.items()} == shapes
    assert batch["encoder_image"].shape == (2, 2, S, S, 3) and batch["encoder_image_mask"].shape == (2, 2)
    assert all(batch[k].dtype == types[k] for k in shapes)
    for key, value in expected.items():
        np.testing.assert_allclose(batch[key], value, atol=1e-6, err_msg=key)


def test_config_checks_accept_two_images_only_with_max_images_two(batch_and_model):
    from simvlm_jax.network import tiny_config
    from simvlm_jax.training import config_checks

    _, model = batch_and_model
    config_checks.check_feature_lengths(LENGTHS, model.module.config)
    with pytest.raises(config_checks.ConfigError, match=r"max_images = 2"):
        config_checks.check_feature_lengths(LENGTHS, tiny_config(max_images=1))


def test_tiny_two_image_model_trains_and_decodes_the_batch(batch_and_model):
    import jax
    import optax

    from simvlm_jax.training import trainer

    batch, model = batch_and_model
    assert batch["encoder_image"].shape == (2, 2, S, S, 3) and batch["encoder_image_mask"].tolist() == [[1, 1]] * 2
    params = model.get_initial_variables(jax.random.key(0), {k: v.shape for k, v in batch.items()})["params"]
    assert params["image_index_embedding"]["embedding"].shape == (2, model.module.config.emb_dim)
    optimizer = optax.adamw(1e-3)
    state = trainer.TrainState(step=np.int32(0), params=params, opt_state=optimizer.init(params))
    step = jax.jit(functools.partial(trainer.train_step, model, optimizer, None, jax.random.key(1)))
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"].compute())) and float(metrics["nonfinite_steps"].compute()) == 0.0
    assert float(metrics["grad_norm"].compute()) > 0.0
    tokens, aux = model.predict_batch_with_aux(state.params, batch)
    assert tokens.shape == batch["decoder_target_tokens"].shape and np.all(np.isfinite(aux["scores"]))


def test_swapping_left_and_right_changes_the_encoding_through_the_image_index(batch_and_model):
    """Without the image-index embedding, swapping the images would only permute the image tokens: the text
    positions' encodings would not change. With it, they do."""
    import flax
    import jax

    batch, model = batch_and_model
    params = model.get_initial_variables(jax.random.key(0), {k: v.shape for k, v in batch.items()})["params"]
    params = flax.core.unfreeze(params)  # a copy we may edit
    swapped = {**batch, "encoder_image": batch["encoder_image"][:, ::-1]}
    text = slice(-batch["encoder_input_tokens"].shape[1], None)  # [image 0 ; image 1 ; text]

    def text_encoding(p, b):
        encoded, mask = model.encode(p, b)
        return np.asarray(encoded)[:, text][np.asarray(mask)[:, text]]

    assert not np.allclose(text_encoding(params, batch), text_encoding(params, swapped), atol=1e-5)
    params["image_index_embedding"]["embedding"] = np.zeros_like(params["image_index_embedding"]["embedding"])
    np.testing.assert_allclose(text_encoding(params, batch), text_encoding(params, swapped), atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Errors and bad records.
# ----------------------------------------------------------------------------------------------------


def _rewrite(path: str, edit) -> None:
    with open(path) as f:
        lines = f.readlines()
    with open(path, "w") as f:
        f.writelines(edit(lines))


def test_malformed_release_lines_name_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path))
    write_nlvr2(str(tmp_path))
    path = os.path.join(str(tmp_path), "nlvr2", "train.json")
    original = open(path).readlines()

    def with_second(record_edit):
        record = json.loads(original[1])
        record_edit(record)
        return lambda lines: [original[0], json.dumps(record) + "\n", *original[2:]]

    _rewrite(path, lambda lines: [lines[0], '{"identifier": "train-10171-0-1", "sentence": \n', *lines[2:]])
    with pytest.raises(raw_files.MalformedFileError, match=r"nlvr2/train\.json:2: not valid JSON"):
        nlvr2.read_split("train")
    _rewrite(path, with_second(lambda r: r.update(label="maybe")))
    with pytest.raises(raw_files.MalformedFileError, match=r"train\.json:2: label 'maybe' is not one of"):
        nlvr2.read_split("train")
    _rewrite(path, with_second(lambda r: r.pop("sentence")))
    with pytest.raises(raw_files.MalformedFileError, match=r"train\.json:2: no 'sentence' field"):
        nlvr2.read_split("train")
    _rewrite(path, with_second(lambda r: r.pop("directory")))
    with pytest.raises(raw_files.MalformedFileError, match=r"train\.json:2: no 'directory' field"):
        nlvr2.read_split("train")
    _rewrite(path, with_second(lambda r: r.update(identifier="train-10171")))
    with pytest.raises(raw_files.MalformedFileError, match=r"train\.json:2: identifier 'train-10171' is not"):
        nlvr2.read_split("train")


def test_missing_image_is_named_with_its_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path / "raw"))
    write_nlvr2(str(tmp_path / "raw"))
    os.remove(os.path.join(str(tmp_path / "raw"), "nlvr2", "dev", "dev-850-1-img1.png"))
    with pytest.raises(
        FileNotFoundError, match=r"dev\.json:2: the right image .*nlvr2/dev/dev-850-1-img1\.png is missing"
    ):
        data_dirs.prepare_builder(nlvr2.Nlvr2, data_dir=str(tmp_path / "data"))


def test_missing_release_files_give_the_require_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"nlvr2 dataset is not prepared: missing .*nlvr2/test1\.json"):
        nlvr2.read_split("test")


def test_an_image_that_does_not_decode_drops_its_example_or_stops_the_run(tmp_path, monkeypatch):
    """The images are read when the data is read: one corrupted after preparation is a bad record."""
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("SIMVLM_DATA_DIR", str(tmp_path / "data"))
    write_nlvr2(str(tmp_path / "raw"))
    try:
        registered = nlvr2.register(seqio.ByteVocabulary())
        assert len(_examples(registered, "validation")) == 2
        with open(os.path.join(str(tmp_path / "raw"), "nlvr2", "dev", "dev-850-0-img1.png"), "wb") as f:
            f.write(b"not an image")
        (kept,) = _examples(registered, "validation")
        assert kept["example_id"].decode() == "dev-850-1-1"
        with bad_records.applied(bad_records.RecordPolicy(on_bad="fail")):
            with pytest.raises(Exception, match=r"record with text 'dev-850-0-0 Each image.*corrupt_image"):
                _examples(registered, "validation")
        # Every right image bad: the bound on bad examples in a row stops the read (good left images
        # do not reset it).
        with open(os.path.join(str(tmp_path / "raw"), "nlvr2", "dev", "dev-850-1-img1.png"), "wb") as f:
            f.write(b"")
        with bad_records.applied(bad_records.RecordPolicy(max_bad_in_a_row=2)):
            with pytest.raises(Exception, match=r"task 'nlvr2' gave 2 bad records in a row at image decoding"):
                _examples(registered, "validation")
    finally:
        nlvr2.register()


def test_default_registration_uses_the_pretraining_vocabulary(monkeypatch):
    monkeypatch.delenv("SIMVLM_SPM_MODEL", raising=False)
    try:
        registered = nlvr2.register()
        vocabulary = registered.output_features["targets"].vocabulary  # SIMVLM_SPM_MODEL unset: the embedded one
        assert isinstance(vocabulary, embedded.EmbeddedVocabulary)
        assert seqio.get_mixture_or_task("nlvr2") is registered
        assert registered.output_features["image"].rank == 4
    finally:
        nlvr2.register()


# ----------------------------------------------------------------------------------------------------
# The gin files.
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nlvr2.gin", "nlvr2_tiny.gin"])
def test_finetune_gin_parses_and_builds_a_two_image_model(name):
    import gin

    from simvlm_jax.cli import gin_flags
    from simvlm_jax.model import simvlm_model
    from simvlm_jax.training import config_checks, partial_restore

    with entry_point_gin():
        gin.add_config_file_search_path(GIN_DIR)
        gin.parse_config_files_and_bindings(
            [os.path.join(GIN_DIR, "finetune", name)],
            ["MODEL_DIR = '/tmp/x'", "INITIAL_CHECKPOINT_PATH = '/tmp/pretrained/checkpoint_1'"],
            finalize_config=False,
        )
        assert gin_flags.missing_required_macros() == []
        assert gin.query_parameter("%MIXTURE_OR_TASK_NAME") == "nlvr2"
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        assert isinstance(model, simvlm_model.SimVLMModel)
        lengths = gin.query_parameter("%TASK_FEATURE_LENGTHS")
        assert lengths["num_images"] == 2 and model.module.config.max_images == 2
        assert lengths["image"] == model.module.config.image_size
        config_checks.check_feature_lengths(lengths, model.module.config)
        start, steps = gin.query_parameter("%INITIAL_STEP"), gin.query_parameter("%TRAIN_STEPS")
        peak = gin.query_parameter("%PEAK_LEARNING_RATE")
        if "tiny" not in name:  # the paper's fine-tuning recipe
            assert peak in (1e-5, 2e-5, 5e-5)
            assert gin.query_parameter("%DROPOUT_RATE") == 0.1
            assert gin.query_parameter("%STOCHASTIC_DEPTH_RATE") == 0.1
        schedule = gin.query_parameter("%LEARNING_RATE_SCHEDULE").scoped_configurable_fn()
        warmup = max(1, round(0.02 * (steps - start)))
        assert float(schedule(start)) == 0.0 and float(schedule(start + warmup)) == pytest.approx(peak)
        # A one-image checkpoint has no image-index table: it keeps its initial value; the rest is restored.
        assignment_map = gin.query_parameter("utils.RestoreCheckpointConfig.assignment_map")
        assert partial_restore.source_key("target/image_index_embedding/embedding", assignment_map) is None
        assert partial_restore.source_key("target/shared_embedding/embedding", assignment_map) is not None


@pytest.mark.subprocess
def test_tiny_nlvr2_gin_fine_tunes_a_one_image_checkpoint_and_scores_the_dev_split(
    model_dir, embedded_data_dir, tmp_path
):
    """The tiny gin through the command line, shortened: steps on `nlvr2` from the session's one-image tiny
    checkpoint (random parameters, no optimizer state, no image-index table), then the dev split decoded
    and scored with accuracy. The session's SIMVLM_DATA_DIR holds the vocabulary."""
    from tests.helpers import run_module

    written = write_nlvr2(str(tmp_path / "raw"))
    run_dir = str(tmp_path / "run")
    done = run_module(
        "simvlm_jax.train",
        f"--gin_file={os.path.join(GIN_DIR, 'finetune', 'nlvr2_tiny.gin')}",
        f"--gin.INITIAL_CHECKPOINT_PATH={os.path.join(model_dir, 'checkpoint_1')}",
        f"--gin.MODEL_DIR={run_dir}",
        "--gin.INITIAL_STEP=1",
        "--gin.TRAIN_STEPS=3",
        "--gin.BATCH_SIZE=2",
        "--gin.EVAL_PERIOD=2",
        "--gin.EVAL_STEPS=1",
        "--gin.CHECKPOINT_PERIOD=2",
        "--gin.train.stats_period=1",
        "--gin.utils.RestoreCheckpointConfig.assignment_map="
        "((r'target/image_index_embedding/.*', None), (r'state/.*', None))",
        env={"SIMVLM_RAW_DATA_DIR": str(tmp_path / "raw"), "SIMVLM_DATA_DIR": embedded_data_dir},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "step 3/3" in done.stdout
    listing = os.listdir(os.path.join(run_dir, "inference_eval"))
    assert "nlvr2-metrics.jsonl" in listing, (listing, done.stdout[-3000:])
    with open(os.path.join(run_dir, "inference_eval", "nlvr2-metrics.jsonl")) as f:
        scores = json.loads(f.read().splitlines()[-1])
    # The scores are NLVR2's official accuracy and consistency of the logged predictions, computed here
    # from the release records (the label of each identifier) independently of the task's metric.
    with open(os.path.join(run_dir, "inference_eval", f"nlvr2-{scores['step']:06d}.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert sorted(r["input"]["example_id"] for r in rows) == sorted(i for i in written if i.startswith("dev-"))
    right = {
        r["input"]["example_id"]: r["prediction"].strip().lower() == written[r["input"]["example_id"]]["label"].lower()
        for r in rows
    }
    sentences: dict[str, list[bool]] = {}
    for identifier, ok in right.items():
        split, set_id, _, sentence_id = identifier.split("-")
        sentences.setdefault(f"{split}-{set_id}-{sentence_id}", []).append(ok)
    assert scores["accuracy"] == pytest.approx(100 * sum(right.values()) / len(right), abs=1e-4), (scores, rows)
    expected_consistency = 100 * sum(all(oks) for oks in sentences.values()) / len(sentences)
    assert scores["consistency"] == pytest.approx(expected_consistency, abs=1e-4), (scores, rows)
    # The report shows both images of every pair, and where the decoder looked in each.
    page = open(os.path.join(run_dir, "inference_eval", "report.html")).read()
    assert page.count("<tr data-index=") == len(rows)
    assert page.count('<img class="thumb" src="data:') == 2 * len(rows)
    assert page.count('<img class="thumb attention" src="data:') == 2 * min(16, len(rows))
    assert sorted(re.findall(r'data-score="([^"]*)"', page)) == sorted(
        "100.0" if ok else "0.0" for ok in right.values()
    )
