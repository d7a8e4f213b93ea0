"""SNLI-VE and Multi30k En-De: the builders over fixtures in the official release formats, the tasks'
examples and metrics, the errors a bad release file gives, and the four fine-tuning gin files.

The fixtures are a handful of records in exactly the released layouts (necla-ml/SNLI-VE's
snli_ve_*.jsonl; multi30k/dataset's data/task1/raw/*.gz and image_splits/*.txt) with small generated
JPEGs. The tasks are registered with a byte vocabulary, so decoding is exact and no SentencePiece model
is trained.
"""

from __future__ import annotations

import gzip
import json
import os
import re

import numpy as np
import PIL.Image
import pytest
import seqio

from simvlm_jax.data import data_dirs, embedded, raw_files
from simvlm_jax.tasks import multi30k, snli_ve
from tests.helpers import GIN_DIR, postprocessed_targets

LENGTHS = {"inputs": 96, "targets": 96, "image": 32}

# (Flickr30K_ID, premise caption, [(hypothesis, gold label)]), two images per split.
SNLI_VE_IMAGES = {
    "train": [
        (
            "3416050480",
            "A man in a blue shirt is riding a bicycle.",
            [("A person rides a bike.", "entailment"), ("A man is asleep.", "contradiction")],
        ),
        ("2248275918", "Two dogs run on the beach.", [("The dogs are playing fetch.", "neutral")]),
    ],
    "dev": [("1000092795", "Two young guys with shaggy hair look at their hands.", [("Two men.", "entailment")])],
    "test": [("1001465944", "A woman walks past a wall.", [("A woman sits.", "contradiction")])],
}
# (image name, English, German) per Multi30k file stem, as in the Task 1 files.
MULTI30K_LINES = {
    "train": [
        ("1000092795.jpg", "Two young guys with shaggy hair look at their hands.", "Zwei junge Männer sind im Freien."),
        ("10002456.jpg", "Several men in hard hats are operating a pulley system.", "Mehrere Männer mit Schutzhelmen."),
    ],
    "val": [("1018148011.jpg", "A group of people stand in the back of a truck.", "Eine Gruppe von Menschen steht.")],
    "test_2016_flickr": [("1007129816.jpg", "A man with an orange hat.", "Ein Mann mit einem orangefarbenen Hut.")],
}


def _write_jpeg(path: str, seed: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path, format="JPEG")


def _snli_record(image_id: str, caption_index: int, premise: str, hypothesis: str, label: str, k: int) -> dict:
    """One line of snli_ve_*.jsonl: an SNLI record (keys sorted, as the generator writes them)."""
    caption_id = f"{image_id}.jpg#{caption_index}"
    record = {
        "Flickr30K_ID": image_id,
        "annotator_labels": [label],
        "captionID": caption_id,
        "gold_label": label,
        "pairID": f"{caption_id}r{k}{label[0]}",
        "sentence1": premise,
        "sentence1_binary_parse": "( ... )",
        "sentence1_parse": "(ROOT ...)",
        "sentence2": hypothesis,
        "sentence2_binary_parse": "( ... )",
        "sentence2_parse": "(ROOT ...)",
    }
    return dict(sorted(record.items()))


def write_snli_ve(root: str) -> list[dict]:
    """The SNLI-VE fixture under root/snli_ve; returns every record written."""
    folder = os.path.join(root, "snli_ve")
    os.makedirs(folder, exist_ok=True)
    written = []
    for split, images in SNLI_VE_IMAGES.items():
        with open(os.path.join(folder, f"snli_ve_{split}.jsonl"), "w") as f:
            for n, (image_id, premise, pairs) in enumerate(images):
                _write_jpeg(os.path.join(folder, "flickr30k_images", f"{image_id}.jpg"), seed=int(image_id) % 1000)
                for k, (hypothesis, label) in enumerate(pairs):
                    record = _snli_record(image_id, n, premise, hypothesis, label, k)
                    f.write(json.dumps(record) + "\n")
                    written.append(record)
    return written


