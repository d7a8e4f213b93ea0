"""`python -m simvlm_jax.eval` and `simvlm_jax.infer` on a tiny random-init checkpoint."""

import glob
import json
import os
import re

import pytest

from tests.helpers import run_module


@pytest.fixture(scope="module")
def evaluated(model_dir, tmp_path_factory):
    """`python -m simvlm_jax.eval` on 24 held-out images: (the finished process, its output dir)."""
    out = str(tmp_path_factory.mktemp("eval") / "eval")
    done = run_module(
        "simvlm_jax.eval",
        "--gin_file=gin/runs/eval.gin",
        f"--gin.CHECKPOINT_PATH={model_dir}",
        "--gin.MIXTURE_OR_TASK_NAME=embedded_heldout_captioning",
        f"--gin.EVAL_OUTPUT_DIR={out}",
        "--gin.BATCH_SIZE=16",
        "--gin.NUM_EXAMPLES=24",
    )
    return done, out


def test_eval_writes_caption_metrics(evaluated):
    done, out = evaluated
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
    # report.html: a row per example with its thumbnail and CIDEr; COCO's corpus CIDEr is the mean of the
    # per-image CIDEr-D scores, so the rows average to the metric.
    assert done.stdout.strip().splitlines()[-1] == f"report: {os.path.join(out, 'report.html')}"
    page = open(os.path.join(out, "report.html")).read()
    scores = [float(s) for s in re.findall(r'data-score="([^"]*)"', page)]
    assert len(scores) == 24 and scores == sorted(scores)  # worst first
    assert page.count('<img class="thumb" src="data:image/png;base64,') == 24
    assert sum(scores) / len(scores) == pytest.approx(line["cider"], abs=1e-3)
    assert page.count('<img class="thumb attention" src="data:image/png;base64,') == 16  # the first 16 rows


# Run in the page once it has loaded: every image decoded, the rows counted, the score column sorted both
# ways by clicking its header; the answers go to <body data-check="...">, which --dump-dom prints.
CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var table = document.querySelector("table.examples");
  var scores = function () {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return parseFloat(r.dataset.score); });
  };
  var images = Array.prototype.slice.call(document.images);
  var result = {
    images: images.length,
    loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    rows: table.tBodies[0].rows.length,
    initial: scores()
  };
  var header = table.querySelector('th[data-key="score"]');
  header.click(); result.ascending = scores();
  header.click(); result.descending = scores();
  document.body.dataset.check = JSON.stringify(result);
});
</script>
"""


def test_the_report_renders_in_headless_chromium(evaluated, tmp_path):
    """Checked as a person would look: Debian's Chromium loads the page from disk with no server and no
    network; every thumbnail and heat map decodes, a row per example, sorting by the score works."""
    import shutil
    import subprocess

    done, out = evaluated
    assert done.returncode == 0, done.stderr[-4000:]
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("SIMVLM_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    page = open(os.path.join(out, "report.html")).read()
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom"]
    dom = subprocess.run([chromium, *flags, checked.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, dom[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["rows"] == 24
    assert result["images"] == 24 + 16 and result["loaded"] == result["images"]  # thumbnails + heat maps
    assert result["initial"] == sorted(result["initial"])  # worst first
    assert result["ascending"] == sorted(result["initial"]) and result["descending"] == sorted(result["initial"])[::-1]


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
    page = open(os.path.join(out, "report.html")).read()  # the same 10 examples, with their images
    assert sorted(re.findall(r'data-id="([^"]*)"', page)) == sorted(r["id"] for r in rows)
    assert page.count('<img class="thumb" src="data:image/png;base64,') == 10


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
