"""`trainer` for gin files: `t5x.trainer` where T5X is installed, else `simvlm_jax.training.trainer`."""

from simvlm_jax.t5x_compat import USING_T5X

if USING_T5X:
    from t5x.trainer import *  # noqa: F401,F403
else:
    from simvlm_jax.training.trainer import *  # noqa: F401,F403
