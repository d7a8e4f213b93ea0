"""Shared test set-up and fixtures: a small embedded dataset prepared once per session, CPU-only JAX, one
XLA compilation cache per session, gin as under the entry points, and a tiny model dir. Helper functions
live in tests/helpers.py.

The embedded data goes to a fresh folder per session (never the user's cache) with the scene splits
shrunk, so preparing it takes seconds; subprocess tests inherit SIMVLM_DATA_DIR and reuse it.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "SIMVLM_DATA_DIR" not in os.environ:
    os.environ["SIMVLM_DATA_DIR"] = tempfile.mkdtemp(prefix="simvlm_test_data_")
# One XLA compilation cache per session, shared with the subprocess tests: the tiny model's train step,
# compiled by the first test that needs it, is loaded from disk by every later process (seconds saved each).
# The cache is keyed by the program and the compile options, so it never changes what runs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="simvlm_test_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The entry points' glibc tunables (simvlm_jax/cli/host_memory.py), for the processes started after this
# line: pytest-xdist's workers and the subprocess tests keep XLA:CPU's temporaries in their heap instead
# of page-faulting them in at every call. Tunables already in GLIBC_TUNABLES are kept as they are.
from simvlm_jax.cli import host_memory  # noqa: E402  (the standard library only)

_tunables = host_memory.huge_page_env(
    dict(os.environ), host_memory.transparent_huge_page_mode(), host_memory.glibc_supports_tunables()
)
if _tunables is not None:
    os.environ["GLIBC_TUNABLES"] = _tunables["GLIBC_TUNABLES"]

import pytest  # noqa: E402

from tests.helpers import GIN_DIR, entry_point_gin  # noqa: E402

TEST_SPLIT_SIZES = {"train": 1024, "validation": 48, "heldout": 48}


@pytest.fixture(scope="session")
def embedded_data_dir() -> str:
    """The session's embedded data (small scene splits), prepared once: pytest-xdist's workers share the
    folder (they inherit SIMVLM_DATA_DIR), and a file lock lets the first one prepare it."""
    import portalocker

    from simvlm_jax.data import embedded

    data_dir = os.environ["SIMVLM_DATA_DIR"]
    with portalocker.Lock(os.path.join(data_dir, ".prepare.lock"), timeout=1800):
        embedded.prepare(split_sizes=TEST_SPLIT_SIZES)
    return data_dir


@pytest.fixture
def gin_entry_points():
    with entry_point_gin():
        yield


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, embedded_data_dir):
    """A model dir as `simvlm_jax.train` leaves it: config.gin, model_config.json and checkpoint_1/ (random
    parameters)."""
    import gin
    import jax
    import jax.numpy as jnp

    from simvlm_jax.model import model_config
    from simvlm_jax.training import checkpoints

    run_dir = str(tmp_path_factory.mktemp("caption") / "run")
    with entry_point_gin():
        gin.parse_config_files_and_bindings(
            [os.path.join(GIN_DIR, "tiny_cpu.gin")], [f"MODEL_DIR = '{run_dir}'"], finalize_config=False
        )
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        lengths = gin.query_parameter("%TASK_FEATURE_LENGTHS")
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "config.gin"), "w") as f:
            f.write(gin.config_str())
    model_config.write(run_dir, model, lengths)
    s, b = lengths["image"], 1
    shapes = {
        "encoder_image": (b, s, s, 3),
        "encoder_image_mask": (b,),
        "encoder_input_tokens": (b, lengths["inputs"]),
        "decoder_input_tokens": (b, lengths["targets"]),
    }
    params = model.get_initial_variables(jax.random.key(0), shapes)["params"]
    checkpoints.CheckpointManager(run_dir).save(1, checkpoints.to_t5x_tree(params, jnp.int32(1), {}))
    return run_dir
