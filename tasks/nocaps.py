"""NoCaps evaluation tasks (validation), from the official release files.

    nocaps             evaluation of a COCO-fine-tuned model on NoCaps validation (no prompt); metrics overall
                       and per domain (`nocaps_caption_metrics`).
    nocaps_zero_shot   the same with the paper's "a picture of" prompt.

The examples are made as COCO's (`coco_captions.caption_steps`), with the domain kept beside the references.
Vocabulary: `embedded.default_vocabulary()` ($SIMVLM_SPM_MODEL, else the embedded one).

TFDS builder `nocaps`: the NoCaps validation set (novel object captioning), from its official release files.

Nothing is downloaded. The files go under $SIMVLM_RAW_DATA_DIR/nocaps/ (`simvlm_jax.data.raw_files`):

    nocaps_val_4500_captions.json   (nocaps.org/download; COCO-style)
        {"images": [{"id": 0, "open_images_id": "0013ea2087020901", "file_name": "0013ea2087020901.jpg",
                     "domain": "in-domain" | "near-domain" | "out-domain", "height", "width", "coco_url",
                     "license", "date_captured"}],
         "annotations": [{"image_id": 0, "id": 0, "caption": "A baby is standing in front of a house."}]}
    validation/<file_name>          the Open Images (v4) validation images

One split, `validation`: 4,500 images (648 in-domain, 2,938 near-domain, 914 out-domain), one example per
image with its ten reference captions. NoCaps is evaluation only (models are trained on COCO captions);
the test split's captions are not released (its predictions go to the EvalAI server), so it is not read.

Each example: `image_file` ("validation/<file_name>", relative to the raw folder; read when the data is
read by `raw_files.read_image_file`, as for COCO), `image_id` (`id`), `open_images_id`, `domain`,
`caption` (the first reference) and `captions` (all references, in file order, outer whitespace stripped).

Errors name the file: JSON syntax errors with their line, a record without a field with its index, an
unknown domain, a caption of an unknown image, an image without captions, a missing image with its path.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import seqio
import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax import metrics
from simvlm_jax.data import embedded, raw_files
from simvlm_jax.metrics import _inputs
from simvlm_jax.tasks import common
from simvlm_jax.tasks.coco_captions import ZERO_SHOT_PROMPT, caption_postprocessor, caption_steps, check_record, records

TFDS_NAME = "nocaps:1.0.0"

DATASET = "nocaps"
ANNOTATIONS = "nocaps_val_4500_captions.json"
IMAGE_DIR = "validation"
DOMAINS = ("in-domain", "near-domain", "out-domain")
WHERE_TO_GET = (
    "Get nocaps_val_4500_captions.json from https://nocaps.org/download and the Open Images validation "
    "images it lists (its `coco_url`s, or Open Images v4 validation by `open_images_id`) into validation/."
)
IMAGE_FIELDS = ("id", "file_name", "open_images_id", "domain")
ANNOTATION_FIELDS = ("image_id", "caption")


def read_release(path: str) -> list[dict]:
    """The image records of the captions file, in file order, each with its `captions` added (file order);
    every record checked."""
    data = raw_files.read_json(path)
    images = records(data, "images", path)
    by_id: dict[int, dict] = {}
    for index, image in enumerate(images):
        what = f"image record {index} (id {image.get('id', '?') if isinstance(image, dict) else '?'})"
        check_record(image, IMAGE_FIELDS, path, what)
        if image["domain"] not in DOMAINS:
            raise raw_files.MalformedFileError(f"{path}: {what}: domain {image['domain']!r} is not one of {DOMAINS}")
        by_id[image["id"]] = image
    captions: dict[int, list[str]] = collections.defaultdict(list)
    for index, annotation in enumerate(records(data, "annotations", path)):
        what = f"annotation record {index} (id {annotation.get('id', '?') if isinstance(annotation, dict) else '?'})"
        check_record(annotation, ANNOTATION_FIELDS, path, what)
        if annotation["image_id"] not in by_id:
            raise raw_files.MalformedFileError(f"{path}: {what}: no image has id {annotation['image_id']!r}")
        captions[annotation["image_id"]].append(str(annotation["caption"]).strip())
    for index, image in enumerate(images):
        if not captions[image["id"]]:
            raise raw_files.MalformedFileError(f"{path}: image record {index} (id {image['id']}) has no caption")
    return [{**image, "captions": captions[image["id"]]} for image in images]


def split_examples() -> Iterator[tuple[int, dict]]:
    """(image id, example) of the validation split, in file order; checks the file and the images."""
    (path,) = raw_files.require(DATASET, [ANNOTATIONS], WHERE_TO_GET)
    folder = raw_files.raw_data_dir(DATASET)
    for index, image in enumerate(read_release(path)):
        relative = f"{IMAGE_DIR}/{image['file_name']}"
        if not os.path.isfile(os.path.join(folder, relative)):
            raise FileNotFoundError(
                f"{os.path.join(folder, relative)}: the image of record {index} (id {image['id']}) in {path} "
                f"is missing. {WHERE_TO_GET}"
            )
        yield (
            int(image["id"]),
            {
                "image_file": relative,
                "image_id": int(image["id"]),
                "open_images_id": str(image["open_images_id"]),
                "domain": image["domain"],
                "caption": image["captions"][0],
                "captions": image["captions"],
            },
        )


class Nocaps(tfds.core.GeneratorBasedBuilder):
    """NoCaps validation: Open Images with ten captions each and the domain of their objects."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "nocaps v0.1 validation (nocaps_val_4500_captions.json + Open Images images)."}
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "nocaps (Agrawal et al., 2019): 4,500 Open Images validation images with ten captions each, "
                "grouped by whether their objects are in, near or out of the COCO domain."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image_file": tfds.features.Text(),  # relative to $SIMVLM_RAW_DATA_DIR/nocaps
                    "image_id": np.int64,
                    "open_images_id": tfds.features.Text(),
                    "domain": tfds.features.Text(),  # in-domain | near-domain | out-domain
                    "caption": tfds.features.Text(),  # the first reference
                    "captions": tfds.features.Sequence(tfds.features.Text()),  # all ten references
                }
            ),
            supervised_keys=None,
            homepage="https://nocaps.org",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The user provides the release files.
        return {"validation": self._generate_examples()}

    def _generate_examples(self):
        yield from split_examples()


