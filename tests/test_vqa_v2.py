"""VQA v2 from its release files: the builder, the task (open-ended, and closed-set by rank decoding), errors, the gins.

The fixture is a few questions in exactly the official formats (questions and annotations JSON, COCO file
names), with generated JPEG images, in a temporary $SIMVLM_RAW_DATA_DIR; the prepared data goes to a
temporary $SIMVLM_DATA_DIR.
"""

import collections
import json
import os

import numpy as np
import pytest

from simvlm_jax.data import raw_files
from simvlm_jax.metrics import vqa as vqa_metric
from simvlm_jax.tasks import vqa_v2 as tasks_lib
from tests.helpers import finetune_tiny_in_process, run_module

LENGTHS = {"inputs": 32, "targets": 8, "image": 32}

# (question_id, image_id, question, multiple_choice_answer, the ten answers) per split; question ids are
# image id x 1000 + n, as in the release.
TRAIN = [
    (9000, 9, "Is it red?", "yes", ["yes"] * 9 + ["no"]),
    (9001, 9, "How many shapes?", "2", ["2"] * 7 + ["two", "3", "2 "]),
    (25000, 25, "Is it blue?", "yes", ["yes"] * 8 + ["no", "yes"]),
    (25001, 25, "What color is it?", "red", ["red"] * 6 + ["dark red"] * 4),
]
VALIDATION = [
    (42000, 42, "What color is the square?", "blue", ["blue"] * 5 + ["navy"] * 3 + ["dark blue"] * 2),
    (42001, 42, "Is there a circle?", "no", ["no"] * 10),
    (73000, 73, "How many circles?", "2", ["2"] * 4 + ["3"] * 3 + ["two"] * 3),
]
TEST = [(1000, 1, "What is on the left?", None, None), (1001, 1, "Is it sunny?", None, None)]
SPLITS = {"train": ("train2014", TRAIN), "validation": ("val2014", VALIDATION), "test": ("test2015", TEST)}


def _questions_file(subset, rows):
    return {
        "info": {"description": "This is v2.0 of the VQA dataset.", "version": "2.0", "year": 2017},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons"},
        "data_subtype": subset,
        "questions": [{"image_id": i, "question": q, "question_id": qid} for qid, i, q, _, _ in rows],
    }


def _annotations_file(subset, rows):
    annotations = []
    for qid, image_id, question, answer, answers in rows:
        annotations.append(
            {
                "question_type": " ".join(question.lower().split()[:2]),
                "multiple_choice_answer": answer,
                "answers": [
                    {"answer": a, "answer_confidence": "yes", "answer_id": n} for n, a in enumerate(answers, start=1)
                ],
                "image_id": image_id,
                "answer_type": "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other",
                "question_id": qid,
            }
        )
    return {
        "info": {"description": "This is v2.0 of the VQA dataset.", "version": "2.0", "year": 2017},
        "license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons"},
        "data_subtype": subset,
        "annotations": annotations,
        "data_type": "mscoco",
    }


def write_release(root):
    """The release files of SPLITS under root/vqa_v2, with one JPEG per image id (sizes and modes vary)."""
    import PIL.Image

    folder = os.path.join(root, "vqa_v2")
    for split, (subset, rows) in SPLITS.items():
        os.makedirs(os.path.join(folder, subset), exist_ok=True)
        with open(os.path.join(folder, f"v2_OpenEnded_mscoco_{subset}_questions.json"), "w") as f:
            json.dump(_questions_file(subset, rows), f)
        if split != "test":
            with open(os.path.join(folder, f"v2_mscoco_{subset}_annotations.json"), "w") as f:
                json.dump(_annotations_file(subset, rows), f)
        for image_id in sorted({row[1] for row in rows}):
            rng = np.random.default_rng(image_id)
            pixels = rng.integers(0, 256, size=(40 + image_id, 50, 3), dtype=np.uint8)
            image = PIL.Image.fromarray(pixels)
            if image_id == 25:
                image = image.convert("L")  # COCO has some grayscale images
            image.save(os.path.join(folder, tasks_lib.image_file(subset, image_id)), format="JPEG")
    return folder


@pytest.fixture
def release(tmp_path, monkeypatch):
    """The raw folder vqa_v2/ of the fixture; SIMVLM_RAW_DATA_DIR and SIMVLM_DATA_DIR point at tmp dirs."""
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("SIMVLM_DATA_DIR", str(tmp_path / "data"))
    return write_release(str(tmp_path / "raw"))


