"""docs/your_dataset.md followed word for word, from a folder outside the repository: its `tasks.py`
block written as is, data in its layout (generated images of one coloured square; the question asks the
colour), its commands run by bash from that folder. Only the run's length changes: the guide starts from
the README main job's checkpoint_1200, the test from a 2-step tiny_cpu.gin run, and fine-tunes a few steps.
The guide's T5X command runs where T5X is installed (docs/t5x.md)."""

import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO_ROOT

GUIDE = os.path.join(REPO_ROOT, "docs", "your_dataset.md")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
SHORT_RUN = ["--gin.INITIAL_STEP=2", "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=4"]


def _blocks(language: str) -> list[str]:
    with open(GUIDE) as f:
        return re.findall(rf"```{language}\n(.*?)\n```", f.read(), re.S)


def _write_data(project: str) -> None:
    """my_data/ in the guide's layout: 16 training and 8 validation images, a caption and a question each."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(project, "my_data", "images", "squares"))
    for split, count in (("train", 16), ("val", 8)):
        captions, questions = [], []
        for i in range(count):
            colour = list(COLOURS)[i % len(COLOURS)]
            pixels = np.full((64, 64, 3), 245, np.uint8)
            x, y = rng.integers(4, 36, size=2)
            pixels[y : y + 24, x : x + 24] = COLOURS[colour]
            name = f"squares/{split}_{i}.jpg"
            Image.fromarray(pixels).save(os.path.join(project, "my_data", "images", name), quality=95)
            captions.append({"image": name, "caption": f"a {colour} square", "id": f"{split}-cap-{i}"})
            answers = [colour, colour, "orange" if colour == "red" else colour]
            questions.append(
                {
                    "image": name,
                    "question": "what color is the square?",
                    "answer": colour,
                    "answers": answers,
                    "id": f"{split}-q-{i}",
                }
            )
        for kind, records in (("captions", captions), ("vqa", questions)):
            with open(os.path.join(project, "my_data", f"{kind}_{split}.jsonl"), "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))


def _commands(module: str) -> list[str]:
    """The command lines of the guide's bash block that runs `python -m <module>` (continuation lines
    joined; `cd` left to the test)."""
    block = next(b for b in _blocks("bash") if f"python -m {module} " in b and "'tasks'" in b)
    lines = block.replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("cd ")]


def _run(command: str | list[str], cwd: str) -> subprocess.CompletedProcess:
    """A command line run by bash as a user types it, `python` being this virtualenv's."""
    if isinstance(command, list):
        command = shlex.join(command)
    assert command.startswith("python "), command
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, as a user has it
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def project(tmp_path_factory, embedded_data_dir):
    root = str(tmp_path_factory.mktemp("outside_the_repository"))
    project = os.path.join(root, "my_project")
    os.makedirs(project)
    (tasks_block,) = [b for b in _blocks("python") if "common.add_task" in b]
    with open(os.path.join(project, "tasks.py"), "w") as f:
        f.write(tasks_block + "\n")
    _write_data(project)
    return project


