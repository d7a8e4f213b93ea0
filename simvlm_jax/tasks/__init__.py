"""SeqIO task and mixture registrations (installed as `simvlm_jax.tasks`).

Importing this package registers:
- the embedded default data (`embedded.py`): prepared locally on first use, nothing downloaded;
- the real pretraining data (`pretraining.py`): LAION-400M or the user's own TFRecord files of
  (image bytes, alt-text), and C4 (`c4/en`), mixed 8:1 as in the paper's 4,096 + 512 per step.
- downstream tasks: easy-VQA (`downstream.py`); VQA v2 open-ended and closed-set (`vqa_v2.py`); SNLI-VE,
  its text-only variant for cross-modality transfer, and Multi30k En-De (`snli_ve_multi30k.py`), read
  from the official release files under $SIMVLM_RAW_DATA_DIR when first used; COCO captions (Karpathy
  split) fine-tuning and zero-shot, NoCaps (`captioning_datasets.py`); NLVR2, two images per example
  (`nlvr2.py`).

A user's own tasks go in a module of their own, built with the functions of `common.py`, and are
named to the trainer with `MIXTURE_OR_TASK_MODULE`.
"""

from simvlm_jax.tasks import (  # noqa: F401  (registration side effects)
    captioning_datasets,
    downstream,
    embedded,
    nlvr2,
    pretraining,
    snli_ve_multi30k,
    vqa_v2,
)
