"""Where the package prepares its own TFDS datasets, and preparing one of them.

    $SIMVLM_DATA_DIR (default ~/.cache/simvlm_jax)/tfds/<builder>/<version>/...

Every dataset the package converts or generates (the embedded scenes and prose, easy-VQA, and the
downstream datasets converted from their release files, `tasks/`) goes there, through `prepare_builder`.
"""

from __future__ import annotations

import glob
import os
import shutil

import tensorflow_datasets as tfds

DATA_DIR_ENV = "SIMVLM_DATA_DIR"


def default_data_dir() -> str:
    """$SIMVLM_DATA_DIR if set, else ~/.cache/simvlm_jax."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "simvlm_jax")
    return os.environ.get(DATA_DIR_ENV) or default


def resolve(data_dir: str | None) -> str:
    return os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))


def tfds_data_dir(data_dir: str | None = None) -> str:
    """Where the TFDS builders write: `<data_dir>/tfds` (pass it as `tfds.load(data_dir=...)`)."""
    return os.path.join(resolve(data_dir), "tfds")


def prepare_builder(builder_cls, data_dir: str | None = None, **builder_kwargs) -> str:
    """Generates one of the package's TFDS datasets unless present; returns its folder. Several processes
    starting at once (the hosts of one run, parallel runs) take turns: the first generates, the others
    wait for it and then find the dataset prepared. What an interrupted generation left is removed first."""
    import portalocker

    root = tfds_data_dir(data_dir)
    os.makedirs(root, exist_ok=True)
    with portalocker.Lock(os.path.join(root, f".{builder_cls.name}.prepare.lock"), timeout=3600):
        # TFDS generates into <name>/incomplete.*; one left there was cut short (a kill): the lock says
        # nobody is generating now, so it goes.
        for leftover in glob.glob(os.path.join(root, builder_cls.name, "*", "incomplete.*")) + glob.glob(
            os.path.join(root, builder_cls.name, "incomplete.*")
        ):
            shutil.rmtree(leftover, ignore_errors=True)
        builder = builder_cls(data_dir=root, **builder_kwargs)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return os.fspath(builder.data_dir)
