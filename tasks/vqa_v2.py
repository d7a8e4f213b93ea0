"""VQA v2 tasks, from the official release files (builder `vqa_v2`, data/builders/vqa_v2.py).

    vqa_v2              open-ended, as SimVLM fine-tunes and evaluates it: the question joins the image
                        in the encoder, the decoder generates the answer (the training target is the
                        `multiple_choice_answer`); splits train / validation / test (test: no answers,
                        for predictions only); metric: metrics.vqa_accuracy over the ten answers (official
                        rules).
    closed set          the same task with rank decoding (gin/runs/eval_vqa_v2_closed_set.gin): the model
                        scores each of the K = 3,129 most frequent training answers (`closed_set_answers`)
                        as the target and the best is the prediction (model/ranking.py: the encoder runs
                        once per question, the decoder once per candidate in chunks); the same metric.

The images are read from $SIMVLM_RAW_DATA_DIR/vqa_v2 as the data is read (the prepared TFDS data, in
$SIMVLM_DATA_DIR/tfds, holds their paths). Vocabulary: $SIMVLM_SPM_MODEL, else the embedded one
(`embedded.default_vocabulary`), as the pretraining tasks. Splits: train, validation (val2014),
minival (the questions of 1,000 of its images, for evaluation during fine-tuning) and test (test2015).


TFDS builder `vqa_v2`: VQA v2.0 (visualqa.org), read from its official release files.

Nothing is downloaded. The files go, as released, under $SIMVLM_RAW_DATA_DIR/vqa_v2/
(`simvlm_jax.data.raw_files`):

    v2_OpenEnded_mscoco_train2014_questions.json   {"questions": [{"image_id", "question", "question_id"}], ...}
    v2_OpenEnded_mscoco_val2014_questions.json
    v2_OpenEnded_mscoco_test2015_questions.json
    v2_mscoco_train2014_annotations.json           {"annotations": [{"question_id", "image_id",
    v2_mscoco_val2014_annotations.json               "question_type", "answer_type", "multiple_choice_answer",
                                                     "answers": [{"answer", "answer_confidence", "answer_id"}] x10}]}
    train2014/COCO_train2014_<12-digit image id>.jpg     (MS COCO 2014 / 2015 images)
    val2014/COCO_val2014_<id>.jpg
    test2015/COCO_test2015_<id>.jpg

    split        questions   images   answers
    train          443,757   82,783   10 per question
    validation     214,354   40,504   10 per question (val2014)
    minival         ~5,300    1,000   the questions of the 1,000 val2014 images of smallest id: a fixed
                                      subset for evaluation during fine-tuning (seqio.Evaluator keeps
                                      every example, image included, in memory: all of val2014 would
                                      not fit)
    test           447,793   81,434   none (test2015: predictions go to the EvalAI server)

One example per question. The image is NOT copied into the prepared data: each example holds its image's
path relative to the raw folder (`image_file`), and `raw_files.read_image_file` (the first step of the vqa_v2 tasks)
reads it from $SIMVLM_RAW_DATA_DIR/vqa_v2 when the data is read. An image is shared by ~5 questions, so
storing it with each would multiply COCO's 31 GB about five times; the prepared data is ~0.2 GB instead.
Preparation checks that every image exists.

`info.metadata["train_answer_counts"]`: [[answer, count]] of the train split's `multiple_choice_answer`s,
most frequent first (ties in string order): the candidates of the closed-set setting (its first 3,129
answers are the usual VQA v2 answer list).

Errors name the file: JSON syntax errors with their line (`raw_files.read_json`), a record without a field
with its index and question id, a missing image with its path.
"""

from __future__ import annotations

import collections
import functools
import os
from typing import Any, Iterator, Optional

import numpy as np
import seqio
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax import metrics
from simvlm_jax.data import data_dirs, embedded, question_answering, raw_files
from simvlm_jax.tasks import common

