"""One run per MODEL_DIR: an exclusive lock on `MODEL_DIR/.lock`, held by process 0 while it trains.

The lock is `fcntl.flock` on an open file, so the kernel releases it when the process ends however it ends
(exit, exception, SIGKILL): a lock is never left behind by a dead run on this machine. The file keeps the
holder's host, pid, start time and command line, shown to a second run that is refused; when a new run
finds the file left by a process that is gone, it says so and takes the lock.

flock works on local and most network file systems (NFS v4 with locking); where it is not supported the
run continues with a warning, unlocked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from typing import Optional

from absl import logging

from simvlm_jax.training.config_checks import ConfigError

LOCK_FILE = ".lock"


class ModelDirLock:
    """`with ModelDirLock(model_dir):` holds the lock for the block; raises ConfigError if a live run holds it."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, LOCK_FILE)
        self._file = None

    def __enter__(self) -> "ModelDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise ConfigError(
                f"MODEL_DIR {os.path.dirname(self.path)!r} is in use by another run ({_describe(holder)}). "
                "Wait for it to finish or stop it, or choose another --gin.MODEL_DIR."
            ) from None
        except OSError as error:  # no flock on this file system
            logging.warning("Cannot lock %s (%s); running without a MODEL_DIR lock.", self.path, error)
            handle.close()
            return
        previous = _read_holder(handle)
        if previous and not _alive(previous):
            print(f"Note: {self.path} was left by a run that is gone ({_describe(previous)}); taking it over.")
        handle.seek(0)
        handle.truncate()
        json.dump(_this_holder(), handle)
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.truncate()  # an empty file: released cleanly
            fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._file.close()
            self._file = None


def _this_holder() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:500],
    }


def _read_holder(handle) -> Optional[dict]:
    try:
        handle.seek(0)
        text = handle.read()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the holder still runs (only knowable on this host; another host's holder counts as alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def _describe(holder: Optional[dict]) -> str:
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {holder.get('command')}"
