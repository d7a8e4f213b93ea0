"""Orbax checkpoints in T5X's model-directory layout.

    <model_dir>/checkpoint_<step>/state                      Orbax PyTree {'target': params,
                                                              'state': {'step', 'param_states'}}
                                                              (param_states in T5X's form: see
                                                              `optimizer_state_dict`)
    <model_dir>/checkpoint_<step>/dataset/train_ds-<i>-of-<n>  tf.data iterator (when save_dataset)
    <model_dir>/checkpoint_<step>/checksums.json              size and SHA-256 of every file above

A checkpoint is written into `checkpoint_<step>.tmp` and renamed when complete, so a directory named
`checkpoint_<step>` is always whole: a crash (or SIGKILL) during a save leaves the previous checkpoint
the latest, and the next run deletes the `.tmp` remains (`remove_incomplete`). A save that fails (disk
full, permissions) deletes only its own `.tmp` folder and raises `CheckpointSaveError`; older
checkpoints are removed (keep-N) only after the new one has been renamed into place, and are first renamed
to `checkpoint_<step>.deleting`, so a kill during a deletion never leaves a partial `checkpoint_<step>`.
With several processes, each writes its own shards (Orbax) and its own data iterator into the `.tmp`
folder; all of them meet at a barrier before process 0 writes the checksums and renames, and again after,
so the folder is never renamed under a process still writing into it.
`newest_usable` verifies checksums (`checkpoint_integrity`) and moves a corrupt checkpoint aside.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import logging
from flax import serialization, traverse_util

from simvlm_jax.training import checkpoint_integrity, multihost

_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)$")
_TMP_SUFFIX = ".tmp"
_DELETING_SUFFIX = ".deleting"
_TMP_RE = re.compile(r"^checkpoint_(\d+)\.(tmp|deleting)$")


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the previous checkpoints are untouched."""


def remove_incomplete(model_dir: str) -> list[str]:
    """Deletes `checkpoint_<step>.tmp` folders (saves cut short by a crash or a kill) and
    `checkpoint_<step>.deleting` ones (deletions cut short); returns them.

    Runs on process 0 only; the other processes never write the model dir's top level.
    """
    if jax.process_index() != 0 or not os.path.isdir(model_dir):
        return []
    removed = []
    for name in sorted(os.listdir(model_dir)):
        if _TMP_RE.match(name):
            shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
            removed.append(name)
    if removed:
        logging.warning("Removed incomplete checkpoint(s) left by an interrupted save: %s", ", ".join(removed))
    return removed


def checkpoint_dir(model_dir: str, step: int) -> str:
    return os.path.join(model_dir, f"checkpoint_{step}")


def all_steps(model_dir: str) -> list[int]:
    """Steps of the complete checkpoints in `model_dir`, ascending."""
    if not os.path.isdir(model_dir):
        return []
    steps = [int(m.group(1)) for m in map(_CHECKPOINT_RE.match, os.listdir(model_dir)) if m]
    return sorted(steps)


def latest_step(model_dir: str) -> Optional[int]:
    steps = all_steps(model_dir)
    return steps[-1] if steps else None


def newest_verified(model_dir: str) -> tuple[Optional[int], list[tuple[str, str]]]:
    """(the newest step whose checkpoint verifies or None, [(path, problem)] of the newer ones that do not).
    Reads only; `move_aside` the corrupt ones before training writes anything."""
    corrupt = []
    for step in reversed(all_steps(model_dir)):
        path = checkpoint_dir(model_dir, step)
        found = checkpoint_integrity.problem(path)
        if found is None:
            return step, corrupt
        corrupt.append((path, found))
    return None, corrupt


def is_checkpoint_dir_name(path: str) -> bool:
    """Whether `path` names a checkpoint_<step> folder (by its name)."""
    return bool(_CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path))))


def resolve_checkpoint_path(path: str) -> str:
    """A `checkpoint_<step>` directory as given, or the latest one inside a model directory."""
    if is_checkpoint_dir_name(path):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
        return path
    step = latest_step(path)
    if step is None:
        raise FileNotFoundError(f"No checkpoint_<step> directory found in {path!r}.")
    return checkpoint_dir(path, step)


def _dataset_file(directory: str) -> str:
    return os.path.join(directory, "dataset", f"train_ds-{jax.process_index():03d}-of-{jax.process_count():03d}")


def _iterator_process_counts(directory: str) -> list[int]:
    """The process counts whose data iterators checkpoint `directory` holds (train_ds-III-of-NNN files)."""
    names = tf.io.gfile.glob(os.path.join(directory, "dataset", "train_ds-*-of-*.index"))
    return sorted({int(name.rsplit("-of-", 1)[1].split(".")[0]) for name in names})


def optimizer_state_dict(opt_state: Any) -> dict:
    """An optax state in T5X's on-disk form (what `t5x.optimizers.OptaxWrapper.state_dict` writes): flax's
    state dict (tuples become {'0': ..., '1': ...}, named tuples {field: ...}) with the empty states
    (optax.EmptyState, ...) removed. Either trainer then restores the other's optimizer moments."""
    state = serialization.to_state_dict(opt_state)
    return traverse_util.unflatten_dict(traverse_util.flatten_dict(state, sep="/"), sep="/")