def write_multi30k(root: str) -> None:
    """The Multi30k fixture under root/multi30k: gzipped sentence files, image lists, images."""
    folder = os.path.join(root, "multi30k")
    os.makedirs(os.path.join(folder, "raw"), exist_ok=True)
    os.makedirs(os.path.join(folder, "image_splits"), exist_ok=True)
    for stem, lines in MULTI30K_LINES.items():
        for column, language in ((1, "en"), (2, "de")):
            with gzip.open(os.path.join(folder, "raw", f"{stem}.{language}.gz"), "wt", encoding="utf-8") as f:
                f.write("".join(line[column] + "\n" for line in lines))
        with open(os.path.join(folder, "image_splits", f"{stem}.txt"), "w") as f:
            f.write("".join(line[0] + "\n" for line in lines))
        for name, _, _ in lines:
            _write_jpeg(os.path.join(folder, "flickr30k_images", name), seed=len(name))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, embedded_data_dir):
    """The three tasks over the fixtures, registered with a byte vocabulary; re-registered with the
    defaults afterwards. The environment stays patched for the module (the sources prepare their data on
    first read); the session's embedded data is resolved before, so it never lands in these folders."""
    raw_dir, data_dir = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("data")
    records = write_snli_ve(str(raw_dir))
    write_multi30k(str(raw_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIMVLM_RAW_DATA_DIR", str(raw_dir))
        patch.setenv("SIMVLM_DATA_DIR", str(data_dir))
        registered = [*snli_ve.register(seqio.ByteVocabulary()), *multi30k.register(seqio.ByteVocabulary())]
        yield {task.name: task for task in registered}, records
    snli_ve.register()
    multi30k.register()


def _examples(task: seqio.Task, split: str, lengths=LENGTHS) -> list[dict]:
    return list(task.get_dataset(lengths, split=split, shuffle=False).as_numpy_iterator())


def test_snli_ve_puts_image_and_hypothesis_in_the_encoder_and_generates_the_label(tasks):
    registered, records = tasks
    task = registered["snli_ve"]
    assert task.num_input_examples("train") == 3 and task.num_input_examples("test") == 1
    by_pair = {r["pairID"]: r for r in records}
    examples = _examples(task, "train")
    assert len(examples) == 3
    vocabulary = task.output_features["targets"].vocabulary
    for ex in examples:
        record = by_pair[ex["example_id"].decode()]
        assert ex["inputs_pretokenized"].decode() == "hypothesis: " + record["sentence2"]
        assert vocabulary.decode(ex["inputs"].tolist()) == "hypothesis: " + record["sentence2"]  # no EOS
        assert ex["targets_pretokenized"].decode() == record["gold_label"]
        assert ex["targets"][-1] == vocabulary.eos_id
        assert vocabulary.decode(ex["targets"][:-1].tolist()) == record["gold_label"]
        assert ex["image"].shape == (32, 32, 3) and ex["image_mask"].tolist() == [1.0]
        assert np.abs(ex["image"]).sum() > 0  # a real (normalised) image, not a blank one
    targets = postprocessed_targets(task, examples)
    gold_labels = [by_pair[ex["example_id"].decode()]["gold_label"] for ex in examples]
    (accuracy,) = task.metric_fns
    assert accuracy(targets, gold_labels) == {"accuracy": 100.0}
    assert accuracy(targets, ["neutral"] * 3)["accuracy"] == pytest.approx(100 / 3)


def test_snli_ve_text_only_reads_the_premise_and_has_no_image(tasks):
    registered, records = tasks
    task = registered["snli_ve_text_only"]
    examples = _examples(task, "validation")
    (record,) = [r for r in records if r["Flickr30K_ID"] == "1000092795"]
    (ex,) = examples
    expected = f"premise: {record['sentence1']} hypothesis: {record['sentence2']}"
    assert ex["inputs_pretokenized"].decode() == expected
    assert task.output_features["inputs"].vocabulary.decode(ex["inputs"].tolist()) == expected
    assert ex["targets_pretokenized"].decode() == "entailment"
    assert ex["image_mask"].tolist() == [0.0] and not ex["image"].any() and ex["image"].shape == (32, 32, 3)
    (accuracy,) = task.metric_fns
    assert accuracy(postprocessed_targets(task, examples), ["entailment"]) == {"accuracy": 100.0}


def test_multi30k_translates_english_with_the_image_into_german(tasks):
    registered, _ = tasks
    task = registered["multi30k_en_de"]
    assert [task.num_input_examples(s) for s in ("train", "validation", "test")] == [2, 1, 1]
    examples = _examples(task, "train")
    expected = {name: (en, de) for name, en, de in MULTI30K_LINES["train"]}
    vocabulary = task.output_features["targets"].vocabulary
    for ex in examples:
        en, de = expected[ex["example_id"].decode()]
        assert ex["inputs_pretokenized"].decode() == en and vocabulary.decode(ex["inputs"].tolist()) == en
        assert ex["targets_pretokenized"].decode() == de and vocabulary.decode(ex["targets"][:-1].tolist()) == de
        assert ex["image"].shape == (32, 32, 3) and ex["image_mask"].tolist() == [1.0]
    (bleu,) = task.metric_fns
    targets = postprocessed_targets(task, examples)
    references = [expected[ex["example_id"].decode()][1] for ex in examples]
    assert bleu(targets, references) == {"bleu": pytest.approx(100.0)}
    assert bleu(targets, ["Ein Hund.", "Eine Katze."])["bleu"] < 10.0
    (test_example,) = _examples(task, "test")
    assert test_example["targets_pretokenized"].decode() == MULTI30K_LINES["test_2016_flickr"][0][2]


def test_builders_store_the_release_images_byte_for_byte(tasks):
    import tensorflow_datasets as tfds

    builder = tfds.builder("multi30k", data_dir=data_dirs.tfds_data_dir())
    (example,) = tfds.as_numpy(builder.as_dataset(split="test", decoders={"image": tfds.decode.SkipDecoding()}))
    with open(os.path.join(raw_files.raw_data_dir("multi30k"), "flickr30k_images", "1007129816.jpg"), "rb") as f:
        assert example["image"] == f.read()
    assert example["image_name"].decode() == "1007129816.jpg" and int(example["index"]) == 0


def test_malformed_snli_ve_line_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path))
    write_snli_ve(str(tmp_path))
    path = os.path.join(str(tmp_path), "snli_ve", "snli_ve_train.jsonl")
    with open(path) as f:
        lines = f.readlines()
    with open(path, "w") as f:
        f.writelines([lines[0], '{"Flickr30K_ID": "3416050480", "sentence2": \n', *lines[1:]])
    with pytest.raises(raw_files.MalformedFileError, match=r"snli_ve_train\.jsonl:2: not valid JSON"):
        snli_ve.read_split("train")
    with open(path, "w") as f:
        f.writelines([lines[0], json.dumps({**json.loads(lines[1]), "gold_label": "-"}) + "\n"])
    with pytest.raises(raw_files.MalformedFileError, match=r"snli_ve_train\.jsonl:2: gold_label '-'"):
        snli_ve.read_split("train")
    record = json.loads(lines[0])
    del record["sentence2"]
    with open(path, "w") as f:
        f.write(json.dumps(record) + "\n")
    with pytest.raises(raw_files.MalformedFileError, match=r"snli_ve_train\.jsonl:1: no 'sentence2' field"):
        snli_ve.read_split("train")