def _vocabulary():
    import seqio

    return seqio.ByteVocabulary()  # no training needed; ids < 259


def test_builder_and_open_ended_task_read_the_release(release):
    import tensorflow_datasets as tfds

    from simvlm_jax.data import embedded

    task = tasks_lib.add_open_ended_task("vqa_v2_fixture", vocabulary=_vocabulary())
    assert {s: task.num_input_examples(s) for s in SPLITS} == {s: len(rows) for s, (_, rows) in SPLITS.items()}
    assert task.num_input_examples("minival") == len(VALIDATION)  # all 2 images (< MINIVAL_IMAGES)

    builder = tfds.builder("vqa_v2", data_dir=embedded.tfds_data_dir())
    records = {int(r["question_id"]): r for r in tfds.as_numpy(builder.as_dataset(split="validation"))}
    assert sorted(records) == [row[0] for row in VALIDATION]
    qid, image_id, question, answer, answers = VALIDATION[0]
    record = records[qid]
    assert record["image_file"].decode() == "val2014/COCO_val2014_000000000042.jpg"
    assert (int(record["image_id"]), record["question"].decode(), record["answer"].decode()) == (
        image_id,
        question,
        answer,
    )
    assert [a.decode() for a in record["answers"]] == answers
    assert record["answer_type"].decode() == "other"
    # The candidates of the closed set: training answers, most frequent first, ties in string order.
    assert builder.info.metadata["train_answer_counts"] == [["yes", 2], ["2", 1], ["red", 1]]

    vocabulary = task.output_features["targets"].vocabulary
    examples = list(task.get_dataset(LENGTHS, split="validation", shuffle=False).as_numpy_iterator())
    examples = sorted(examples, key=lambda ex: int(ex["example_id"]))  # TFDS stores them shuffled by key
    assert [ex["example_id"].decode() for ex in examples] == [str(row[0]) for row in VALIDATION]
    for ex, (qid, _, question, answer, answers) in zip(examples, VALIDATION):
        assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.float32
        np.testing.assert_array_equal(ex["image_mask"], [1.0])
        assert vocabulary.decode(ex["inputs"].tolist()) == question == ex["inputs_pretokenized"].decode()
        assert ex["targets"][-1] == vocabulary.eos_id
        assert vocabulary.decode(ex["targets"][:-1].tolist()) == answer
        assert [a.decode() for a in ex["answers"]] == answers

    # Grayscale images become RGB; test questions have no answers and an empty target (EOS only).
    train = list(task.get_dataset(LENGTHS, split="train", shuffle=False).as_numpy_iterator())
    assert all(ex["image"].shape == (32, 32, 3) for ex in train) and len(train) == len(TRAIN)
    test = list(task.get_dataset(LENGTHS, split="test", shuffle=False).as_numpy_iterator())
    assert [ex["targets"].tolist() for ex in test] == [[vocabulary.eos_id]] * len(TEST)
    assert all(len(ex["answers"]) == 0 for ex in test)


def test_vqa_accuracy_of_the_majority_answer_is_full(release):
    from simvlm_jax import metrics

    task = tasks_lib.add_open_ended_task("vqa_v2_fixture", vocabulary=_vocabulary())
    examples = list(task.get_dataset(LENGTHS, split="validation", shuffle=False).as_numpy_iterator())
    examples = sorted(examples, key=lambda ex: int(ex["example_id"]))
    targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples]
    assert targets == [row[4] for row in VALIDATION]
    majority = [collections.Counter(answers).most_common(1)[0][0] for answers in targets]
    assert metrics.vqa_accuracy(targets, majority) == {"vqa_accuracy": 100.0}
    # "navy" (3 of 10 annotators) scores 0.9 on the first question, as the official rules say.
    assert metrics.vqa_accuracy(targets[:1], ["navy"])["vqa_accuracy"] == pytest.approx(90.0)


def test_malformed_json_names_file_and_line(release):
    path = os.path.join(release, "v2_OpenEnded_mscoco_val2014_questions.json")
    with open(path, "w") as f:
        f.write('{\n  "questions": [\n    {"image_id": 42, "question": "x", "question_id": 42000},\n  ]\n}\n')
    with pytest.raises(raw_files.MalformedFileError, match=rf"{path}:4: not valid JSON"):
        list(tasks_lib.split_examples("validation"))