def test_the_guide_fine_tunes_evaluates_and_predicts_from_outside_the_repository(project, tmp_path):
    pretrained = str(tmp_path / "tiny_cpu")
    done = _run(
        [
            "python",
            "-m",
            "simvlm_jax.train",
            "--gin_file=gin/tiny_cpu.gin",
            f"--gin.MODEL_DIR={pretrained}",
            "--gin.TRAIN_STEPS=2",
            "--gin.BATCH_SIZE=8",
            "--gin.CHECKPOINT_PERIOD=2",
            "--gin.EVAL_PERIOD=2",
            "--gin.train.infer_eval_dataset_cfg=None",
            "--gin.train.train_eval_dataset_cfg=None",
        ],
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    train, evaluate, infer = _commands("simvlm_jax.train")
    assert [c.split()[2] for c in (train, evaluate, infer)] == [
        "simvlm_jax.train",
        "simvlm_jax.eval",
        "simvlm_jax.infer",
    ]
    train = train.replace("/path/to/runs/tiny_cpu/checkpoint_1200", f"{pretrained}/checkpoint_2")

    trained = _run(f"{train} {shlex.join(SHORT_RUN)}", cwd=project)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert re.search(r"infer_eval my_vqa @ 4: vqa_accuracy \d", trained.stdout), trained.stdout[-3000:]
    assert "MIXTURE_OR_TASK_MODULE = 'tasks'" in open(os.path.join(project, "runs/my_vqa/config.gin")).read()

    scored = _run(evaluate, cwd=project)  # no MIXTURE_OR_TASK_MODULE: the run's config.gin names it
    assert scored.returncode == 0, scored.stderr[-3000:]
    (line,) = [json.loads(x) for x in scored.stdout.splitlines() if x.startswith("{")]
    assert line["task"] == "my_vqa" and line["step"] == 4

    predicted = _run(infer, cwd=project)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with open(os.path.join(project, "runs/my_vqa/predictions/my_vqa-validation.jsonl")) as f:
        records = [json.loads(x) for x in f]
    assert [r["id"] for r in records] == [f"val-q-{i}" for i in range(8)]
    assert all(r["inputs"] == "what color is the square?" and "prediction" in r for r in records)
    # eval's score is the official VQA accuracy of the same greedy predictions, computed here independently.
    with open(os.path.join(project, "my_data", "vqa_val.jsonl")) as f:
        answers = {r["id"]: r["answers"] for r in map(json.loads, f)}
    expected = 100 * np.mean([_official_vqa_accuracy(r["prediction"], answers[r["id"]]) for r in records])
    assert line["vqa_accuracy"] == pytest.approx(expected, abs=1e-4), (line, records)
    # eval's report.html: a row per question with its image, VQA accuracy, and the answer-type breakdown.
    page = open(os.path.join(project, "runs/my_vqa/eval/report.html")).read()
    assert page.count("<tr data-index=") == 8 and page.count('<img class="thumb" src="data:') == 8
    assert ">mean VQA accuracy</th>" in page and "<td>other</td>" in page


def _official_vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA's accuracy of one answer: the mean, over each annotator left out, of min(1, matches among the
    others / 3) (the official evaluation script's rule; these answers need none of its normalisation beyond
    case, articles and punctuation)."""

    def norm(text: str) -> str:
        words = re.sub(r"[^\w\s]", "", text.lower()).split()
        return " ".join(w for w in words if w not in ("a", "an", "the"))

    prediction, answers = norm(prediction), [norm(a) for a in answers]
    return float(
        np.mean(
            [min(1.0, sum(a == prediction for a in answers[:i] + answers[i + 1 :]) / 3) for i in range(len(answers))]
        )
    )


@pytest.mark.skipif(importlib.util.find_spec("t5x") is None, reason="T5X is not installed (docs/t5x.md)")
def test_the_guide_t5x_command_fine_tunes_the_same_tasks(project, tmp_path):
    pretrained = str(tmp_path / "tiny_cpu")
    done = _run(
        f"python -m simvlm_jax.train --gin_file=gin/tiny_cpu.gin --gin.MODEL_DIR={pretrained} --gin.TRAIN_STEPS=2 "
        "--gin.BATCH_SIZE=8 --gin.CHECKPOINT_PERIOD=2 --gin.EVAL_PERIOD=2 --gin.train.infer_eval_dataset_cfg=None",
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (train,) = _commands("t5x.train")
    train = train.replace("/path/to/runs/tiny_cpu/checkpoint_1200", f"{pretrained}/checkpoint_2")
    trained = _run(f"{train} {shlex.join(SHORT_RUN)}", cwd=project)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert os.path.isdir(os.path.join(project, "runs/my_vqa_t5x/checkpoint_4"))


def test_the_guide_tasks_read_the_records_and_name_a_bad_line(project, monkeypatch):
    import seqio

    from simvlm_jax.training import config_checks

    monkeypatch.syspath_prepend(project)
    user_tasks = importlib.import_module("tasks")
    assert user_tasks.__file__ == os.path.join(project, "tasks.py")
    captions = seqio.get_mixture_or_task("my_captions").get_dataset(
        {"inputs": 8, "targets": 16, "image": 64}, split="validation", shuffle=False
    )
    first = next(captions.as_numpy_iterator())
    assert first["image"].shape == (64, 64, 3) and first["example_id"] == b"val-cap-0"
    assert (
        seqio.get_mixture_or_task("my_captions")
        .output_features["targets"]
        .vocabulary.decode([int(t) for t in first["targets"] if t > 1])
        == "a red square"
    )
    config_checks.check_data_prepared("my_vqa", "train")  # every record and image is there

    path = os.path.join(project, "my_data", "vqa_val.jsonl")
    original = open(path).read()
    try:
        with open(path, "a") as f:
            f.write('{"image": "squares/val_0.jpg", "question": "what color?"\n')  # a truncated line
        with pytest.raises(config_checks.ConfigError, match=r"vqa_val.jsonl:9: not valid JSON"):
            config_checks.check_data_prepared("my_vqa", "validation")
    finally:
        with open(path, "w") as f:
            f.write(original)