def nocaps_caption_metrics(targets: Sequence[dict], predictions: Sequence[Any]) -> dict[str, float]:
    """SeqIO metric: `coco_caption_metrics` over all images ("cider", "bleu_4", ...) and over the images of
    each domain present ("cider_in-domain", "cider_near-domain", "cider_out-domain", ...).

    Each domain is scored on its images alone, as COCOEvalCap run on that subset: CIDEr's document
    frequencies come from the domain's own references.
    """
    _inputs.check_pairs(targets, predictions)
    scores = metrics.coco_caption_metrics([t["references"] for t in targets], predictions)
    for domain in DOMAINS:
        rows = [(t["references"], p) for t, p in zip(targets, predictions) if t["domain"] == domain]
        if rows:
            per_domain = metrics.coco_caption_metrics([r for r, _ in rows], [p for _, p in rows])
            scores.update({f"{name}_{domain}": value for name, value in per_domain.items()})
    return scores


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> list[seqio.Task]:
    """Registers (again) the two tasks; the data folder is read from the environment when data is read."""
    vocabulary = vocabulary or embedded.default_vocabulary()
    return [
        common.add_task(
            name,
            common.PreparedTfdsSource(TFDS_NAME, splits=["validation"]),
            vocabulary,
            caption_steps(DATASET, prompt, keep_domain=True),
            postprocess_fn=caption_postprocessor,
            metric_fns=[nocaps_caption_metrics],
        )
        for name, prompt in (("nocaps", ""), ("nocaps_zero_shot", ZERO_SHOT_PROMPT))
    ]


register()