def test_record_without_a_field_names_file_index_and_question_id(release):
    path = os.path.join(release, "v2_mscoco_val2014_annotations.json")
    with open(path) as f:
        data = json.load(f)
    del data["annotations"][1]["answers"]
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(raw_files.MalformedFileError, match=rf"{path}: annotation record 1 \(question_id 42001\)"):
        list(tasks_lib.split_examples("validation"))

    path = os.path.join(release, "v2_OpenEnded_mscoco_val2014_questions.json")
    with open(path) as f:
        data = json.load(f)
    data["questions"][2]["image_id"] = "73"
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(
        raw_files.MalformedFileError, match=rf"{path}: question record 2 .*'image_id' is not an integer"
    ):
        tasks_lib.read_questions(path)


def test_missing_image_names_its_path(release):
    image = os.path.join(release, "val2014", "COCO_val2014_000000000073.jpg")
    os.remove(image)
    with pytest.raises(FileNotFoundError, match=rf"{image}: the image of question 2 \(question_id 73000\)"):
        list(tasks_lib.split_examples("validation"))


def test_image_missing_when_read_names_its_path(release):
    import tensorflow as tf

    task = tasks_lib.add_open_ended_task("vqa_v2_fixture", vocabulary=_vocabulary())
    assert task.num_input_examples("validation") == len(VALIDATION)  # prepared while the images were there
    image = os.path.join(release, "val2014", "COCO_val2014_000000000073.jpg")
    os.remove(image)
    with pytest.raises(tf.errors.NotFoundError, match=image):
        list(task.get_dataset(LENGTHS, split="validation", shuffle=False).as_numpy_iterator())


def test_missing_release_files_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"vqa_v2 dataset is not prepared: missing .*train2014_questions"):
        list(tasks_lib.split_examples("train"))
    with pytest.raises(FileNotFoundError, match="visualqa.org"):
        list(tasks_lib.split_examples("test"))


def test_tiny_gin_finetunes_and_scores_vqa_accuracy(model_dir, tmp_path, monkeypatch):
    """gin/finetune/vqa_v2_tiny.gin, shortened, from the session's tiny checkpoint (random parameters, no
    optimizer state: restored as parameters only) on the fixture release: it trains, decodes minival and
    scores it. The task `vqa_v2` registered at import writes to the session's $SIMVLM_DATA_DIR and uses its
    embedded vocabulary, as the tiny model does."""
    monkeypatch.setenv("SIMVLM_RAW_DATA_DIR", str(tmp_path / "raw"))
    write_release(str(tmp_path / "raw"))
    scored = finetune_tiny_in_process(
        "gin/finetune/vqa_v2_tiny.gin", f"{model_dir}/checkpoint_1", str(tmp_path / "run"), "vqa_v2"
    )
    assert 0.0 <= scored["vqa_accuracy"] <= 100.0, scored

    # The closed set on that run, as its gin's header says (from outside the repository), with K = 3: every
    # prediction is one of the candidates, scored with the same VQA accuracy.
    out = str(tmp_path / "closed_set")
    done = run_module(
        "simvlm_jax.eval",
        "--gin_file=gin/runs/eval_vqa_v2_closed_set.gin",
        f"--gin.CHECKPOINT_PATH='{tmp_path / 'run'}'",
        f"--gin.EVAL_OUTPUT_DIR='{out}'",
        "--gin.NUM_CANDIDATE_ANSWERS=3",
        "--gin.BATCH_SIZE=2",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = [json.loads(text) for text in done.stdout.splitlines() if text.startswith("{")][0]
    assert line["task"] == "vqa_v2" and line["step"] == 3
    predictions_file = os.path.join(out, "vqa_v2-000003.jsonl")
    rows = [json.loads(text) for text in open(predictions_file)]
    assert len(rows) == len(VALIDATION)
    assert {row["prediction"] for row in rows} <= {"yes", "2", "red"}  # the 3 most frequent training answers
    assert sorted(row["target"] for row in rows) == sorted(row[4] for row in VALIDATION)  # the ten answers
    expected = [vqa_metric.question_accuracy(row["target"], row["prediction"]) for row in rows]
    assert line["vqa_accuracy"] == pytest.approx(100.0 * np.mean(expected))
