"""Your own data's records stay inside their folder: `JsonlImageSource` refuses (counts and names) a record
whose image climbs out of `image_dir` or is too large, unless told otherwise; a non-UTF-8 byte is named by
file and line. Also: the one decompression limit of training and `caption`, and no `incomplete.*` folder
left behind by an interrupted dataset generation."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from simvlm_jax.data import bad_records, data_dirs, jsonl_source
from simvlm_jax.data.raw_files import MalformedFileError


def _png(path, size=(8, 8)):
    Image.fromarray(np.zeros((*size[::-1], 3), np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "my_data" / "images"
    images.mkdir(parents=True)
    _png(images / "good.png")
    _png(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", images / "link.png")
    records = [
        {"image": "good.png", "caption": "a"},
        {"image": "../../outside.png", "caption": "b"},
        {"image": str(tmp_path / "outside.png"), "caption": "c"},
        {"image": "link.png", "caption": "d"},
    ]
    path = tmp_path / "my_data" / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path), str(images)


def test_images_outside_the_folder_are_refused_per_record_and_named(folder):
    path, images = folder
    columns, refused = jsonl_source.read_records(path, images)
    assert columns["caption"] == ["a"]
    assert [r.split(": ", 1)[0] for r in refused] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert all(f"is outside {images}" in r for r in refused), refused
    columns, refused = jsonl_source.read_records(path, images, allow_outside_image_dir=True)
    assert columns["caption"] == ["a", "b", "c", "d"] and refused == []


def test_an_image_file_over_the_byte_bound_is_refused(folder):
    path, images = folder
    _png(os.path.join(images, "good.png"), size=(64, 64))  # larger than the 8x8 images the others point at
    size = os.path.getsize(os.path.join(images, "good.png"))
    columns, refused = jsonl_source.read_records(path, images, allow_outside_image_dir=True, max_image_bytes=size - 1)
    assert columns["caption"] == ["b", "c", "d"]
    assert refused == [f"{path}:1: image 'good.png' has {size:,} bytes, more than {size - 1:,}"]


def test_the_source_skips_refused_records_or_fails_under_policy_fail(folder, caplog):
    path, images = folder
    source = jsonl_source.JsonlImageSource({"train": path}, image_dir=images)
    records = list(source.get_dataset("train", shuffle=False).as_numpy_iterator())
    assert [r["caption"] for r in records] == [b"a"]
    with bad_records.applied(bad_records.RecordPolicy("fail")):
        with pytest.raises(bad_records.BadRecordError, match=f"{path}:2: image '../../outside.png' is outside"):
            source.prepare()


def test_a_non_utf8_byte_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    _png(tmp_path / "a.png")
    path.write_bytes(b'{"image": "a.png", "caption": "ok"}\n{"image": "a.png", "caption": "caf\xe9"}\n')
    with pytest.raises(MalformedFileError, match=rf"{path}:2: not UTF-8 \(byte 0xe9 at column 35\)"):
        jsonl_source.read_records(str(path), str(tmp_path))


def test_caption_refuses_an_image_over_trainings_pixel_limit(tmp_path):
    from simvlm_jax.caption import ImageReadError, read_image

    side = int(np.sqrt(bad_records.DEFAULT_MAX_PIXELS)) + 1
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")  # a few KB on disk, 64 Mpx decoded
    assert os.path.getsize(tmp_path / "bomb.png") < 100_000
    with pytest.raises(ImageReadError, match=rf"too large: {side}x{side} > {bad_records.DEFAULT_MAX_PIXELS} pixels"):
        read_image(str(tmp_path / "bomb.png"))


def test_an_interrupted_generation_leaves_no_incomplete_folder(embedded_data_dir):
    from simvlm_jax.data.builders import PydocText

    leftover = os.path.join(data_dirs.tfds_data_dir(embedded_data_dir), PydocText.name, "incomplete.KILLED_1.0.0")
    os.makedirs(os.path.join(leftover, "partial"))
    data_dirs.prepare_builder(PydocText, embedded_data_dir)
    assert not os.path.exists(leftover)
