"""`utils` for gin files: `t5x.utils` where T5X is installed, else `simvlm_jax.training.run_config`."""

from simvlm_jax.t5x_compat import USING_T5X

if USING_T5X:
    from t5x.utils import *  # noqa: F401,F403
else:
    from simvlm_jax.training.run_config import *  # noqa: F401,F403
