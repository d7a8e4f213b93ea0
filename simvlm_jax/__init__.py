"""simvlm-jax: SimVLM (Wang et al., ICLR 2022) pretraining, fine-tuning and evaluation in JAX/Flax.

Packages, in the direction of the imports (docs/architecture.md; tests/test_architecture.py checks it):
`network` (Flax modules), `data` (SeqIO preprocessors, feature converter, embedded datasets) and
`metrics` (SeqIO scorers) -> `model` (loss, scoring, decoding) and `tasks` (SeqIO registrations, one module
per dataset) -> `training` (train loop, steps, checkpoints, partitioning) -> `cli` (flags, gin, start-up) ->
the entry points `python -m simvlm_jax.train | eval | infer | caption | inspect_checkpoint | plan`.

The repository's top level holds `gin/`, `tasks/` and `launch/` beside this folder (the design card's
layout); an install maps them into the package as `simvlm_jax/gin`, `simvlm_jax.tasks` and
`simvlm_jax.launch` (setup.py). In a checkout, the lines below do the same mapping, so that `simvlm_jax.tasks`
imports from the repository root whether the package was installed editable, from a wheel, or not at all.
"""

import os as _os

__version__ = "0.1.0"

_HERE = _os.path.dirname(_os.path.abspath(__file__))
_CHECKOUT = _os.path.dirname(_HERE)
_INSTALLED = _os.path.isdir(_os.path.join(_HERE, "tasks"))  # a wheel: the folders were mapped in
if not _INSTALLED and all(
    _os.path.isfile(_os.path.join(_CHECKOUT, *name)) for name in (("setup.py",), ("tasks", "__init__.py"))
):
    __path__.append(_CHECKOUT)  # a checkout: simvlm_jax.tasks -> tasks/, simvlm_jax.launch -> launch/

# The folder that holds the gin files' `gin/` folder: `include 'gin/models/tiny.gin'` and
# `--gin_file=gin/tiny_cpu.gin` resolve under it (our entry points search it; for T5X's, pass it as
# `--gin_search_paths`, or run from the repository root, where `gin/` is found as is).
GIN_ROOT = _HERE if _INSTALLED else _CHECKOUT