def optimizer_state_from_dict(reference: Any, state_dict: Mapping[str, Any]) -> Any:
    """The inverse of `optimizer_state_dict` given a state of the same optimizer (`reference`, e.g. abstract):
    the empty states are put back, then every leaf is taken from `state_dict`."""
    expected = traverse_util.flatten_dict(serialization.to_state_dict(reference), keep_empty_nodes=True, sep="/")
    found = dict(traverse_util.flatten_dict(dict(state_dict), sep="/"))
    for path, value in expected.items():
        if path not in found:
            if value is not traverse_util.empty_node:
                raise ValueError(
                    f"The checkpoint's optimizer state has no {path!r}: was it written by another optimizer?"
                )
            found[path] = value
    return serialization.from_state_dict(reference, traverse_util.unflatten_dict(found, sep="/"))


def _read_iterator(dataset_iterator: tf.data.Iterator, dataset_file: str) -> None:
    """Restores the iterator saved as `ds` (T5X's name, ours since T5X interoperability) or, in checkpoints of
    earlier simvlm-jax versions, as `iterator`."""
    try:
        tf.train.Checkpoint(ds=dataset_iterator).read(dataset_file).assert_consumed()
    except AssertionError:
        tf.train.Checkpoint(iterator=dataset_iterator).read(dataset_file).assert_consumed()


def to_t5x_tree(params: Any, step: Any, opt_state: Any) -> dict:
    """T5X's train-state tree: {'target': params, 'state': {'step': step, 'param_states': optimizer state}}."""
    return {"target": params, "state": {"step": step, "param_states": optimizer_state_dict(opt_state)}}


# Fault injection for the kill/resume tests (unset, nothing happens): SIMVLM_FAULT_KILL_AT=<point>@<step>[,...]
# makes the process SIGKILL itself at that point of the save of checkpoint_<step>, reached deterministically
# rather than by a timed kill; SIMVLM_FAULT_FAIL_SAVE_AT=<step> makes that save fail with ENOSPC after Orbax
# has started writing. The points, in order: state_written (Orbax done), dataset_written (iterator written),
# checksums_written (the .tmp complete, not renamed), renamed (before the old checkpoints are removed),
# deleting_old (an old checkpoint renamed to .deleting, not yet removed).
FAULT_POINTS = ("state_written", "dataset_written", "checksums_written", "renamed", "deleting_old")


def _maybe_die_here(point: str, step: int) -> None:
    if f"{point}@{step}" in os.environ.get("SIMVLM_FAULT_KILL_AT", "").split(","):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _maybe_fail_here(step: int) -> None:
    if os.environ.get("SIMVLM_FAULT_FAIL_SAVE_AT") == str(step):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device (SIMVLM_FAULT_FAIL_SAVE_AT)")


