"""cli.startup: the entry points re-exec for huge pages before TensorFlow/JAX load, on the CPU backend only,
and keep TensorFlow's start-up lines off the terminal unless asked (-v)."""

import subprocess
import sys

import pytest

from simvlm_jax.cli import startup

# Runs an entry point as `python -m` would, with the huge-page decision forced to "re-exec" and execve
# replaced by a report of which heavy libraries were already imported at that moment.
PROBE = """
import os, runpy, sys
from simvlm_jax.cli import host_memory
host_memory.transparent_huge_page_mode = lambda *a: "madvise"
host_memory.glibc_supports_tunables = lambda: True
def report(*args):
    print("EXEC", sorted(m for m in ("jax", "tensorflow", "seqio", "flax") if m in sys.modules), flush=True)
    os._exit(0)
os.execve = report
sys.argv = ["{module}", "--helpshort"]
runpy.run_module("{module}", run_name="__main__", alter_sys=True)
print("NO EXEC", flush=True)
"""


def _probe(module: str, **env: str) -> str:
    environ = {k: v for k, v in __import__("os").environ.items() if k not in ("GLIBC_TUNABLES", "JAX_PLATFORMS")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=300,
    )
    return out.stdout


@pytest.mark.parametrize("module", ["simvlm_jax.train", "simvlm_jax.caption"])
def test_reexec_happens_before_the_heavy_imports(module):
    assert "EXEC []" in _probe(module)


def test_no_reexec_when_jax_runs_on_an_accelerator():
    assert "EXEC" not in _probe("simvlm_jax.caption", JAX_PLATFORMS="cuda").replace("NO EXEC", "")


def test_accelerator_expected_follows_jax_platforms():
    assert startup.accelerator_expected({"JAX_PLATFORMS": "cuda"})
    assert startup.accelerator_expected({"JAX_PLATFORMS": "tpu,cpu"})
    assert not startup.accelerator_expected({"JAX_PLATFORMS": "cpu"})


def test_verbose_flags():
    assert not startup.verbose(["prog", "--gin_file=x.gin"])
    for flag in ("-v", "-v1", "--v=1", "--verbosity=1", "-v=2"):
        assert startup.verbose(["prog", flag]), flag


def test_tensorflow_start_up_lines_are_kept_off_stderr_unless_verbose():
    code = "from simvlm_jax.cli import startup; startup.load_tensorflow(quiet={quiet}); print('ok')"
    quiet = subprocess.run([sys.executable, "-c", code.format(quiet=True)], capture_output=True, text=True, timeout=300)
    loud = subprocess.run([sys.executable, "-c", code.format(quiet=False)], capture_output=True, text=True, timeout=300)
    assert quiet.stdout.strip() == loud.stdout.strip() == "ok"
    assert quiet.stderr == ""
    assert loud.stderr != ""  # what the quiet import hid (TensorFlow 2.21 logs from C++ at import)


def test_quiet_mode_drops_orbax_error_records_gin_path_probes_and_closed_loop_callbacks():
    """What a failed save and gin's include search would print, besides the command's one line."""
    import logging
    import types

    keep = startup._DropKnownNoise()

    def record(level, pathname, message):
        return logging.LogRecord("absl", level, pathname, 1, message, None, None)

    assert not keep.filter(record(logging.ERROR, "/site-packages/orbax/checkpoint/future.py", "raised: ENOSPC"))
    assert not keep.filter(record(logging.ERROR, "/site-packages/gin/resource_reader.py", "Path not found: gin/x"))
    assert keep.filter(record(logging.ERROR, "/work/simvlm_jax/training/loop.py", "a real error"))
    assert keep.filter(record(logging.INFO, "/site-packages/orbax/checkpoint/x.py", "Saved"))
    seen = []
    hook = startup._quiet_closed_event_loops(seen.append)
    closed = types.SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError("Event loop is closed"))
    other = types.SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError("something else"))
    hook(closed)
    hook(other)
    assert seen == [other]
