"""`python -m simvlm_jax.eval` and `simvlm_jax.infer` on a tiny random-init checkpoint."""

import glob
import json
import os

from tests.helpers import run_module


def test_eval_writes_caption_metrics(model_dir, tmp_path):
    out = str(tmp_path / "eval")
    done = run_module(
        "simvlm_jax.eval",
        "--gin_file=gin/runs/eval.gin",
        f"--gin.CHECKPOINT_PATH={model_dir}",
        "--gin.MIXTURE_OR_TASK_NAME=embedded_heldout_captioning",
        f"--gin.EVAL_OUTPUT_DIR={out}",
        "--gin.BATCH_SIZE=16",
        "--gin.NUM_EXAMPLES=24",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = [json.loads(line_) for line_ in done.stdout.splitlines() if line_.startswith("{")][0]
    assert line["task"] == "embedded_heldout_captioning" and line["step"] == 1
    assert {"bleu_4", "meteor", "rouge_l", "cider", "exact_match"} <= set(line)
    assert line["exact_match"] == 0.0  # random parameters never write a reference caption
    assert "eval: 24/24 examples" in done.stdout  # the decoding progress line (its final one)
    metrics_file = os.path.join(out, "embedded_heldout_captioning-metrics.jsonl")
    assert json.loads(open(metrics_file).readline())["step"] == 1
    rows = [json.loads(line_) for line_ in open(os.path.join(out, "embedded_heldout_captioning-000001.jsonl"))]
    assert len(rows) == 24
    for row in rows:  # each prediction names its input; the image is summarised by its shape, not dumped
        assert row["input"]["example_id"].startswith("heldout-"), row["input"]
        assert row["input"]["image"] == "<float32 array [64, 64, 3]>"
        assert "summary:" not in json.dumps(row)
    assert glob.glob(os.path.join(out, "**", "events.out.tfevents.*"), recursive=True)


def test_infer_writes_one_prediction_per_example(model_dir, tmp_path):
    out = str(tmp_path / "infer")
    done = run_module(
        "simvlm_jax.infer",
        "--gin_file=gin/runs/infer.gin",
        f"--gin.CHECKPOINT_PATH={model_dir}",
        "--gin.MIXTURE_OR_TASK_NAME=embedded_scenes_captioning",
        f"--gin.INFER_OUTPUT_DIR={out}",
        "--gin.BATCH_SIZE=8",
        "--gin.NUM_EXAMPLES=10",
        "--gin.INFER_SPLIT='heldout'",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [json.loads(line) for line in open(os.path.join(out, "embedded_scenes_captioning-heldout.jsonl"))]
    assert [r["index"] for r in rows] == list(range(10))  # every example, in order (10 = 8 + a padded 2)
    assert len({r["id"] for r in rows}) == 10 and all(r["id"].startswith("heldout-") for r in rows)
    for row in rows:
        assert set(row) == {"index", "id", "inputs", "target", "prediction"}
        assert row["inputs"] == "" and row["target"].startswith("a ") and isinstance(row["prediction"], str)
    assert "infer: 10/10 examples" in done.stdout


def test_eval_and_infer_name_missing_or_malformed_release_files_in_one_line(model_dir, tmp_path):
    """A task whose official files are missing (eval) or malformed (infer) stops the command before any
    parameter is read, with one line naming the file: no traceback."""
    raw = tmp_path / "raw"
    (raw / "nocaps").mkdir(parents=True)
    env = {"SIMVLM_RAW_DATA_DIR": str(raw)}  # nothing is prepared: the data dir stays the session's
    common = [f"--gin.CHECKPOINT_PATH={model_dir}", "--gin.MIXTURE_OR_TASK_NAME=nocaps", "--gin.NUM_EXAMPLES=4"]
    missing = run_module(
        "simvlm_jax.eval", "--gin_file=gin/runs/eval.gin", *common, f"--gin.EVAL_OUTPUT_DIR={tmp_path}/e", env=env
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr[-3000:]
    line = missing.stderr.strip().splitlines()[-1]
    assert line.startswith("Configuration error: Task 'nocaps' cannot read its data:"), line
    assert "missing " + str(raw / "nocaps" / "nocaps_val_4500_captions.json") in line, line

    (raw / "nocaps" / "nocaps_val_4500_captions.json").write_text('{"images": [{"id": 0}], "annotations": [')
    malformed = run_module(
        "simvlm_jax.infer", "--gin_file=gin/runs/infer.gin", *common, f"--gin.INFER_OUTPUT_DIR={tmp_path}/i", env=env
    )
    assert malformed.returncode == 2 and "Traceback" not in malformed.stderr, malformed.stderr[-3000:]
    line = malformed.stderr.strip().splitlines()[-1]
    assert line.startswith("Configuration error: Task 'nocaps' cannot read its data:"), line
    assert "nocaps_val_4500_captions.json:1: not valid JSON" in line, line
