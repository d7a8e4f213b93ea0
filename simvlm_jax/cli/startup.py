"""The first thing every entry point does, before TensorFlow or JAX is imported.

    if __name__ == "__main__":
        from simvlm_jax.cli import startup
        startup.begin()          # may replace the process (once) with the huge-page tunable set

Imports only the standard library, so the cost of a re-exec is the interpreter's start, not a second
TensorFlow/JAX import. What it does:
- quiets the libraries' start-up chatter unless `-v`/`--verbosity` is on the command line:
  TensorFlow's C++ log lines (`TF_CPP_MIN_LOG_LEVEL=2`), XLA's (`TF_CPP_MIN_LOG_LEVEL` is read by
  both), and the CUDA probe of a CPU-only TensorFlow (`CUDA_VISIBLE_DEVICES` is not touched: JAX may
  still use a GPU);
- re-executes once with glibc's huge-page tunable where that helps: on the CPU backend only (see
  `host_memory`); on a GPU or TPU host the step temporaries live on the accelerator.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from simvlm_jax.cli import host_memory


def verbose(argv: list[str] | None = None) -> bool:
    """Whether the command line asks for more than the default output (-v / --verbosity)."""
    for arg in (sys.argv if argv is None else argv)[1:]:
        if arg in ("-v", "--v") or arg.startswith(("-v=", "--v=", "--verbosity", "-verbosity")):
            return True
        if arg.startswith("-v") and arg[2:].isdigit():
            return True
    return False


def accelerator_expected(environ: dict[str, str] | None = None) -> bool:
    """Whether JAX will likely run on a GPU or TPU here, judged without importing JAX.

    JAX_PLATFORMS decides when it is set; otherwise an installed GPU/TPU plugin together with its device
    nodes (/dev/nvidia*, /dev/accel*, /dev/vfio) means an accelerator."""
    environ = os.environ if environ is None else environ
    platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] not in ("cpu", "")
    has_plugin = any(
        importlib.util.find_spec(name) is not None
        for name in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu", "jax_rocm7_plugin")
    )
    has_device = any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/accel0", "/dev/vfio/0", "/dev/kfd"))
    return has_plugin and has_device


def begin() -> None:
    """Re-exec with host huge pages on the CPU backend, then load TensorFlow quietly (unless verbose)."""
    if not accelerator_expected():
        host_memory.reexec_with_huge_pages()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if importlib.util.find_spec("tensorflow") is not None:  # a bare JAX machine (the GPU benchmark) has none
        load_tensorflow(quiet=not verbose())


def load_tensorflow(quiet: bool = True) -> None:
    """Imports TensorFlow and hides its GPUs (it only feeds data; JAX owns the accelerators).

    TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA stubs, CPU features, cuInit) from C++
    before its log level is read, so they are kept off the terminal by pointing file descriptor 2 at
    a temporary file for the import; the file is replayed if the import fails."""
    import tempfile

    saved = os.dup(2) if quiet else None
    with tempfile.TemporaryFile(mode="w+b") as captured:
        if quiet:
            sys.stderr.flush()
            os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.set_visible_devices([], "GPU")
        except BaseException:
            if quiet:
                os.dup2(saved, 2)
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            if quiet:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)


# Library warnings that say nothing actionable about a SimVLM run (shown again with -v).
KNOWN_NOISE = (
    "Given sequence lengths are longer than necessary",  # seqio.Evaluator: we pad to the trained lengths on purpose
    "AutoGraph could not transform",  # tf.data: image decoding runs as plain Python on purpose (bad_records)
    # gin, looking for `include 'gin/models/tiny.gin'` under each search path in turn (the package's own gin
    # folder is searched last): a file that is found nowhere is an error gin raises, reported in one line.
    "Path not found: ",
)


class _DropKnownNoise:
    """A logging filter that drops records starting with one of KNOWN_NOISE, and Orbax's error records: a
    failed save reaches the command as CheckpointSaveError, reported in one line (cli/errors.py), while
    Orbax's writer threads log the same failure, with its traceback, once per thread (hundreds of lines)."""

    def filter(self, record) -> bool:
        message = record.getMessage() if hasattr(record, "getMessage") else str(record)
        if record.levelno >= 40 and f"{os.sep}orbax{os.sep}" in (record.pathname or ""):
            return False
        return not any(message.startswith(text) for text in KNOWN_NOISE)


def _quiet_closed_event_loops(previous_hook):
    """sys.unraisablehook minus "Event loop is closed": after a failed save, TensorStore's threads still call
    back into the asyncio loops Orbax has closed, and each call prints that traceback."""

    def hook(unraisable):
        if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed":
            return
        previous_hook(unraisable)

    return hook


# Python warnings of the same kind: Orbax, restoring parameters as plain arrays for inference (on purpose).
KNOWN_WARNINGS = ("Sharding info not provided when restoring",)


def drop_known_library_noise() -> None:
    """Installs the filter on absl's and TensorFlow's Python loggers and ignores KNOWN_WARNINGS (call
    after absl parsed the flags)."""
    import logging
    import warnings

    for name in ("", "absl", "tensorflow"):
        logging.getLogger(name).addFilter(_DropKnownNoise())
    sys.unraisablehook = _quiet_closed_event_loops(sys.unraisablehook)
    for text in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=text)
