"""`gin_utils` for gin files: `t5x.gin_utils` where T5X is installed, else `simvlm_jax.cli.gin_flags`."""

from simvlm_jax.t5x_compat import USING_T5X

if USING_T5X:
    from t5x.gin_utils import *  # noqa: F401,F403
else:
    from simvlm_jax.cli.gin_flags import *  # noqa: F401,F403
