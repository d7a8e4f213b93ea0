"""`python -m simvlm_jax.caption` on a tiny random-init checkpoint: every image kind, bad files, options."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_module


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(good paths, bad paths) covering the image modes a user may have."""
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    good = []

    def save(name, image, **kw):
        path = str(d / name)
        image.save(path, **kw)
        good.append(path)

    save("large_rgb.jpg", Image.fromarray(rng.integers(0, 256, (1200, 1600, 3), np.uint8)), quality=90)
    save("tiny_gray.png", Image.fromarray(rng.integers(0, 256, (5, 3), np.uint8), "L"))
    save("rgba.png", Image.fromarray(rng.integers(0, 256, (40, 30, 4), np.uint8), "RGBA"))
    save("palette.png", Image.fromarray(rng.integers(0, 256, (50, 50, 3), np.uint8)).convert("P"))
    save("deep16.png", Image.fromarray(rng.integers(0, 65536, (48, 64), np.uint16)))
    save("cmyk.jpg", Image.fromarray(rng.integers(0, 256, (70, 90, 3), np.uint8)).convert("CMYK"))
    with Image.open(good[4]) as im:
        assert im.mode.startswith("I")  # the 16-bit PNG really is 16-bit
    with Image.open(good[5]) as im:
        assert im.mode == "CMYK"

    truncated = str(d / "truncated.jpg")
    with open(good[0], "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 3])
    text_file = str(d / "x.png")
    with open(text_file, "w") as f:
        f.write("this is not a picture\n")
    missing = str(d / "missing.jpg")
    return good, [truncated, text_file, missing]


def _records(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_captions_every_image_kind_and_reports_bad_files(model_dir, images):
    good, (truncated, text_file, missing) = images
    paths = good[:3] + [truncated] + good[3:] + [text_file, missing]
    records = _records(
        run_module("simvlm_jax.caption", f"--checkpoint={model_dir}", "--max_decode_length=8", "--batch_size=4", *paths)
    )
    assert [r["image"] for r in records] == paths
    by_path = {r["image"]: r for r in records}
    for path in good:
        assert set(by_path[path]) == {"image", "text"} and isinstance(by_path[path]["text"], str), by_path[path]
    assert "truncated" in by_path[truncated]["error"]
    assert "not an image" in by_path[text_file]["error"]
    assert "not found" in by_path[missing]["error"]


def test_question_beam_search_checkpoint_folder_and_attention(model_dir, images, tmp_path):
    good, (_, _, missing) = images
    ckpt = os.path.join(model_dir, "checkpoint_1")
    records = _records(
        run_module(
            "simvlm_jax.caption",
            f"--checkpoint={ckpt}",
            "--question=what is in the picture?",
            "--beam_size=2",
            "--max_decode_length=6",
            f"--attention={tmp_path / 'looked'}",
            good[1],
            good[2],
        )
    )
    assert [r["image"] for r in records] == good[1:3] and all(isinstance(r["text"], str) for r in records)
    for index, record in enumerate(records):  # each image with its heat map, at the model's image size
        name = os.path.splitext(os.path.basename(record["image"]))[0]
        assert record["attention"] == str(tmp_path / "looked" / f"{index:04d}_{name}.attention.png")
        assert Image.open(record["attention"]).size == (64, 64)

    proc = run_module("simvlm_jax.caption", f"--checkpoint={model_dir}", "--max_decode_length=4", missing)
    assert proc.returncode == 1 and "not found" in json.loads(proc.stdout)["error"]


def test_directories_stand_for_their_image_files(tmp_path):
    from simvlm_jax.caption import expand_inputs

    (tmp_path / "photos" / "sub").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    for name in ("b.JPG", "a.png", "notes.txt", "sub/c.webp"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    photos, empty = str(tmp_path / "photos"), str(tmp_path / "empty")
    assert expand_inputs([photos, "x.jpg"]) == [(f"{photos}/a.png", None), (f"{photos}/b.JPG", None), ("x.jpg", None)]
    assert [p for p, _ in expand_inputs([photos], recursive=True)] == [
        f"{photos}/a.png",
        f"{photos}/b.JPG",
        f"{photos}/sub/c.webp",
    ]
    [(path, error)] = expand_inputs([empty])
    assert path == empty and "no image files" in error


def test_a_directory_on_the_command_line(model_dir, images):
    good, _ = images
    folder = os.path.dirname(good[0])
    records = _records(
        run_module("simvlm_jax.caption", f"--checkpoint={model_dir}", "--max_decode_length=4", "--batch_size=8", folder)
    )
    captioned = sorted(p for p in os.listdir(folder) if p.endswith((".jpg", ".png")))
    assert [os.path.basename(r["image"]) for r in records] == captioned  # sorted, bad files reported in place
    assert {os.path.basename(r["image"]) for r in records if "text" in r} == {os.path.basename(p) for p in good}