DATASET = "vqa_v2"
WHERE_TO_GET = (
    "Get the question and annotation files from https://visualqa.org/download.html and the MS COCO 2014 "
    "train/val and 2015 test images from https://cocodataset.org/#download (unzipped: train2014/, val2014/, "
    "test2015/)."
)
# split: (question file, annotation file or None, image folder = COCO subset)
SPLIT_FILES = {
    "train": (
        "v2_OpenEnded_mscoco_train2014_questions.json",
        "v2_mscoco_train2014_annotations.json",
        "train2014",
    ),
    "validation": (
        "v2_OpenEnded_mscoco_val2014_questions.json",
        "v2_mscoco_val2014_annotations.json",
        "val2014",
    ),
    "test": ("v2_OpenEnded_mscoco_test2015_questions.json", None, "test2015"),
}
SPLIT_FILES["minival"] = SPLIT_FILES["validation"]
MINIVAL_IMAGES = 1000  # minival: the questions of the val2014 images with the 1,000 smallest ids
QUESTION_FIELDS = ("image_id", "question", "question_id")
ANNOTATION_FIELDS = ("question_id", "question_type", "answer_type", "multiple_choice_answer", "answers")


def image_file(subset: str, image_id: int) -> str:
    """The image's path relative to the raw folder: "val2014/COCO_val2014_000000000042.jpg"."""
    return f"{subset}/COCO_{subset}_{image_id:012d}.jpg"


def _records(data: Any, key: str, path: str) -> list:
    """data[key] of a release file, which must be a list of objects."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise raw_files.MalformedFileError(f"{path}: expected a JSON object with a {key!r} list")
    return data[key]


def _check_fields(record: Any, fields: tuple[str, ...], path: str, kind: str, index: int) -> dict:
    """The record, or MalformedFileError naming the file, the record's index and its question id."""
    if not isinstance(record, dict):
        raise raw_files.MalformedFileError(f"{path}: {kind} record {index} is not a JSON object")
    missing = [name for name in fields if name not in record]
    if missing:
        raise raw_files.MalformedFileError(
            f"{path}: {kind} record {index} (question_id {record.get('question_id', '?')}): "
            f"no {', '.join(repr(m) for m in missing)} field"
        )
    for name in ("question_id", "image_id"):
        value = record.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise raw_files.MalformedFileError(
                f"{path}: {kind} record {index} (question_id {record['question_id']}): {name!r} is not an "
                f"integer ({value!r})"
            )
    return record


def read_questions(path: str) -> list[dict]:
    """The question records of a questions file, each checked for its fields."""
    questions = _records(raw_files.read_json(path), "questions", path)
    return [_check_fields(q, QUESTION_FIELDS, path, "question", i) for i, q in enumerate(questions)]


def read_annotations(path: str) -> dict[int, dict]:
    """{question_id: annotation record} of an annotations file, each checked for its fields and answers."""
    annotations = {}
    for i, record in enumerate(_records(raw_files.read_json(path), "annotations", path)):
        _check_fields(record, ANNOTATION_FIELDS, path, "annotation", i)
        answers = record["answers"]
        if not isinstance(answers, list) or not all(isinstance(a, dict) and "answer" in a for a in answers):
            raise raw_files.MalformedFileError(
                f"{path}: annotation record {i} (question_id {record['question_id']}): 'answers' must be a list "
                "of objects with an 'answer' field"
            )
        annotations[int(record["question_id"])] = record
    return annotations


def split_examples(split: str) -> Iterator[tuple[int, dict]]:
    """(question_id, example) of one split, in the questions file's order; checks the files and images."""
    questions_name, annotations_name, subset = SPLIT_FILES[split]
    names = [questions_name] + ([annotations_name] if annotations_name else [])
    paths = raw_files.require(DATASET, names, WHERE_TO_GET)
    annotations = read_annotations(paths[1]) if annotations_name else None
    folder = raw_files.raw_data_dir(DATASET)
    questions = read_questions(paths[0])
    kept_images = None
    if split == "minival":
        kept_images = set(sorted({int(q["image_id"]) for q in questions})[:MINIVAL_IMAGES])
    seen_images: set[int] = set()
    for index, question in enumerate(questions):
        question_id, image_id = int(question["question_id"]), int(question["image_id"])
        if kept_images is not None and image_id not in kept_images:
            continue
        relative = image_file(subset, image_id)
        if image_id not in seen_images:
            if not os.path.isfile(os.path.join(folder, relative)):
                raise FileNotFoundError(
                    f"{os.path.join(folder, relative)}: the image of question {index} (question_id {question_id}) "
                    f"in {paths[0]} is missing. {WHERE_TO_GET}"
                )
            seen_images.add(image_id)
        example = {
            "image_file": relative,
            "image_id": image_id,
            "question_id": question_id,
            "question": str(question["question"]),
            "question_type": "",
            "answer_type": "",
            "answer": "",
            "answers": [],
        }
        if annotations is not None:
            record = annotations.get(question_id)
            if record is None:
                raise raw_files.MalformedFileError(
                    f"{paths[1]}: no annotation for question {index} (question_id {question_id}) of {paths[0]}"
                )
            example.update(
                question_type=str(record["question_type"]),
                answer_type=str(record["answer_type"]),
                answer=str(record["multiple_choice_answer"]),
                answers=[str(a["answer"]) for a in record["answers"]],
            )
        yield question_id, example