class CheckpointManager:
    """Saves and restores train states (and optionally the data iterator) under `model_dir`."""

    def __init__(self, model_dir: str, keep: Optional[int] = None):
        self.model_dir = model_dir
        self.keep = keep
        self._checkpointer = ocp.StandardCheckpointer()

    def save(self, step: int, tree: dict, dataset_iterator: Optional[tf.data.Iterator] = None) -> str:
        """Writes `tree` (see `to_t5x_tree`) as checkpoint_<step>; returns its path."""
        final = checkpoint_dir(self.model_dir, step)
        if os.path.exists(final):
            logging.info("Checkpoint %s exists already; not saving again.", final)
            return final
        tmp = final + _TMP_SUFFIX
        if jax.process_index() == 0 and os.path.exists(tmp):
            shutil.rmtree(tmp)  # the remains of an interrupted save
        try:
            self._checkpointer.save(os.path.join(os.path.abspath(tmp), "state"), tree)
            _maybe_fail_here(step)
            self._checkpointer.wait_until_finished()
            _maybe_die_here("state_written", step)
            if dataset_iterator is not None:
                tf.train.Checkpoint(ds=dataset_iterator).write(_dataset_file(tmp))  # T5X's name, `ds`
            _maybe_die_here("dataset_written", step)
            multihost.barrier(f"checkpoint_{step}_written")  # every process's data iterator is in tmp
            if jax.process_index() == 0:
                checkpoint_integrity.write_checksums(tmp)
                _maybe_die_here("checksums_written", step)
                os.replace(tmp, final)
                _maybe_die_here("renamed", step)
            multihost.barrier(f"checkpoint_{step}_renamed")  # nobody goes on before checkpoint_<step> exists
        except Exception as error:  # Orbax and tf.io wrap OSErrors in their own types
            try:  # Orbax may still be writing into the .tmp folder in the background: let it end first
                self._checkpointer.wait_until_finished()
            except Exception:  # noqa: BLE001 - the same failure again; `error` is the one reported
                pass
            if jax.process_index() == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            previous = latest_step(self.model_dir)
            kept = f"checkpoint_{previous} is intact" if previous is not None else "no earlier checkpoint exists"
            raise CheckpointSaveError(
                f"Saving checkpoint_{step} in {self.model_dir} failed ({error}); {kept}. Free disk space or "
                "fix the permissions of MODEL_DIR, then rerun the same command to resume."
            ) from error
        if jax.process_index() == 0:
            self._remove_old(step)
        logging.info("Saved checkpoint %s", final)
        return final

    def restore(self, path: str, abstract_tree: dict, dataset_iterator: Optional[tf.data.Iterator] = None) -> dict:
        """Restores checkpoint `path` into the shapes, dtypes and shardings of `abstract_tree`."""
        tree = self._checkpointer.restore(os.path.join(os.path.abspath(path), "state"), abstract_tree)
        if dataset_iterator is not None:
            self.restore_dataset(path, dataset_iterator)
        logging.info("Restored checkpoint %s", path)
        return tree

    def restore_dataset(self, path: str, dataset_iterator: tf.data.Iterator) -> None:
        """Restores the data iterator saved with checkpoint `path`."""
        dataset_file = _dataset_file(path)
        saved_by = _iterator_process_counts(path)
        if not tf.io.gfile.exists(dataset_file + ".index") and saved_by:
            print(
                f"{path}'s data iterator was saved by {' or '.join(map(str, saved_by))} processes and this run "
                f"has {jax.process_count()}: continuing with a fresh data iterator (each process reads its new "
                "shard from the start; with shuffling the order differs from the interrupted run's).",
                flush=True,
            )
            return
        if not tf.io.gfile.exists(dataset_file + ".index"):
            raise FileNotFoundError(
                f"{path} has no saved data iterator ({dataset_file}); it was saved with "
                "save_dataset=False. Set utils.RestoreCheckpointConfig.restore_dataset = False to "
                "resume with a fresh data iterator."
            )
        _read_iterator(dataset_iterator, dataset_file)

    def _remove_old(self, saved_step: int) -> None:
        if not self.keep:
            return
        for step in all_steps(self.model_dir)[: -self.keep]:
            doomed = checkpoint_dir(self.model_dir, step) + _DELETING_SUFFIX
            os.replace(checkpoint_dir(self.model_dir, step), doomed)
            _maybe_die_here("deleting_old", saved_step)
            shutil.rmtree(doomed, ignore_errors=True)


def model_dir_of(checkpoint: str) -> str:
    """The model directory for `checkpoint`: its parent if it is a checkpoint_<step> dir, else itself."""
    path = os.path.normpath(os.path.abspath(checkpoint))
    if is_checkpoint_dir_name(path):
        return os.path.dirname(path)
    return path


def read_state_as_numpy(state_dir: str) -> Any:
    """A checkpoint's whole `state/` tree as host numpy arrays, whatever mesh and however many processes
    wrote it (the shardings stored with it name devices this process may not have)."""
    import jax
    import orbax.checkpoint as ocp

    checkpointer = ocp.PyTreeCheckpointer()
    stored = checkpointer.metadata(state_dir).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
    return checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def read_verified_state(checkpoint: str, attempts: int = 3) -> tuple[str, Any]:
    """(checkpoint dir, its whole state as numpy) for a checkpoint_<step> dir, or a model dir's newest
    checkpoint, once its checksums verify: every reader outside training (eval, infer, caption,
    inspect_checkpoint) reads through here, so a flipped byte is refused (CorruptCheckpointError naming the
    file) instead of loading NaNs. A model dir's newest checkpoint deleted while it is read (a training run's
    keep-N) is retried with the newest one left, `attempts` times in all."""
    for attempt in range(attempts):
        directory = resolve_checkpoint_path(checkpoint)
        try:
            checkpoint_integrity.verify(directory)
            state_dir = os.path.join(os.path.abspath(directory), "state")
            if not os.path.isdir(state_dir):
                raise FileNotFoundError(f"{directory} has no state/ folder: not a simvlm-jax (T5X-layout) checkpoint.")
            return directory, read_state_as_numpy(state_dir)
        except Exception:
            if os.path.isdir(directory) or directory == checkpoint or attempt == attempts - 1:
                if not os.path.isdir(directory):
                    raise FileNotFoundError(
                        f"{directory} was deleted while it was read (a training run keeping only its newest "
                        "checkpoints?): read again, or name a checkpoint that is kept."
                    ) from None
                raise
            logging.warning("%s was deleted while it was read; reading the newest checkpoint left.", directory)
    raise AssertionError("unreachable")


def load_params(checkpoint: str) -> Any:
    """The parameters (`target`) of a checkpoint_<step> dir, or of a model dir's newest checkpoint, verified
    against its checksums (`read_verified_state`)."""
    return load_verified_params(checkpoint)[1]


def load_verified_params(checkpoint: str) -> tuple[str, Any]:
    """(checkpoint dir, parameters) as `load_params`, naming the checkpoint that was read."""
    import jax
    import jax.numpy as jnp

    directory, tree = read_verified_state(checkpoint)
    if not isinstance(tree, Mapping) or "target" not in tree:
        raise ValueError(f"{directory}/state holds no 'target' (parameters) entry.")
    return directory, jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), tree["target"])
