"""`optimizers` for gin files: `t5x.optimizers` where T5X is installed, else `simvlm_jax.training.optimizers`."""

from simvlm_jax.t5x_compat import USING_T5X

if USING_T5X:
    from t5x.optimizers import *  # noqa: F401,F403
else:
    from simvlm_jax.training.optimizers import *  # noqa: F401,F403
