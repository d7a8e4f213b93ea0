"""Checksums of checkpoint files, verified before a restore; corrupt checkpoints moved aside, never deleted.

Every checkpoint this trainer writes holds `checksums.json`: the size and SHA-256 of each of its files
(the Orbax state, its `_METADATA` and manifests, the data-iterator files), written into
`checkpoint_<step>.tmp` after everything else and before the rename. `verify` reads them back and names the
first problem: a missing, truncated, extended or changed file (one flipped byte is enough), or an empty
folder. Orbax and TensorStore do not checksum the data themselves, so without this a flipped byte restores
silently.

A checkpoint with no `checksums.json` (written by T5X or by an older simvlm-jax) is checked only for the
Orbax files a restore needs; a restore failure of such a checkpoint is reported by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Optional

CHECKSUMS_FILE = "checksums.json"
CORRUPT_SUFFIX = ".corrupt"
_CHUNK = 8 << 20


class CorruptCheckpointError(ValueError):
    """A checkpoint failed verification (or its restore failed); the message names it and the problem."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: str) -> list[str]:
    """Paths of every file under `directory`, relative to it, sorted; the checksum file excluded."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), directory)
            if relative != CHECKSUMS_FILE:
                found.append(relative)
    return sorted(found)


def write_checksums(directory: str) -> int:
    """Writes `directory/checksums.json` ({relative path: {"bytes", "sha256"}}); returns the bytes covered."""
    entries = {
        relative: {
            "bytes": os.path.getsize(os.path.join(directory, relative)),
            "sha256": _sha256(os.path.join(directory, relative)),
        }
        for relative in _files(directory)
    }
    tmp = os.path.join(directory, CHECKSUMS_FILE + ".partial")
    with open(tmp, "w") as f:
        json.dump({"format": 1, "files": entries}, f, indent=0, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, CHECKSUMS_FILE))
    return sum(entry["bytes"] for entry in entries.values())


def problem(directory: str) -> Optional[str]:
    """What is wrong with checkpoint `directory`, or None when every recorded file is present and equal."""
    if not os.path.isdir(directory):
        return "it does not exist"
    listing = os.path.join(directory, CHECKSUMS_FILE)
    if not os.path.exists(listing):
        return _unverified_problem(directory)
    try:
        with open(listing) as f:
            entries = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {CHECKSUMS_FILE} is unreadable ({error})"
    for relative, expected in sorted(entries.items()):
        path = os.path.join(directory, relative)
        if not os.path.isfile(path):
            return f"{relative} is missing"
        size = os.path.getsize(path)
        if size != expected["bytes"]:
            return f"{relative} has {size} bytes, {expected['bytes']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{relative} does not match its checksum (the data changed after it was written)"
    return None


def _unverified_problem(directory: str) -> Optional[str]:
    """For a checkpoint without checksums: only whether the files a restore reads exist."""
    state = os.path.join(directory, "state")
    if not os.path.isdir(state) or not os.listdir(state):
        return "it has no state/ folder (an empty or partial checkpoint)"
    if not os.path.exists(os.path.join(state, "_METADATA")):
        return "state/_METADATA is missing"
    return None


def verify(directory: str) -> None:
    """Raises CorruptCheckpointError naming `directory` and its problem, if it has one."""
    found = problem(directory)
    if found:
        raise CorruptCheckpointError(f"{os.path.basename(os.path.normpath(directory))} is corrupt: {found}.")


def move_aside(directory: str) -> str:
    """Renames a corrupt checkpoint to `<name>.corrupt` (or `<name>.corrupt-<time>` if taken), out of the
    names the trainer restores, resumes or deletes; returns the new path. Nothing is deleted."""
    target = directory.rstrip(os.sep) + CORRUPT_SUFFIX
    if os.path.exists(target):
        target = f"{target}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(directory, target)
    return target
