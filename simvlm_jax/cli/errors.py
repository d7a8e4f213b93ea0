"""Configuration mistakes as one or two lines on stderr (exit status 2) instead of a traceback.

A mistake is a `ConfigError` from the checks, or any ValueError/TypeError/ImportError/OSError that gin
raised while it built the entry point's arguments (a configurable other than the entry function itself
failed). Errors from inside a running job keep their traceback. `-v 1` (or higher) shows the traceback
of a configuration mistake too.
"""

from __future__ import annotations

import re
import sys
from typing import Callable, Optional

from simvlm_jax.training.config_checks import ConfigError

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
