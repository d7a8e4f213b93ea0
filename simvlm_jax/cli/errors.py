"""Configuration mistakes as one or two lines on stderr (exit status 2) instead of a traceback, and a
running job's known failures as one paragraph (exit status 1), printed last.

A mistake is a `ConfigError` from the checks, or any ValueError/TypeError/ImportError/OSError that gin
raised while it built the entry point's arguments (a configurable other than the entry function itself
failed). A known failure (`RUN_FAILURES`: a failed save, a bad record under policy 'fail', a source with no
good record, a non-finite step under policy 'stop', a diverged run, a stuck input pipeline) is printed
without its traceback; any other error keeps it. Either way the process then ends at once (`exit_now`):
after a failure, Orbax's writer threads or tf.data's Python workers may never finish, and a normal
interpreter exit would wait on them forever. `-v 1` (or higher) shows the tracebacks too.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Callable, NoReturn, Optional

from simvlm_jax.data.bad_records import BadRecordError
from simvlm_jax.training.checkpoint_integrity import CorruptCheckpointError
from simvlm_jax.training.checkpoints import CheckpointSaveError
from simvlm_jax.training.config_checks import ConfigError
from simvlm_jax.training.numerics import DivergenceError, NonFiniteError
from simvlm_jax.training.prefetch import InputStalled

RUN_FAILURES = (
    CheckpointSaveError,
    CorruptCheckpointError,
    BadRecordError,
    NonFiniteError,
    DivergenceError,
    InputStalled,
)

_GIN_CALL = re.compile(r"In call to configurable '([^']+)' \(")
_GIN_LOCATION = re.compile(r"^In (file \"[^\"]*\", line \d+|bindings string line \d+)$")


def configuration_message(error: BaseException, entry: str) -> Optional[str]:
    """The short message when `error` is a configuration mistake of entry function `entry`, else None:
    the problem with where gin found it on the first line, the suggestion (if any) on the second."""
    text = str(error)
    calls = _GIN_CALL.findall(text)
    is_config = isinstance(error, ConfigError) or (
        isinstance(error, (ValueError, TypeError, ImportError, OSError)) and calls and calls[0] != entry
    )
    if not is_config:
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    problem, where, rest = [], "", []
    i = 0
    while i < len(lines):
        line = lines[i]
        location = _GIN_LOCATION.match(line)
        if location:
            code = lines[i + 1] if i + 1 < len(lines) else ""
            if not where:
                where = f" ({location.group(1)}: {code})" if code else f" ({location.group(1)})"
            i += 2
            continue
        if _GIN_CALL.search(line) or line == "^":
            i += 1
            continue
        (rest if problem else problem).append(line)
        i += 1
    if calls and calls[0] != entry and not isinstance(error, ConfigError):
        where += f" [while building {calls[0]}]"
    first = (problem[0] if problem else type(error).__name__) + where
    return "\n".join([first] + rest[-1:])


def run_reporting_configuration_errors(fn: Callable[[], object], entry: str, verbosity: int) -> object:
    """Calls `fn`; a configuration mistake is printed briefly and exits 2 (re-raised when verbose)."""
    try:
        return fn()
    except (ConfigError, ValueError, TypeError, ImportError, OSError) as error:
        message = configuration_message(error, entry)
        if message is None or verbosity >= 1:
            raise
        sys.stdout.flush()
        print(f"Configuration error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def without_gin_context(error: BaseException) -> str:
    """The error's message without the lines gin adds ("In call to configurable ...")."""
    lines = [line for line in str(error).splitlines() if line.strip() and not _GIN_CALL.search(line)]
    return " ".join(line.strip() for line in lines)


def exit_now(message: str, status: int) -> NoReturn:
    """Prints `message` (if any) to stderr as the last output and ends the process at once with `status`."""
    sys.stdout.flush()
    if message:
        print(message, file=sys.stderr)
    sys.stderr.flush()
    os._exit(status)


def run_reporting_failures(fn: Callable[[], object], entry: str, verbosity: int) -> object:
    """`run_reporting_configuration_errors(fn, ...)`, and a job that fails ends the process at once: a known
    failure (RUN_FAILURES) as `Error (<kind>): <message>` (exit 1), an interrupt with exit 130, anything else with its
    traceback (exit 1)."""
    try:
        return run_reporting_configuration_errors(fn, entry, verbosity)
    except SystemExit:
        raise
    except RUN_FAILURES as error:
        if verbosity >= 1:
            traceback.print_exc()
        kind = next(failure.__name__ for failure in RUN_FAILURES if isinstance(error, failure))
        exit_now(f"Error ({kind}): {without_gin_context(error)}", 1)
    except KeyboardInterrupt:
        exit_now("Interrupted.", 130)
    except BaseException:  # noqa: BLE001 - printed in full, then the same prompt exit
        traceback.print_exc()
        exit_now("", 1)
