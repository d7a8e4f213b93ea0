"""`partitioning` for gin files: `t5x.partitioning` where T5X is installed, else `simvlm_jax.training.partitioning`."""

from simvlm_jax.t5x_compat import USING_T5X

if USING_T5X:
    from t5x.partitioning import *  # noqa: F401,F403
else:
    from simvlm_jax.training.partitioning import *  # noqa: F401,F403
