"""TFDS builders of the data embedded in the package; importing this registers them.

* `embedded_scenes`: procedural 64x64 shape scenes with canonical captions (`scenes.py`).
* `pydoc_text`: documents of the Python language reference (`text_corpus.py`).

The downstream datasets' builders live with their tasks, one module per dataset (`tasks/`).
"""

from simvlm_jax.data.builders.embedded_scenes import EmbeddedScenes
from simvlm_jax.data.builders.pydoc_text import PydocText

__all__ = ["EmbeddedScenes", "PydocText"]
