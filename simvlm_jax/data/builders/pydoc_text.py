"""TFDS builder `pydoc_text`: English documents from the Python language reference.

Read from `pydoc_data.topics` of the running CPython (see `simvlm_jax.data.text_corpus`), so
nothing is downloaded; the content follows the Python version (the project pins 3.11).
"""

from __future__ import annotations

import platform

import tensorflow_datasets as tfds
from etils import epath

from simvlm_jax.data import text_corpus


class PydocText(tfds.core.GeneratorBasedBuilder):
    """Documents of a few hundred words from the Python language reference."""

    VERSION = tfds.core.Version("1.0.0")
    # This module and its folder (where TFDS looks for metadata and checksum files; none here),
    # given explicitly: TFDS fails to infer them when `simvlm_jax` is a namespace package.
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent
    RELEASE_NOTES = {
        "1.0.0": "Initial release: pydoc topics cut at paragraphs, split 95/5 by topic hash.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "The Python language reference as shipped with CPython in pydoc_data.topics "
                f"(generated with Python {platform.python_version()}), cut into documents of about "
                f"{text_corpus.TARGET_WORDS} words; a topic is in 'validation' when a stable hash "
                f"of its name falls in the first {text_corpus.VALIDATION_PERCENT}% of buckets."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "id": tfds.features.Text(),  # "<topic>/<part>"
                    "topic": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Everything comes from the standard library.
        return {split: self._generate_examples(split) for split in text_corpus.SPLITS}

    def _generate_examples(self, split: str):
        for doc in text_corpus.documents(split):
            yield doc.id, {"text": doc.text, "id": doc.id, "topic": doc.topic}
