"""TFDS builders of the data embedded in the package; importing this registers them.

* `embedded_scenes`: procedural 64x64 shape scenes with canonical captions (`scenes.py`).
* `pydoc_text`: documents of the Python language reference (`text_corpus.py`).
* `easy_vqa`: the easy-VQA benchmark, read from the `easy-vqa` package (`easy_vqa.py`).
* `vqa_v2`, `snli_ve`, `multi30k`, `coco_karpathy`, `nocaps`, `nlvr2`: downstream datasets converted from their
  official release files under $SIMVLM_RAW_DATA_DIR (`data/raw_files.py`; nothing downloaded).
"""

from simvlm_jax.data.builders.coco_karpathy import CocoKarpathy
from simvlm_jax.data.builders.easy_vqa import EasyVqa
from simvlm_jax.data.builders.embedded_scenes import EmbeddedScenes
from simvlm_jax.data.builders.multi30k import Multi30k
from simvlm_jax.data.builders.nlvr2 import Nlvr2
from simvlm_jax.data.builders.nocaps import Nocaps
from simvlm_jax.data.builders.pydoc_text import PydocText
from simvlm_jax.data.builders.snli_ve import SnliVe
from simvlm_jax.data.builders.vqa_v2 import VqaV2

__all__ = ["CocoKarpathy", "EasyVqa", "EmbeddedScenes", "Multi30k", "Nlvr2", "Nocaps", "PydocText", "SnliVe", "VqaV2"]
