r"""Pretrain or fine-tune SimVLM: `train(...)` (plain Python) and its gin command line.

    python -m simvlm_jax.train --gin_file=gin/tiny_cpu.gin --gin.MODEL_DIR=/tmp/simvlm_tiny

Flags and macro names follow `t5x.train`: --gin_file (repeatable), --gin_bindings, --gin.NAME=VALUE,
--gin_search_paths, --tfds_data_dir, and --multiprocess_gpu / --coordinator_address /
--process_count / --process_index for multi-host runs. Gin is applied here only.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ notices drown the progress lines
from typing import Any, Callable, Optional

import jax
import numpy as np
from absl import logging

from simvlm_jax import checkpoints, config_checks, curves, metrics as metrics_lib
from simvlm_jax.data import bad_records, loader
from simvlm_jax.numerics import NumericsMonitor
from simvlm_jax.prefetch import prefetch_to_device
from simvlm_jax.preemption import StopRequest
from simvlm_jax.trainer import Trainer, TrainState, TrainStateLayout
from simvlm_jax.training_eval import InferenceEvaluator, TrainingEvaluator
from simvlm_jax.training_log import ProgressLog, SummaryWriters


def train(
    *,
    model,
    train_dataset_cfg,
    train_eval_dataset_cfg=None,
    infer_eval_dataset_cfg=None,
    checkpoint_cfg,
    partitioner,
    trainer_cls: Callable[..., Trainer] = Trainer,
    model_dir: str,
    total_steps: int,
    eval_steps: int = 20,
    eval_period: int = 1000,
    relative_steps: Optional[int] = None,
    stats_period: Optional[int] = None,
    random_seed: Optional[int] = None,
    summarize_config_fn: Optional[Callable] = None,
    run_eval_before_training: bool = False,
    use_orbax: bool = True,
    num_samples_to_log: int = 4,
    prefetch_batches: int = 2,
    nan_policy: str = "skip_step",
    bad_record_policy: str = "skip",
    loss_spike_factor: float = 3.0,
    **unused_t5x_kwargs: Any,
) -> tuple[int, TrainState]:
    """Trains `model` to `total_steps` (or `relative_steps` past the restored step); returns (step, state).

    Resumes from the newest checkpoint in `model_dir` (including the data iterator when it was saved),
    else from `checkpoint_cfg.restore.path`, else from scratch. Keyword names are T5X's, plus
    `prefetch_batches` (batches put on the devices ahead of the step, see `_device_batches`) and the
    reliability policies (docs/reliability.md): `nan_policy` 'skip_step' | 'stop' for steps with a
    non-finite loss or update, `bad_record_policy` 'skip' | 'fail' for corrupt input records, and
    `loss_spike_factor` (a warning when an interval's loss exceeds that multiple of its running mean).
    The configuration is checked (model dir, feature lengths, image size, vocabulary, batch size)
    before anything is compiled.
    """
    if not use_orbax:
        raise ValueError("Only Orbax checkpoints are supported (use_orbax=True).")
    _check_unused_kwargs(unused_t5x_kwargs)
    monitor = NumericsMonitor(nan_policy, loss_spike_factor)
    bad_records.configure(bad_record_policy)
    config_checks.check_model_dir(model_dir)
    checkpoints.remove_incomplete(model_dir)
    loader.import_task_module(train_dataset_cfg.module)
    config_checks.check_training_config(model, train_dataset_cfg)
    stats_period = stats_period or eval_period
    save_cfg, restore_cfg = checkpoint_cfg.save, checkpoint_cfg.restore
    seed = random_seed if random_seed is not None else int(time.time())
    logging.info("Random seed: %d", seed)

    # ---------------------------------------------------------------- data
    layout_info = partitioner.get_data_layout(train_dataset_cfg.batch_size)
    train_ds = loader.get_dataset(train_dataset_cfg, layout_info.shard_id, layout_info.num_shards)
    train_iter = iter(train_ds)  # a tf.data iterator: checkpointable
    input_shapes = {k: (train_dataset_cfg.batch_size, *v.shape[1:]) for k, v in train_ds.element_spec.items()}
    input_types = {k: v.dtype.as_numpy_dtype for k, v in train_ds.element_spec.items()}

    # ---------------------------------------------------------------- train state
    layout = TrainStateLayout(model, partitioner, input_shapes, input_types)
    if save_cfg is not None:
        config_checks.check_model_dir(model_dir, needed_bytes=config_checks.state_bytes(layout.shapes))
    manager = checkpoints.CheckpointManager(model_dir, keep=save_cfg.keep if save_cfg else None)
    state = _restore_or_initialize(layout, manager, model_dir, restore_cfg, save_cfg, train_iter, seed)
    start_step = int(jax.device_get(state.step))
    if relative_steps:
        total_steps = start_step + relative_steps

    writers = SummaryWriters(model_dir)
    if jax.process_index() == 0:
        with open(os.path.join(model_dir, "model-info.txt"), "w") as f:
            f.write("\n".join(layout.model_info_lines()) + "\n")
    if summarize_config_fn is not None:
        summarize_config_fn(model_dir, writers.train, start_step)

    evaluator = None
    if train_eval_dataset_cfg is not None:
        evaluator = TrainingEvaluator(
            train_eval_dataset_cfg, layout_info, eval_steps, writers, model.output_vocabulary, num_samples_to_log
        )
    infer_evaluator = None
    if infer_eval_dataset_cfg is not None:
        infer_evaluator = InferenceEvaluator(infer_eval_dataset_cfg, model, os.path.join(model_dir, "inference_eval"))
    trainer = trainer_cls(
        model=model, train_state=state, partitioner=partitioner,
        eval_names=evaluator.task_names if evaluator else (), summary_dir=model_dir,
        train_state_axes=layout.logical_axes, rng=jax.random.fold_in(jax.random.key(seed), 1),
    )

    # ---------------------------------------------------------------- loop
    def save(step):
        if save_cfg is None:
            logging.warning("No SaveCheckpointConfig: nothing saved at step %d.", step)
            return
        manager.save(step, trainer.train_state.to_checkpoint_tree(), train_iter if save_cfg.save_dataset else None)

    if run_eval_before_training:
        if evaluator:
            evaluator.evaluate(trainer, start_step)
        if infer_evaluator:
            infer_evaluator.evaluate(trainer.train_state.params, start_step)
    progress = ProgressLog(start_step, total_steps, train_dataset_cfg.batch_size)
    pending: list = []
    batches = _device_batches(train_iter, trainer, prefetch_batches, save_cfg)
    step = start_step
    with StopRequest() as stop:
        while step < total_steps:
            pending.append(trainer.train_step(next(batches)))
            step += 1
            saving = _is_save_step(save_cfg, step)
            # Every save is a sync point, so a non-finite step is seen (nan_policy) before it is saved.
            at_sync_point = step % stats_period == 0 or step == total_steps or step == start_step + 1 or saving
            if at_sync_point:
                summary = metrics_lib.compute_metrics(metrics_lib.merge_metrics(pending))  # the only host sync
                pending = []
                summary.update(progress.update(step, summary))
                summary.update(monitor.observe(step, summary))
                summary.update(_skipped_record_scalars())
                writers.train.write_scalars(step, summary)
            if stop.should_stop(step, at_sync_point):
                save(step)
                print(f"Stopped by {stop.signal_name or 'another host'} at step {step}; checkpoint_{step} is saved. "
                      "Rerun the same command to continue.", flush=True)
                break
            if saving:
                save(step)
            if step % eval_period == 0 or step == total_steps:
                if evaluator:
                    evaluator.evaluate(trainer, step)
                if infer_evaluator:
                    infer_evaluator.evaluate(trainer.train_state.params, step)
    if save_cfg and checkpoints.latest_step(model_dir) != step:
        save(step)
    writers.flush()
    if jax.process_index() == 0:
        _write_curves(model_dir)
    _print_locations(model_dir, step)
    return step, trainer.train_state


def _write_curves(model_dir: str) -> None:
    """MODEL_DIR/curves.png from the run's summaries; a plotting problem never fails a finished run."""
    try:
        curves.plot(model_dir)
    except Exception as error:  # noqa: BLE001 (the checkpoint is saved; the picture is a convenience)
        logging.warning("Could not write %s/curves.png: %s", model_dir, error)


def _device_batches(train_iter, trainer: Trainer, prefetch_batches: int, save_cfg):
    """Batches already sharded onto the devices, `prefetch_batches` ahead of the step loop. No
    prefetch when the data iterator is checkpointed: it would be saved that many batches ahead."""
    if save_cfg is not None and save_cfg.save_dataset:
        prefetch_batches = 0
    return prefetch_to_device(loader.numpy_batches(train_iter), trainer.shard_batch, prefetch_batches)


# Arguments of t5x.train.train that this trainer accepts and ignores (so T5X gin files still run).
T5X_ONLY_ARGUMENTS = ("use_hardware_rng", "inference_evaluator_cls", "get_dataset_fn", "concurrent_metrics",
                      "actions", "train_eval_get_dataset_fn", "train_state_initializer_cls",
                      "verify_matching_vocabs_fn", "gc_period", "skip_fn", "hardware_rng")


def _check_unused_kwargs(kwargs: dict) -> None:
    """T5X-only arguments are ignored with a warning; any other name is a misspelling and fails."""
    import difflib
    import inspect

    ours = [p for p in inspect.signature(train).parameters if p != "unused_t5x_kwargs"]
    for name in kwargs:
        if name in T5X_ONLY_ARGUMENTS:
            logging.warning("train(): ignoring T5X argument %r, which the simvlm-jax trainer does not use.", name)
            continue
        close = difflib.get_close_matches(name, ours, n=3)
        raise TypeError(f"train() has no argument {name!r}"
                        + (f"; did you mean {' or '.join('train.' + c for c in close)}?" if close else
                           f"; its arguments are {', '.join(ours)}."))


def _is_save_step(save_cfg, step: int) -> bool:
    return bool(save_cfg and ((save_cfg.period and step % save_cfg.period == 0)
                              or step in (save_cfg.checkpoint_steps or ())))


def _skipped_record_scalars() -> dict[str, float]:
    """data/skipped_records/<reason> (since this process started) for TensorBoard; logs a line if any."""
    counts = bad_records.skipped_counts()
    if counts:
        logging.warning("Skipped input records so far: %s", counts)
        print("skipped records: " + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())), flush=True)
    return {f"data/skipped_records/{reason}": float(n) for reason, n in counts.items()}


