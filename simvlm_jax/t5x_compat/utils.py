"""`utils` for gin files: `t5x.utils` where T5X is installed, else `simvlm_jax.training.run_config`.

Under T5X, `DatasetConfig` is T5X's own with our start-up checks added (`checked_dataset_config`): an unknown
task, a task module that does not import, or data that is not prepared stops `t5x.train` (and t5x.eval /
t5x.infer) when gin builds the dataset config, with the one-line message our trainer gives, instead of a
traceback from deep inside SeqIO or TFDS once training has started.
"""

import dataclasses

from simvlm_jax.t5x_compat import USING_T5X


def checked_dataset_config(base: type) -> type:
    """A subclass of the dataclass `base` (a DatasetConfig) that checks, when built, that its task module
    imports, its task or mixture is registered and every task can read its split (`check_data_prepared`)."""
    from simvlm_jax.data import loader
    from simvlm_jax.training import config_checks

    def __post_init__(self):
        getattr(super(checked, self), "__post_init__", lambda: None)()
        try:
            loader.import_task_module(self.module)
        except ModuleNotFoundError as error:
            raise config_checks.ConfigError(str(error)) from None
        if isinstance(self.mixture_or_task_name, str):
            config_checks.check_data_prepared(self.mixture_or_task_name, self.split)

    checked = dataclasses.dataclass(type(base.__name__, (base,), {"__post_init__": __post_init__}))
    checked.__module__ = __name__
    checked.__qualname__ = base.__qualname__
    return checked


if USING_T5X:
    from t5x.utils import *  # noqa: F401,F403
    from t5x.utils import DatasetConfig as _T5xDatasetConfig

    DatasetConfig = checked_dataset_config(_T5xDatasetConfig)
else:
    from simvlm_jax.training.run_config import *  # noqa: F401,F403
