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
run, by the bad-record policy). A file that is not JSON lines, a record without "image" or with other
fields than the first record, and an image that does not exist are errors naming the file and line.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import seqio
import tensorflow as tf

from simvlm_jax.data.raw_files import MalformedFileError, field, read_jsonl


def read_records(path: str, image_dir: str) -> dict[str, list]:
    """The records of one JSONL file as columns {field: [value per record]}; "image" holds full paths."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (a split's JSONL file of JsonlImageSource).")
    columns: dict[str, list] = {}
    for line, record in read_jsonl(path):
        image = field(record, "image", path, line)
        image_path = os.path.join(image_dir, str(image))
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
        raise MalformedFileError(f"{path}: no records.")
    return columns


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

    def __init__(self, split_files: Mapping[str, str], image_dir: str, num_input_examples: Optional[dict] = None):
        self.split_files = dict(split_files)
        self.image_dir = image_dir
        super().__init__(
            dataset_fn=self._dataset,
            splits=list(self.split_files),
            num_input_examples=num_input_examples,
            caching_permitted=False,
        )

    def prepare(self) -> None:
        """Reads every split once (the configuration check before training): errors surface before any step."""
        for path in self.split_files.values():
            read_records(path, self.image_dir)

    def _dataset(self, split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
        del shuffle_files, seed  # one file per split: the task's shuffle buffer shuffles the records
        path = self.split_files[split]
        columns = read_records(path, self.image_dir)
        tensors = {name: _as_tensor(name, values, path) for name, values in columns.items()}
        dataset = tf.data.Dataset.from_tensor_slices(tensors)

        def read_image(example):
            plain = {k: v.flat_values if isinstance(v, tf.RaggedTensor) else v for k, v in example.items()}
            return {**plain, "image": tf.io.read_file(example["image"])}

        return dataset.map(read_image, num_parallel_calls=tf.data.AUTOTUNE)
