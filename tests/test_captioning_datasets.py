"""COCO captions (Karpathy split) and NoCaps from their release files: the builders, the four tasks, the
captioning metrics over the postprocessed targets (NoCaps per domain), the errors, the two gins.

The fixtures are a few images in exactly the released formats (Karpathy's dataset_coco.json with COCO 2014
file names; nocaps_val_4500_captions.json) with generated JPEGs, in a temporary $SIMVLM_RAW_DATA_DIR; the
prepared data goes to a temporary $SIMVLM_DATA_DIR. The tasks use a byte vocabulary (exact decoding, no
SentencePiece training). The metrics run pycocoevalcap's Java tokeniser and METEOR (`java` on PATH).
"""

from __future__ import annotations

import json
import os

import numpy as np
import PIL.Image
import pytest
import seqio

from simvlm_jax import metrics
from simvlm_jax.data import data_dirs, embedded, raw_files
from simvlm_jax.tasks import coco_captions, nocaps
from tests.helpers import finetune_tiny_in_process

LENGTHS = {"inputs": 16, "targets": 96, "image": 32}

# (Karpathy split, COCO subset, cocoid, raw captions). restval images come from val2014, as in the release.
COCO_IMAGES = [
    ("train", "train2014", 9, ["A plate of food with broccoli and rice.", "Some food is on a white plate. "]),
    ("restval", "val2014", 25, ["A giraffe eating leaves from a tall tree.", "A giraffe stands near a tree."]),
    (
        "val",
        "val2014",
        42,
        ["A red bus parked on the side of a city street.", "A bus waits at the curb.", "Red double decker bus."],
    ),
    (
        "val",
        "val2014",
        73,
        ["A man riding a wave on top of a surfboard.", "A surfer rides a big wave.", "Person surfing in the ocean."],
    ),
    ("test", "val2014", 74, ["A dog lying on a couch next to a pillow.", "A brown dog sleeps on a sofa."]),
    ("test", "val2014", 133, ["Two children fly a kite in the park.", "Kids playing with a kite on the grass."]),
]
# (id, open_images_id, domain, captions): two images per domain, three captions each (the release has ten).
NOCAPS_IMAGES = [
    (0, "0013ea2087020901", "in-domain", ["A baby is standing in front of a house.", "A small child on a porch."]),
    (1, "0023fc2cb1d1e0d8", "in-domain", ["A cat sleeping on a wooden table.", "A grey cat naps on a desk."]),
    (2, "00337cd5ea4cba3d", "near-domain", ["A man playing a red guitar on stage.", "A guitarist performs live."]),
    (3, "0045b3b7f3a5d6e1", "near-domain", ["Three horses grazing in a green field.", "Horses eat grass outside."]),
    (4, "0057a1f3c4d2b9e7", "out-domain", ["A jellyfish floating in dark blue water.", "A glowing jellyfish swims."]),
    (5, "0068e2d4a7b1c3f9", "out-domain", ["An accordion lying on an old chair.", "A musical instrument on a seat."]),
]


