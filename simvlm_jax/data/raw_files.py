"""Where the official release files of downstream datasets live, and reading them with errors that say
which file and line is wrong.

Each dataset's files go, in the layout the dataset ships, under

    $SIMVLM_RAW_DATA_DIR/<dataset>/          (default ~/simvlm_raw_data/<dataset>)

e.g. $SIMVLM_RAW_DATA_DIR/vqa_v2/v2_OpenEnded_mscoco_train2014_questions.json. Nothing is downloaded:
`require` names the missing files and where to get them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Sequence

import tensorflow as tf


class MalformedFileError(ValueError):
    """A release file that does not parse as its format says: the message starts with `path:line:`."""


def raw_data_dir(dataset: str) -> str:
    """$SIMVLM_RAW_DATA_DIR/<dataset> (default ~/simvlm_raw_data/<dataset>)."""
    root = os.environ.get("SIMVLM_RAW_DATA_DIR") or os.path.join(os.path.expanduser("~"), "simvlm_raw_data")
    return os.path.join(root, dataset)


def require(dataset: str, relative_paths: Sequence[str], where_to_get: str) -> list[str]:
    """The absolute paths of `relative_paths` under raw_data_dir(dataset); a FileNotFoundError naming the
    dataset, every missing file and `where_to_get` when any is missing."""
    folder = raw_data_dir(dataset)
    paths = [os.path.join(folder, p) for p in relative_paths]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"The {dataset} dataset is not prepared: missing {', '.join(missing)}. {where_to_get} Put the "
            f"files in {folder} (or set SIMVLM_RAW_DATA_DIR to the folder that holds {dataset}/)."
        )
    return paths


def read_json(path: str) -> Any:
    """A JSON file; MalformedFileError with the line and column of a syntax error."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise MalformedFileError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})")


def read_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every non-empty line of a JSON-lines file; MalformedFileError naming the
    line that is not a JSON object."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise MalformedFileError(
                    f"{path}:{number}: not UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MalformedFileError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise MalformedFileError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
            yield number, record


def field(record: dict, name: str, path: str, line: int) -> Any:
    """record[name], or MalformedFileError('path:line: no "name" field')."""
    if name not in record:
        raise MalformedFileError(f"{path}:{line}: no {name!r} field (fields: {', '.join(sorted(record))})")
    return record[name]


def read_image_file(dataset: "tf.data.Dataset", raw_dataset: str) -> "tf.data.Dataset":
    """Adds `image`: the encoded bytes of each example's `image_file` (a path relative to
    raw_data_dir(raw_dataset), resolved when the pipeline is built). For builders that store image paths
    instead of images; a missing file stops the read naming its path."""
    root = raw_data_dir(raw_dataset)

    def read(ex):
        return {**ex, "image": tf.io.read_file(tf.strings.join([root, "/", ex["image_file"]]))}

    return dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)