def answer_counts(annotations_path: str) -> list[list]:
    """[[answer, count]] of the `multiple_choice_answer`s of an annotations file, most frequent first
    (equal counts in string order, so the list is deterministic)."""
    counts = collections.Counter(str(r["multiple_choice_answer"]) for r in read_annotations(annotations_path).values())
    return [[answer, count] for answer, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


class VqaV2(tfds.core.GeneratorBasedBuilder):
    """VQA v2.0 on MS COCO, one example per question; images referenced by path (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "VQA v2.0 release files: train2014, val2014 (validation, minival), test2015 (test)."}
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "VQA v2.0 (Goyal et al., 2017): open-ended questions about MS COCO images with ten "
                "annotators' answers each; balanced so that similar images give different answers."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image_file": tfds.features.Text(),  # relative to $SIMVLM_RAW_DATA_DIR/vqa_v2
                    "image_id": np.int64,
                    "question_id": np.int64,
                    "question": tfds.features.Text(),
                    "question_type": tfds.features.Text(),  # "" in test
                    "answer_type": tfds.features.Text(),  # yes/no, number, other; "" in test
                    "answer": tfds.features.Text(),  # multiple_choice_answer; "" in test
                    "answers": tfds.features.Sequence(tfds.features.Text()),  # 10; none in test
                }
            ),
            supervised_keys=None,
            homepage="https://visualqa.org",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The user provides the release files.
        train_annotations = raw_files.require(DATASET, [SPLIT_FILES["train"][1]], WHERE_TO_GET)[0]
        self.info.metadata["train_answer_counts"] = answer_counts(train_annotations)
        return {split: self._generate_examples(split) for split in SPLIT_FILES}

    def _generate_examples(self, split: str):
        yield from split_examples(split)


def train_answers(num_answers: int, data_dir: str | None = None) -> list[str]:
    """The `num_answers` most frequent training answers of the prepared dataset (prepared on first use)."""
    data_dirs.prepare_builder(VqaV2, data_dir)
    builder = VqaV2(data_dir=data_dirs.tfds_data_dir(data_dir))
    counts = builder.info.metadata["train_answer_counts"]
    return [answer for answer, _ in counts[:num_answers]]


TFDS_NAME = "vqa_v2:1.0.0"
SPLITS = ["train", "validation", "minival", "test"]  # minival: 1,000 val2014 images (builder docstring)
CLOSED_SET_ANSWERS = 3129  # the common VQA v2 answer list's size (the paper names the 3,129-answer list)


def closed_set_answers(num_answers: int = CLOSED_SET_ANSWERS, data_dir: Optional[str] = None) -> list[str]:
    """The closed set's candidates: the `num_answers` most frequent training answers, most frequent first
    (ties in string order), from the prepared dataset (prepared from the release files on first use)."""
    return train_answers(num_answers, data_dir)


def open_ended_preprocessors() -> list:
    """Release records -> question in the encoder, `multiple_choice_answer` as the target."""
    return [
        functools.partial(raw_files.read_image_file, raw_dataset=DATASET),
        *common.vqa_preprocessors(id_key="question_id"),
    ]


def add_open_ended_task(name: str = "vqa_v2", vocabulary: Optional[seqio.Vocabulary] = None) -> seqio.Task:
    return common.add_task(
        name,
        common.PreparedTfdsSource(TFDS_NAME, splits=SPLITS),
        vocabulary or embedded.default_vocabulary(),
        open_ended_preprocessors(),
        postprocess_fn=question_answering.vqa_answers_postprocessor,
        metric_fns=[metrics.vqa_accuracy],
    )


add_open_ended_task()
