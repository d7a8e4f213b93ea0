"""Shared test set-up: a small embedded dataset prepared once per session, and CPU-only JAX.

The embedded data goes to a fresh folder per session (never the user's cache) with the scene splits
shrunk, so preparing it takes seconds; subprocess tests inherit SIMVLM_DATA_DIR and reuse it.
"""

import os
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["SIMVLM_IGNORE_T5X"] = "1"
if "SIMVLM_DATA_DIR" not in os.environ:
    os.environ["SIMVLM_DATA_DIR"] = tempfile.mkdtemp(prefix="simvlm_test_data_")

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_SPLIT_SIZES = {"NUM_TRAIN": 1024, "NUM_VALIDATION": 128, "NUM_HELDOUT": 128}


@pytest.fixture(scope="session")
def embedded_data_dir() -> str:
    """The session's embedded data (small scene splits), prepared once."""
    from simvlm_jax.data import embedded, scenes

    for name, value in TEST_SPLIT_SIZES.items():
        setattr(scenes, name, value)
    embedded.prepare()
    return os.environ["SIMVLM_DATA_DIR"]


def run_module(module: str, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m module args...` from the repository root; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