def _print_locations(model_dir: str, step: int) -> None:
    if jax.process_index() != 0:
        return
    print(f"Finished at step {step}.\n"
          f"  checkpoints:  {os.path.join(model_dir, 'checkpoint_<step>')} (newest: checkpoint_{checkpoints.latest_step(model_dir)})\n"
          f"  TensorBoard:  tensorboard --logdir={model_dir}   (train/, training_eval/<task>/, inference_eval/)\n"
          f"  curves:       {os.path.join(model_dir, 'curves.png')}\n"
          f"  config:       {os.path.join(model_dir, 'config.gin')}, {os.path.join(model_dir, 'model-info.txt')}",
          flush=True)


def _restore_or_initialize(layout, manager, model_dir, restore_cfg, save_cfg, train_iter, seed) -> TrainState:
    """The newest checkpoint of this run, else the configured restore path, else a fresh state."""
    own = checkpoints.latest_step(model_dir)
    path, with_dataset = None, False
    if own is not None:
        path, with_dataset = checkpoints.checkpoint_dir(model_dir, own), bool(save_cfg and save_cfg.save_dataset)
    elif restore_cfg is not None and restore_cfg.path:
        configured = restore_cfg.path if isinstance(restore_cfg.path, str) else restore_cfg.path[0]
        try:
            path, with_dataset = checkpoints.resolve_checkpoint_path(configured), restore_cfg.restore_dataset
        except FileNotFoundError:
            if not restore_cfg.fallback_to_scratch:
                raise
            logging.warning("No checkpoint at %s; starting from scratch (fallback_to_scratch).", configured)
    if path is None:
        return layout.initialize(jax.random.key(seed))
    config_checks.check_checkpoint_shapes(path, _flat_shapes(layout.shapes.params))
    tree = manager.restore(path, layout.abstract_state().to_checkpoint_tree(), train_iter if with_dataset else None)
    state = TrainState.from_checkpoint_tree(tree)
    print(f"Restored {path} (step {int(jax.device_get(state.step))}"
          f"{', with the data iterator' if with_dataset else ''}); continuing.", flush=True)
    return state