def _write_jpeg(path: str, seed: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(24 + seed % 7, 40, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path, format="JPEG")


def write_coco(root: str) -> str:
    """dataset_coco.json (Karpathy's format) and one JPEG per image under root/coco_captions."""
    folder = os.path.join(root, "coco_karpathy")
    images, sentid = [], 0
    for imgid, (split, subset, cocoid, captions) in enumerate(COCO_IMAGES):
        filename = f"COCO_{subset}_{cocoid:012d}.jpg"
        sentences = []
        for raw in captions:
            tokens = raw.lower().replace(".", "").split()
            sentences.append({"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append(
            {
                "filepath": subset,
                "sentids": [s["sentid"] for s in sentences],
                "filename": filename,
                "imgid": imgid,
                "split": split,
                "sentences": sentences,
                "cocoid": cocoid,
            }
        )
        _write_jpeg(os.path.join(folder, subset, filename), seed=cocoid)
    with open(os.path.join(folder, "dataset_coco.json"), "w") as f:
        json.dump({"images": images, "dataset": "coco"}, f)
    return folder


def write_nocaps(root: str) -> str:
    """nocaps_val_4500_captions.json (COCO style) and the images under root/nocaps/validation."""
    folder = os.path.join(root, "nocaps")
    images, annotations = [], []
    for image_id, open_images_id, domain, captions in NOCAPS_IMAGES:
        file_name = f"{open_images_id}.jpg"
        images.append(
            {
                "id": image_id,
                "open_images_id": open_images_id,
                "height": 1024,
                "width": 732,
                "coco_url": f"https://s3.amazonaws.com/nocaps/val/{file_name}",
                "file_name": file_name,
                "license": 0,
                "date_captured": "2018-11-06 11:04:33",
                "domain": domain,
            }
        )
        for caption in captions:
            annotations.append({"image_id": image_id, "id": len(annotations), "caption": caption})
        _write_jpeg(os.path.join(folder, "validation", file_name), seed=image_id)
    info = {"url": "http://nocaps.org", "version": "0.1", "description": "nocaps validation dataset", "year": 2018}
    with open(os.path.join(folder, "nocaps_val_4500_captions.json"), "w") as f:
        json.dump({"licenses": [], "info": info, "images": images, "annotations": annotations}, f, indent=2)
    return folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, embedded_data_dir):
    """The four tasks over the fixtures with a byte vocabulary; re-registered with the defaults afterwards.
    The session's embedded data is resolved first, so it never lands in these folders."""
    raw_dir, data_dir = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("data")
    write_coco(str(raw_dir))
    write_nocaps(str(raw_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIMVLM_RAW_DATA_DIR", str(raw_dir))
        patch.setenv("SIMVLM_DATA_DIR", str(data_dir))
        yield {
            task.name: task
            for task in [*coco_captions.register(seqio.ByteVocabulary()), *nocaps.register(seqio.ByteVocabulary())]
        }
    coco_captions.register()
    nocaps.register()


def _examples(task: seqio.Task, split: str) -> list[dict]:
    examples = task.get_dataset(LENGTHS, split=split, shuffle=False).as_numpy_iterator()
    return sorted(examples, key=lambda ex: int(ex["example_id"]))  # TFDS stores them shuffled by key


def _targets(task: seqio.Task, examples: list[dict]) -> list:
    """What seqio's Evaluator scores predictions against: the postprocessed targets."""
    return [task.postprocess_fn(ex["text"], example=ex, is_target=True) for ex in examples]


def _decode(task: seqio.Task, tokens) -> str:
    return task.output_features["targets"].vocabulary.decode([int(t) for t in tokens])


def test_coco_splits_one_example_per_training_caption_and_per_evaluation_image(tasks):
    import tensorflow_datasets as tfds

    task = tasks["coco_captions"]
    counts = {s: task.num_input_examples(s) for s in ("train", "validation", "test")}
    assert counts == {"train": 4, "validation": 2, "test": 2}  # train + restval captions; val / test images

    builder = tfds.builder("coco_karpathy", data_dir=data_dirs.tfds_data_dir())
    (record,) = [r for r in tfds.as_numpy(builder.as_dataset(split="validation")) if int(r["image_id"]) == 42]
    assert record["image_file"].decode() == "val2014/COCO_val2014_000000000042.jpg"
    assert [c.decode() for c in record["captions"]] == COCO_IMAGES[2][3] and record["caption"].decode() == COCO_IMAGES[
        2
    ][3][0]

    train = _examples(task, "train")
    expected = {c.strip(): cocoid for _, _, cocoid, captions in COCO_IMAGES[:2] for c in captions}
    assert sorted(ex["text"].decode() for ex in train) == sorted(expected)
    for ex in train:
        assert int(ex["example_id"]) == expected[ex["text"].decode()]
        assert ex["inputs"].size == 0  # the image alone in the encoder
        assert ex["targets"][-1] == task.output_features["targets"].vocabulary.eos_id
        assert _decode(task, ex["targets"][:-1]) == ex["text"].decode()  # the whole caption, stripped
        assert ex["image"].shape == (32, 32, 3) and ex["image_mask"].tolist() == [1.0] and np.abs(ex["image"]).sum() > 0


def test_coco_zero_shot_puts_the_prompt_after_the_image(tasks):
    task = tasks["coco_captions_zero_shot"]
    examples = _examples(task, "test")
    assert [int(ex["example_id"]) for ex in examples] == [74, 133]
    for ex, (_, _, _, captions) in zip(examples, COCO_IMAGES[4:]):
        assert task.output_features["inputs"].vocabulary.decode(ex["inputs"].tolist()) == "a picture of"
        assert _decode(task, ex["targets"][:-1]) == captions[0]
        assert [r.decode() for r in ex["references"]] == captions


def test_coco_metrics_over_the_postprocessed_references(tasks):
    task = tasks["coco_captions"]
    assert task.metric_fns == [metrics.coco_caption_metrics]
    examples = _examples(task, "validation")
    targets = _targets(task, examples)
    assert targets == [COCO_IMAGES[2][3], COCO_IMAGES[3][3]]  # every reference of each image
    assert task.postprocess_fn("a bus", example=examples[0], is_target=False) == "a bus"

    exact = metrics.coco_caption_metrics(targets, [refs[1] for refs in targets])  # equal to one reference
    assert exact["bleu_4"] == pytest.approx(100.0) and exact["rouge_l"] == pytest.approx(100.0)
    assert exact["meteor"] == pytest.approx(100.0)  # METEOR 1.5 scores an exact match 1.0
    wrong = metrics.coco_caption_metrics(targets, ["A cat on a mat.", "A cat on a mat."])
    assert exact["cider"] > 0 and wrong["cider"] < exact["cider"] and wrong["meteor"] < exact["meteor"]


def test_nocaps_examples_carry_their_domain_to_the_metric(tasks):
    task = tasks["nocaps"]
    assert task.metric_fns == [nocaps.nocaps_caption_metrics]
    assert task.num_input_examples("validation") == len(NOCAPS_IMAGES)
    examples = _examples(task, "validation")
    targets = _targets(task, examples)
    assert targets == [{"references": captions, "domain": domain} for _, _, domain, captions in NOCAPS_IMAGES]
    for ex, (_, _, _, captions) in zip(examples, NOCAPS_IMAGES):
        assert ex["inputs"].size == 0 and _decode(task, ex["targets"][:-1]) == captions[0]
        assert ex["image"].shape == (32, 32, 3)
    (zero_shot,) = _examples(tasks["nocaps_zero_shot"], "validation")[:1]
    assert tasks["nocaps_zero_shot"].output_features["inputs"].vocabulary.decode(zero_shot["inputs"].tolist()) == (
        "a picture of"
    )


def test_nocaps_metric_scores_each_domain_on_its_own_images():
    targets = [{"references": captions, "domain": domain} for _, _, domain, captions in NOCAPS_IMAGES]
    # In- and near-domain predictions equal a reference; the out-of-domain ones are wrong.
    predictions = [t["references"][0] for t in targets[:4]] + ["A dog on the beach.", "A red car on a road."]
    metric_fn = nocaps.nocaps_caption_metrics
    scores = metric_fn(targets, predictions)
    names = ("bleu_4", "meteor", "rouge_l", "cider")
    assert sorted(scores) == sorted([*names, *(f"{n}_{d}" for n in names for d in nocaps.DOMAINS)])
    overall = metrics.coco_caption_metrics([t["references"] for t in targets], predictions)
    assert {n: scores[n] for n in names} == pytest.approx(overall)
    for domain, rows in (("in-domain", slice(0, 2)), ("near-domain", slice(2, 4)), ("out-domain", slice(4, 6))):
        expected = metrics.coco_caption_metrics([t["references"] for t in targets[rows]], predictions[rows])
        assert {n: scores[f"{n}_{domain}"] for n in names} == pytest.approx(expected)
    for domain in ("in-domain", "near-domain"):
        assert scores[f"bleu_4_{domain}"] == pytest.approx(100.0) and scores[f"rouge_l_{domain}"] == pytest.approx(
            100.0
        )
    assert scores["cider_out-domain"] < scores["cider_in-domain"] and scores["bleu_4_out-domain"] < 1.0
    # A domain without images is left out, not scored 0.
    assert "cider_out-domain" not in metric_fn(targets[:4], predictions[:4])


@pytest.fixture
def raw(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path / "raw"))
    return {"coco": write_coco(str(tmp_path / "raw")), "nocaps": write_nocaps(str(tmp_path / "raw"))}


def test_malformed_json_names_file_and_line(raw):
    path = os.path.join(raw["coco"], "dataset_coco.json")
    with open(path, "w") as f:
        f.write('{"images": [\n  {"filepath": "val2014", "split": "val"},\n  ]\n}\n')
    with pytest.raises(raw_files.MalformedFileError, match=rf"{path}:3: not valid JSON"):
        list(coco_captions.split_examples("validation"))
    path = os.path.join(raw["nocaps"], "nocaps_val_4500_captions.json")
    with open(path) as f:
        lines = f.read().splitlines()
    lines[5] = lines[5] + ","  # the release is one object per line when indented: a trailing comma on line 6
    with open(path, "w") as f:
        f.write("\n".join(lines))
    with pytest.raises(raw_files.MalformedFileError, match=rf"{path}:\d+: not valid JSON"):
        list(nocaps.split_examples())


def test_records_without_a_field_are_named(raw):
    path = os.path.join(raw["coco"], "dataset_coco.json")
    with open(path) as f:
        data = json.load(f)
    del data["images"][3]["sentences"][1]["raw"]
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(
        raw_files.MalformedFileError, match=rf"{path}: image record 3 \(cocoid 73\), sentence 1: no 'raw'"
    ):
        list(coco_captions.split_examples("validation"))
    data["images"][3]["sentences"][1]["raw"] = "x"
    data["images"][2]["split"] = "dev"
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(raw_files.MalformedFileError, match=r"image record 2 \(cocoid 42\): split 'dev' is not one of"):
        list(coco_captions.split_examples("train"))

    path = os.path.join(raw["nocaps"], "nocaps_val_4500_captions.json")
    with open(path) as f:
        data = json.load(f)
    del data["images"][4]["domain"]
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(raw_files.MalformedFileError, match=rf"{path}: image record 4 \(id 4\): no 'domain' field"):
        list(nocaps.split_examples())
    data["images"][4]["domain"] = "out-domain"
    data["annotations"][0]["image_id"] = 99
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(raw_files.MalformedFileError, match=r"annotation record 0 \(id 0\): no image has id 99"):
        list(nocaps.split_examples())


def test_missing_images_are_named(raw, tmp_path):
    image = os.path.join(raw["coco"], "val2014", "COCO_val2014_000000000073.jpg")
    os.remove(image)
    with pytest.raises(FileNotFoundError, match=rf"{image}: the image of record 3 \(cocoid 73\)"):
        data_dirs.prepare_builder(coco_captions.CocoKarpathy, data_dir=str(tmp_path / "data"))
    image = os.path.join(raw["nocaps"], "validation", "0045b3b7f3a5d6e1.jpg")
    os.remove(image)
    with pytest.raises(FileNotFoundError, match=rf"{image}: the image of record 3 \(id 3\)"):
        data_dirs.prepare_builder(nocaps.Nocaps, data_dir=str(tmp_path / "data"))


def test_missing_release_files_give_the_require_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"coco_karpathy dataset is not prepared: missing .*dataset_coco\.json"):
        list(coco_captions.split_examples("train"))
    with pytest.raises(FileNotFoundError, match=r"nocaps dataset is not prepared: missing .*nocaps_val_4500_captions"):
        list(nocaps.split_examples())


def test_default_registration_uses_the_pretraining_vocabulary(monkeypatch):
    monkeypatch.delenv("SIMVLM_SPM_MODEL", raising=False)
    registered = [*coco_captions.register(), *nocaps.register()]
    assert [t.name for t in registered] == ["coco_captions", "coco_captions_zero_shot", "nocaps", "nocaps_zero_shot"]
    for task in registered:
        assert isinstance(task.output_features["targets"].vocabulary, embedded.EmbeddedVocabulary)
        assert seqio.get_mixture_or_task(task.name) is task


def test_tiny_gin_finetunes_and_scores_the_captions(model_dir, tmp_path, monkeypatch):
    """gin/finetune/coco_captions_tiny.gin, shortened, from the session's tiny checkpoint (random parameters,
    no optimizer state: restored as parameters only) on the fixture release: it trains on the caption
    examples, then decodes the validation images and scores them with the caption metrics. The task
    registered at import prepares into the session's $SIMVLM_DATA_DIR and uses its embedded vocabulary."""
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path / "raw"))
    write_coco(str(tmp_path / "raw"))
    scored = finetune_tiny_in_process(
        "gin/finetune/coco_captions_tiny.gin", f"{model_dir}/checkpoint_1", str(tmp_path / "run"), "coco_captions"
    )
    assert set(scored) >= {"bleu_4", "meteor", "rouge_l", "cider"}, scored
    assert all(0.0 <= scored[name] for name in ("bleu_4", "meteor", "rouge_l", "cider")), scored
