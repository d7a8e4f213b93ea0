"""Your own dataset as a folder of images and JSON-lines records: a SeqIO data source.

    source = JsonlImageSource({"train": "my_data/train.jsonl", "validation": "my_data/val.jsonl"},
                              image_dir="my_data/images")

Every line of a split's file is one record, an object whose "image" names a file under `image_dir`; its
other fields become features of the same name: strings, numbers, or lists of strings (e.g. the answers
of several annotators). All records of a file have the same fields. For example:

    captioning   {"image": "cat.jpg", "caption": "a cat sleeping on a mat", "id": "cat-1"}
    VQA          {"image": "cat.jpg", "question": "what animal is this?", "answer": "cat",
                  "answers": ["cat", "cat", "kitten"], "id": "q1"}

The image bytes are read by tf.data (so the data iterator can be checkpointed with the train state) and
decoded by the task's preprocessors (`decode_image`: corrupt images are skipped and counted, or stop the
run, by the bad-record policy). A file that is not JSON lines (or not UTF-8), a record without "image" or
with other fields than the first record, and an image that does not exist are errors naming the file and line.

A record's image must lie inside `image_dir`: a path that climbs out of it (`../`, a symbolic link) or an
absolute path is refused, as is an image file larger than `max_image_bytes`. Refused records are dropped,
counted and named in one warning per file (or stop the run under bad_record_policy='fail');
`allow_outside_image_dir=True` reads images anywhere the process can.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import seqio
import tensorflow as tf
from absl import logging

from simvlm_jax.data import bad_records
from simvlm_jax.data.raw_files import MalformedFileError, field, read_jsonl

DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024  # an image file larger than this is refused unread


def _refusal(image: str, image_dir: str, allow_outside: bool, max_bytes: int) -> tuple[str, Optional[str]]:
    """(the image's path, why the record is refused or None)."""
    root = os.path.realpath(image_dir)
    path = os.path.realpath(os.path.join(root, image))
    if not allow_outside and (os.path.isabs(image) or os.path.commonpath([root, path]) != root):
        return path, f"image {image!r} is outside {image_dir}"
    if os.path.isfile(path) and os.path.getsize(path) > max_bytes:
        return path, f"image {image!r} has {os.path.getsize(path):,} bytes, more than {max_bytes:,}"
    return path, None


def read_records(
    path: str,
    image_dir: str,
    allow_outside_image_dir: bool = False,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> tuple[dict[str, list], list[str]]:
    """The records of one JSONL file as columns {field: [value per record]} ("image" holds full paths), and
    the refused records as "path:line: why" (an image outside `image_dir`, or too large)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (a split's JSONL file of JsonlImageSource).")
    columns: dict[str, list] = {}
    refused: list[str] = []
    for line, record in read_jsonl(path):
        image = str(field(record, "image", path, line))
        image_path, why = _refusal(image, image_dir, allow_outside_image_dir, max_image_bytes)
        if why:
            refused.append(f"{path}:{line}: {why}")
            continue
        if not os.path.isfile(image_path):
            raise FileNotFoundError(f"{path}:{line}: image {image_path} does not exist.")
        values = {**record, "image": image_path}
        if columns and set(values) != set(columns):
            raise MalformedFileError(
                f"{path}:{line}: fields {sorted(values)} differ from the first record's {sorted(columns)}."
            )
        for name, value in values.items():
            columns.setdefault(name, []).append(value)
    if not columns:
        raise MalformedFileError(
            f"{path}: no records" + (f" left ({len(refused)} refused: {refused[0]})." if refused else ".")
        )
    return columns, refused


def _as_tensor(name: str, values: list, path: str) -> Any:
    """A column as a tensor: strings, numbers, or a ragged [records, None] tensor of string lists."""
    if all(isinstance(v, list) for v in values):
        return tf.ragged.constant([[str(item) for item in v] for v in values], dtype=tf.string)
    if all(isinstance(v, bool) for v in values):
        return tf.constant(values, tf.bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return tf.constant(values, tf.int64)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return tf.constant(values, tf.float32)
    if all(isinstance(v, str) for v in values):
        return tf.constant(values, tf.string)
    raise MalformedFileError(f"{path}: field {name!r} mixes types; use one of string, number, list of strings.")


class JsonlImageSource(seqio.FunctionDataSource):
    """A SeqIO source over {split: JSONL file} whose records name images in `image_dir`."""

    def __init__(
        self,
        split_files: Mapping[str, str],
        image_dir: str,
        num_input_examples: Optional[dict] = None,
        allow_outside_image_dir: bool = False,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ):
        self.split_files = dict(split_files)
        self.image_dir = image_dir
        self.allow_outside_image_dir = allow_outside_image_dir
        self.max_image_bytes = max_image_bytes
        super().__init__(
            dataset_fn=self._dataset,
            splits=list(self.split_files),
            num_input_examples=num_input_examples,
            caching_permitted=False,
        )

    def prepare(self) -> None:
        """Reads every split once (the configuration check before training): errors surface before any step."""
        for path in self.split_files.values():
            self._read(path)

    def _read(self, path: str) -> dict[str, list]:
        """read_records, with the refused records counted and named (or, under policy 'fail', an error)."""
        columns, refused = read_records(path, self.image_dir, self.allow_outside_image_dir, self.max_image_bytes)
        if refused and bad_records.active().on_bad == "fail":
            raise bad_records.BadRecordError(f"{refused[0]} (bad_record_policy='fail')")
        if refused:
            shown = "; ".join(refused[:3]) + ("; ..." if len(refused) > 3 else "")
            logging.warning("%d record(s) of %s refused and skipped: %s", len(refused), path, shown)
        return columns

    def _dataset(self, split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
        del shuffle_files, seed  # one file per split: the task's shuffle buffer shuffles the records
        path = self.split_files[split]
        columns = self._read(path)
        tensors = {name: _as_tensor(name, values, path) for name, values in columns.items()}
        dataset = tf.data.Dataset.from_tensor_slices(tensors)

        def read_image(example):
            plain = {k: v.flat_values if isinstance(v, tf.RaggedTensor) else v for k, v in example.items()}
            return {**plain, "image": tf.io.read_file(example["image"])}

        return dataset.map(read_image, num_parallel_calls=tf.data.AUTOTUNE)