def _flat_shapes(params) -> dict[str, tuple]:
    import flax

    return {name: tuple(leaf.shape) for name, leaf in flax.traverse_util.flatten_dict(params, sep="/").items()}


# --------------------------------------------------------------------------------------------------
# Command line (gin lives here only).
# --------------------------------------------------------------------------------------------------
def default_gin_search_paths() -> list[str]:
    """The repository's gin/ folder (for `include 'models/...'`) and the working directory."""
    repo_gin = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")
    return [p for p in (repo_gin, ".") if os.path.isdir(p)]


def main(argv) -> None:
    import gin
    import seqio
    from absl import flags

    from simvlm_jax import gin_utils

    del argv
    flag_values = flags.FLAGS
    if not flag_values["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # progress, evals and samples are printed; -v 0 for all logs
    if flag_values.coordinator_address:
        jax.distributed.initialize(flag_values.coordinator_address, flag_values.process_count,
                                   flag_values.process_index)
    if flag_values.tfds_data_dir:
        seqio.set_tfds_data_dir_override(flag_values.tfds_data_dir)
    train_using_gin = gin.configurable(train)
    gin_utils.parse_gin_flags(flag_values.gin_search_paths + default_gin_search_paths(),
                              flag_values.gin_file, flag_values.gin_bindings)
    try:
        train_using_gin()
    except bad_records.BadRecordError:
        _exit_now_with_traceback()


def _exit_now_with_traceback() -> None:
    """Prints the traceback and exits 1 at once. After a bad record stops the input pipeline, tf.data
    threads may still be inside their Python decode functions, and a normal interpreter shutdown then
    waits on them forever; nothing is left to save (the run stops without a checkpoint by design)."""
    import sys
    import traceback

    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_multi_string("gin_file", None, "Gin files to parse, in order (repeatable).")
    flags.DEFINE_multi_string("gin_bindings", [], "Individual gin bindings; --gin.NAME=VALUE is shorthand.")
    flags.DEFINE_list("gin_search_paths", ["."], "Folders searched for gin files and their includes.")
    flags.DEFINE_string("tfds_data_dir", None, "Overrides the TFDS data dir of every task.")
    flags.DEFINE_bool("multiprocess_gpu", False, "Multi-process GPU run (set the coordinator flags too).")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for jax.distributed.")
    flags.DEFINE_integer("process_count", None, "Number of processes (multi-host).")
    flags.DEFINE_integer("process_index", None, "This process's index (multi-host).")


if __name__ == "__main__":
    from simvlm_jax import gin_utils as _gin_utils, host_memory as _host_memory

    _host_memory.reexec_with_huge_pages()

    define_flags()
    _gin_utils.run(main)
