"""SeqIO task and mixture registrations (installed as `simvlm_jax.tasks`): one module per dataset.

Importing this package registers:
- the embedded default data (`embedded.py`): prepared locally on first use, nothing downloaded;
- the real pretraining data (`pretraining.py`): LAION-400M or the user's own TFRecord files of
  (image bytes, alt-text), and C4 (`c4/en`), mixed 8:1 as in the paper's 4,096 + 512 per step;
- the downstream datasets, each module holding its raw-file reader (a TFDS builder), its SeqIO task(s) and
  its metric: `easy_vqa.py`, `vqa_v2.py` (open-ended and closed-set), `nlvr2.py` (two images per example),
  `snli_ve.py` (and its text-only variant for cross-modality transfer), `multi30k.py` (En-De),
  `coco_captions.py` (Karpathy split, fine-tuning and zero-shot), `nocaps.py`. The release files are read
  from $SIMVLM_RAW_DATA_DIR when a task is first used.

A user's own tasks go in a module of their own (a `tasks.py` of theirs, docs/your_dataset.md), built with
the functions of `common.py`, and are named to either trainer with `MIXTURE_OR_TASK_MODULE`.
"""

from simvlm_jax.tasks import (  # noqa: F401  (registration side effects)
    coco_captions,
    easy_vqa,
    embedded,
    multi30k,
    nlvr2,
    nocaps,
    pretraining,
    snli_ve,
    vqa_v2,
)
