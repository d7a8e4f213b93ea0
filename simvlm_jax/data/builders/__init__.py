"""TFDS builders of the data embedded in the package; importing this registers them.

* `embedded_scenes`: procedural 64x64 shape scenes with canonical captions (`scenes.py`).
* `pydoc_text`: documents of the Python language reference (`text_corpus.py`).
* `easy_vqa`: the easy-VQA benchmark, read from the `easy-vqa` package (`easy_vqa.py`).
"""

from simvlm_jax.data.builders.easy_vqa import EasyVqa
from simvlm_jax.data.builders.embedded_scenes import EmbeddedScenes
from simvlm_jax.data.builders.pydoc_text import PydocText

__all__ = ["EasyVqa", "EmbeddedScenes", "PydocText"]