def test_snli_ve_reads_the_early_image_id_spelling(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path))
    write_snli_ve(str(tmp_path))
    path = os.path.join(str(tmp_path), "snli_ve", "snli_ve_test.jsonl")
    with open(path) as f:
        record = json.loads(f.readline())
    record["Flikr30kID"] = record.pop("Flickr30K_ID")
    with open(path, "w") as f:
        f.write(json.dumps(record) + "\n")
    (read,) = snli_ve.read_split("test")
    assert read["image_id"] == "1001465944" and os.path.exists(read["image_path"])


def test_misaligned_multi30k_files_are_named_with_their_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path))
    write_multi30k(str(tmp_path))
    de = os.path.join(str(tmp_path), "multi30k", "raw", "train.de.gz")
    with gzip.open(de, "wt", encoding="utf-8") as f:
        f.write("Nur eine Zeile.\n")
    with pytest.raises(
        raw_files.MalformedFileError, match=r"raw/train\.en\.gz has 2 lines but .*raw/train\.de\.gz has 1"
    ):
        multi30k.read_split("train")
    os.remove(de)
    with open(de[: -len(".gz")], "w") as f:  # a decompressed copy is read too
        f.write("Eins.\nZwei.\n")
    os.remove(os.path.join(str(tmp_path), "multi30k", "image_splits", "train.txt"))
    with open(os.path.join(str(tmp_path), "multi30k", "image_splits", "train.txt"), "w") as f:
        f.write("1000092795.jpg\n10002456.jpg\n4711.jpg\n")
    with pytest.raises(raw_files.MalformedFileError, match=r"has 2 lines but .*image_splits/train\.txt has 3"):
        multi30k.read_split("train")


@pytest.mark.parametrize(
    "builder_cls, dataset, image",
    [(snli_ve.SnliVe, "snli_ve", "2248275918.jpg"), (multi30k.Multi30k, "multi30k", "10002456.jpg")],
)
def test_missing_image_is_named(tmp_path, monkeypatch, builder_cls, dataset, image):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path / "raw"))
    write_snli_ve(str(tmp_path / "raw"))
    write_multi30k(str(tmp_path / "raw"))
    os.remove(os.path.join(str(tmp_path / "raw"), dataset, "flickr30k_images", image))
    with pytest.raises(FileNotFoundError, match=rf"image .*{dataset}/flickr30k_images/{image} is missing"):
        data_dirs.prepare_builder(builder_cls, data_dir=str(tmp_path / "data"))


