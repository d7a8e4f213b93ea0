"""One gin file for two trainers: the configurables gin files import, T5X's under `t5x.train`, ours otherwise.

Gin files write `from simvlm_jax.t5x_compat import utils` (and partitioning, trainer, gin_utils,
optimizers). When the running program is one of T5X's (`python -m t5x.train`, `t5x.eval`, `t5x.infer`, ...:
its `__main__` is a `t5x.*` module) and `t5x` imports, each submodule is T5X's module of the same name;
otherwise, including `python -m simvlm_jax.train` on a machine where T5X is installed, they are ours.
SIMVLM_USE_T5X=1 chooses T5X's for another program (a launcher of your own that calls T5X's train);
SIMVLM_IGNORE_T5X=1 always chooses ours.
"""

import importlib.util
import os
import sys


def _running_t5x() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (getattr(spec, "name", None) or "").startswith("t5x.")


USING_T5X = (
    not os.environ.get("SIMVLM_IGNORE_T5X")
    and (bool(os.environ.get("SIMVLM_USE_T5X")) or _running_t5x())
    and importlib.util.find_spec("t5x") is not None
)
