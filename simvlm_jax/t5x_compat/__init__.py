"""One gin file for two trainers: the configurables gin files import, from T5X when it is installed.

Gin files write `from simvlm_jax.t5x_compat import utils` (and partitioning, trainer, gin_utils,
optimizers). Where `t5x` imports (e.g. a TPU VM with T5X installed from source) each submodule is
T5X's module of the same name, and `python -m t5x.train` runs the file; elsewhere they are ours and
`python -m simvlm_jax.train` does. Set SIMVLM_IGNORE_T5X=1 to use ours even where T5X is installed.
"""

import importlib.util
import os

USING_T5X = not os.environ.get("SIMVLM_IGNORE_T5X") and importlib.util.find_spec("t5x") is not None