def test_missing_release_files_give_the_require_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"snli_ve dataset is not prepared: missing .*snli_ve_dev\.jsonl"):
        snli_ve.read_split("validation")
    with pytest.raises(FileNotFoundError, match=r"multi30k dataset is not prepared: missing .*val\.en\.gz.*val\.txt"):
        multi30k.read_split("validation")


def test_default_registration_uses_the_pretraining_vocabulary(monkeypatch):
    monkeypatch.delenv("SIMVLM_SPM_MODEL", raising=False)
    try:
        tasks = [*snli_ve.register(), *multi30k.register()]
        assert [t.name for t in tasks] == ["snli_ve", "snli_ve_text_only", "multi30k_en_de"]
        for task in tasks:
            vocabulary = task.output_features["targets"].vocabulary  # SIMVLM_SPM_MODEL unset: the embedded one
            assert isinstance(vocabulary, embedded.EmbeddedVocabulary)
            assert vocabulary.sentencepiece_model_file == embedded.vocabulary_path()
            assert seqio.get_mixture_or_task(task.name) is task
    finally:
        snli_ve.register()
    multi30k.register()


def test_tiny_snli_ve_gin_trains_text_only_and_scores_with_images(model_dir, embedded_data_dir, tmp_path):
    """The cross-modality setting through the command line, shortened: fine-tuning steps on
    `snli_ve_text_only` from the session's tiny checkpoint (random parameters and no optimizer state, so
    restored as parameters only), then the dev split of `snli_ve` (with images) decoded and scored with
    accuracy. The environment is given explicitly: the session's SIMVLM_DATA_DIR holds the vocabulary."""
    from tests.helpers import run_module

    written = write_snli_ve(str(tmp_path / "raw"))
    run_dir = str(tmp_path / "run")
    done = run_module(
        "simvlm_jax.train",
        f"--gin_file={os.path.join(GIN_DIR, 'finetune', 'snli_ve_tiny.gin')}",
        f"--gin.INITIAL_CHECKPOINT_PATH={os.path.join(model_dir, 'checkpoint_1')}",
        f"--gin.MODEL_DIR={run_dir}",
        "--gin.MIXTURE_OR_TASK_NAME='snli_ve_text_only'",
        "--gin.infer_eval/utils.DatasetConfig.mixture_or_task_name='snli_ve'",
        "--gin.INITIAL_STEP=1",
        "--gin.TRAIN_STEPS=3",
        "--gin.BATCH_SIZE=2",
        "--gin.EVAL_PERIOD=2",
        "--gin.EVAL_STEPS=1",
        "--gin.CHECKPOINT_PERIOD=2",
        "--gin.train.stats_period=1",
        "--gin.utils.RestoreCheckpointConfig.assignment_map=((r'state/.*', None),)",
        env={"SIMVLM_RAW_DATA_DIR": str(tmp_path / "raw"), "SIMVLM_DATA_DIR": embedded_data_dir},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "step 3/3" in done.stdout
    listing = os.listdir(os.path.join(run_dir, "inference_eval"))
    assert "snli_ve-metrics.jsonl" in listing, (listing, done.stdout[-3000:])
    with open(os.path.join(run_dir, "inference_eval", "snli_ve-metrics.jsonl")) as f:
        scores = json.loads(f.read().splitlines()[-1])
    # The score is the accuracy of the logged predictions against the release records' gold labels (by
    # pairID), computed here independently of the task's metric.
    labels = {r["pairID"]: r["gold_label"] for r in written}
    with open(os.path.join(run_dir, "inference_eval", f"snli_ve-{scores['step']:06d}.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    dev = [r["pairID"] for r in written if r["Flickr30K_ID"] in {i for i, _, _ in SNLI_VE_IMAGES["dev"]}]
    assert sorted(r["input"]["example_id"] for r in rows) == sorted(dev)
    right = [r["prediction"].strip() == labels[r["input"]["example_id"]] for r in rows]
    assert scores["accuracy"] == pytest.approx(100 * sum(right) / len(right), abs=1e-4), (scores, rows)
    page = open(os.path.join(run_dir, "inference_eval", "report.html")).read()  # right/wrong per example
    assert sorted(re.findall(r'data-score="([^"]*)"', page)) == sorted("100.0" if ok else "0.0" for ok in right)
    assert "hypothesis: " in page and ">correct</th>" in page
