"""The training loop: `train(...)`, plain Python with T5X's keyword names (the command line is
`simvlm_jax/train.py`, which applies gin).

`train` first runs `preflight`: every check that needs neither data nor a compiled step (model dir,
tasks, feature lengths, image size, vocabulary, batch size, restore path, a memory estimate), raising
`ConfigError` and writing nothing when one fails. Only then are the data pipeline, the train state and
the compiled step built.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Optional

import jax
import optax
import seqio
from absl import logging

from simvlm_jax.data import bad_records, loader
from simvlm_jax.model import loss_metrics as metrics_lib
from simvlm_jax.model import model_config
from simvlm_jax.model.inference import EvaluationInterrupted
from simvlm_jax.training import checkpoint_integrity, checkpoints, curves, multihost, partial_restore
from simvlm_jax.training import preflight as preflight_lib
from simvlm_jax.training.config_checks import ConfigError
from simvlm_jax.training.evaluators import InferenceEvaluator, TrainingEvaluator
from simvlm_jax.training.logs import ProgressLog, SummaryWriters
from simvlm_jax.training.model_dir_lock import ModelDirLock
from simvlm_jax.training.numerics import NumericsMonitor
from simvlm_jax.training.preemption import StopRequest
from simvlm_jax.training.prefetch import InputStalled, prefetch_to_device
from simvlm_jax.training.trainer import Trainer, TrainState


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
    max_bad_records_in_a_row: int = bad_records.DEFAULT_MAX_BAD_IN_A_ROW,
    corrupt_checkpoint_policy: str = "fallback",
    allow_vocabulary_size_mismatch: bool = False,
    loss_spike_factor: float = 3.0,
    divergence_factor: Optional[float] = 10.0,
    **unused_t5x_kwargs: Any,
) -> tuple[int, TrainState]:
    """Trains `model` to `total_steps` (or `relative_steps` past the restored step); returns (step, state).

    Resumes from the newest checkpoint in `model_dir` (including the data iterator when it was saved),
    else from `checkpoint_cfg.restore.path`, else from scratch. Keyword names are T5X's, plus
    `prefetch_batches` (batches put on the devices ahead of the step, see `_device_batches`) and the
    reliability policies (docs/reliability.md): `nan_policy` 'skip_step' | 'stop' for steps with a
    non-finite loss or update, `bad_record_policy` 'skip' | 'fail' for corrupt input records,
    `max_bad_records_in_a_row` (a task that yields no good record among that many stops the run instead of
    spinning), `corrupt_checkpoint_policy` 'fallback' | 'fail' for a newest checkpoint that fails
    verification (moved aside and the previous one used, or the run refused), `divergence_factor` (a loss
    or parameter norm that many times its reference stops the run: training/numerics.py; None: off), and
    `loss_spike_factor` (a
    warning when an interval's loss exceeds that multiple of its running mean). MODEL_DIR is locked for the
    run (a second run on it is refused). `allow_vocabulary_size_mismatch` lets a full-size preset train with
    a vocabulary smaller than its embedding table (refused by default).
    The configuration is checked (model dir, feature lengths, image size, vocabulary, batch size)
    before anything is compiled.
    """
    if not use_orbax:
        raise ConfigError("Only Orbax checkpoints are supported: remove train.use_orbax = False.")
    _check_unused_kwargs(unused_t5x_kwargs)
    monitor = NumericsMonitor(nan_policy, loss_spike_factor, divergence_factor=divergence_factor)
    save_cfg, restore_cfg = checkpoint_cfg.save, checkpoint_cfg.restore
    preflight_lib.check_counts(
        total_steps=total_steps,
        eval_period=eval_period,
        eval_steps=eval_steps,
        stats_period=stats_period,
        relative_steps=relative_steps,
        save_period=save_cfg.period if save_cfg else None,
        checkpoints_to_keep=save_cfg.keep if save_cfg else None,
        max_bad_records_in_a_row=max_bad_records_in_a_row,
    )
    layout, (restore_path, restore_dataset, corrupt, restore_mapping) = preflight_lib.preflight(
        model,
        train_dataset_cfg,
        partitioner,
        model_dir,
        save_cfg,
        restore_cfg,
        bad_record_policy=bad_record_policy,
        corrupt_checkpoint_policy=corrupt_checkpoint_policy,
        allow_vocabulary_size_mismatch=allow_vocabulary_size_mismatch,
    )
    # Nothing was written before this point.
    os.makedirs(model_dir, exist_ok=True)
    with contextlib.ExitStack() as held:
        if jax.process_index() == 0:
            held.enter_context(ModelDirLock(model_dir))  # a second run on MODEL_DIR is refused here
            _move_aside(corrupt, restore_path)
        # Every pipeline built below (training, train-eval, infer-eval) takes the bad-record policy.
        held.enter_context(
            bad_records.applied(bad_records.RecordPolicy(bad_record_policy, max_bad_in_a_row=max_bad_records_in_a_row))
        )
        checkpoints.remove_incomplete(model_dir)
        stats_period = stats_period or eval_period
        seed = multihost.agreed_seed(random_seed)
        logging.info("Random seed: %d", seed)

        # ---------------------------------------------------------------- data
        layout_info = partitioner.get_data_layout(train_dataset_cfg.batch_size)
        train_ds = loader.get_dataset(train_dataset_cfg, layout_info.shard_id, layout_info.num_shards)
        preflight_lib.check_dataset_matches(train_ds, layout.input_shapes, layout_info.num_shards)
        train_iter = iter(train_ds)  # a tf.data iterator: checkpointable

        # ---------------------------------------------------------------- train state
        manager = checkpoints.CheckpointManager(model_dir, keep=save_cfg.keep if save_cfg else None)
        state = _restore_or_initialize(
            layout, manager, restore_path, restore_dataset, train_iter, seed, restore_mapping
        )
        start_step = int(jax.device_get(state.step))
        # The divergence check's references: a uniform guess's loss, and the norm the run starts from.
        monitor.reference_loss = math.log(model.module.config.vocab_size)
        monitor.initial_param_norm = float(jax.device_get(optax.global_norm(state.params)))
        if jax.process_index() == 0:  # the model's record, once it is known to be this model (after the restore)
            model_config.write(model_dir, model, train_dataset_cfg.task_feature_lengths)
        if relative_steps:
            total_steps = start_step + relative_steps

        writers = SummaryWriters(model_dir)
        if jax.process_index() == 0:
            with open(os.path.join(model_dir, "model-info.txt"), "w") as f:
                f.write("\n".join(layout.model_info_lines()) + "\n")
        if summarize_config_fn is not None:
            summarize_config_fn(model_dir, writers.train, start_step)
        evaluations = _Evaluations(
            model,
            model_dir,
            writers,
            layout_info,
            train_eval_dataset_cfg,
            infer_eval_dataset_cfg,
            eval_steps,
            num_samples_to_log,
        )
        trainer = trainer_cls(
            model=model,
            train_state=state,
            partitioner=partitioner,
            eval_names=evaluations.train_eval_task_names,
            summary_dir=model_dir,
            train_state_axes=layout.logical_axes,
            rng=jax.random.fold_in(jax.random.key(seed), 1),
        )

        def save(step):
            if save_cfg is None:
                logging.warning("No SaveCheckpointConfig: nothing saved at step %d.", step)
                return
            manager.save(step, trainer.train_state.to_checkpoint_tree(), train_iter if save_cfg.save_dataset else None)

        if jax.process_count() > 1:  # compile before the first collective: see training/multihost.py
            trainer.compile_train_step(layout.abstract_batch())
            multihost.barrier("train_step_compiled")
        if run_eval_before_training:
            evaluations.run(trainer, start_step)
        stop = StopRequest()
        batches = _device_batches(train_iter, trainer, prefetch_batches, save_cfg, stop)
        step = _loop(
            stop,
            trainer,
            batches,
            start_step,
            total_steps,
            stats_period,
            eval_period,
            save_cfg,
            save,
            evaluations,
            monitor,
            writers,
            ProgressLog(start_step, total_steps, train_dataset_cfg.batch_size),
        )
        if save_cfg and checkpoints.latest_step(model_dir) != step:
            save(step)
        writers.flush()
        if jax.process_index() == 0:
            _write_curves(model_dir)
        _print_locations(model_dir, step)
        return step, trainer.train_state


def _loop(
    stop: StopRequest,
    trainer,
    batches,
    start_step: int,
    total_steps: int,
    stats_period: int,
    eval_period: int,
    save_cfg,
    save,
    evaluations,
    monitor: NumericsMonitor,
    writers: SummaryWriters,
    progress: ProgressLog,
) -> int:
    """Steps from `start_step` to `total_steps` (or until a stop request); returns the last step.

    Metrics stay on the devices between sync points (every `stats_period` steps, the first step, the
    last, and every save: a non-finite step is seen by the numerics monitor before it is saved)."""
    pending: list = []
    step = start_step

    def stop_here() -> None:
        save(step)  # a no-op when checkpoint_<step> exists
        print(
            f"Stopped by {stop.signal_name or 'another host'} at step {step}; checkpoint_{step} is saved. "
            "Rerun the same command to continue.",
            flush=True,
        )

    with stop:
        while step < total_steps:
            try:
                batch = next(batches)
            except InputStalled:
                raise InputStalled(
                    f"Stopped by {stop.signal_name} while waiting {DATA_WAIT_GRACE_S:.0f} s for the batch of step "
                    f"{step + 1}: the input pipeline is stuck; nothing was saved after the newest checkpoint."
                ) from None
            pending.append(trainer.train_step(batch))
            step += 1
            saving = _is_save_step(save_cfg, step)
            at_sync_point = step % stats_period == 0 or step == total_steps or step == start_step + 1 or saving
            if at_sync_point:
                summary = metrics_lib.compute_metrics(metrics_lib.merge_metrics(pending))  # the only host sync
                pending = []
                summary.update(progress.update(step, summary))
                summary.update(monitor.observe(step, summary))
                summary.update(_skipped_record_scalars())
                writers.train.write_scalars(step, summary)
            if stop.should_stop(step, at_sync_point):
                stop_here()
                break
            if saving:
                save(step)
            if step % eval_period == 0 or step == total_steps:
                evaluations.run(trainer, step, interrupted=stop.requested_here)
                if stop.should_stop(step, at_sync_point=True):  # a signal during the evaluation
                    stop_here()
                    break
    return step


class _Evaluations:
    """The two evaluations of a run (T5X's): teacher-forced per task (training_eval/) and decoded, scored
    with the tasks' metrics (inference_eval/); either may be off (its dataset config None)."""

    def __init__(
        self,
        model,
        model_dir: str,
        writers,
        layout_info,
        train_eval_cfg,
        infer_eval_cfg,
        eval_steps: int,
        num_samples: int,
    ):
        self.training = self.inference = None
        if train_eval_cfg is not None:
            self.training = TrainingEvaluator(
                train_eval_cfg, layout_info, eval_steps, writers, model.output_vocabulary, num_samples
            )
        if infer_eval_cfg is not None:
            self.inference = InferenceEvaluator(infer_eval_cfg, model, os.path.join(model_dir, "inference_eval"))

    @property
    def train_eval_task_names(self) -> tuple:
        return tuple(self.training.task_names) if self.training else ()

    def run(self, trainer, step: int, interrupted: Callable[[], bool] = lambda: False) -> None:
        """Both evaluations at `step`; `interrupted()` is asked before every batch, and True ends them
        (the rest skipped, nothing written for the unfinished one)."""
        try:
            if self.training:
                self.training.evaluate(trainer, step, interrupted)
            if self.inference:
                self.inference.evaluate(trainer.train_state.params, step, interrupted)
        except EvaluationInterrupted:
            print(f"Evaluation at step {step} interrupted.", flush=True)


def _move_aside(corrupt, restore_path: Optional[str]) -> None:
    """Renames this run's corrupt newest checkpoints `<name>.corrupt` (kept for inspection), saying so."""
    for path, problem in corrupt:
        moved = checkpoint_integrity.move_aside(path)
        then = f"resuming from {os.path.basename(restore_path)}" if restore_path else "no earlier checkpoint verifies"
        print(f"{path} is corrupt: {problem}. Moved it to {moved}; {then}.", flush=True)


def _write_curves(model_dir: str) -> None:
    """MODEL_DIR/curves.png from the run's summaries; a plotting problem never fails a finished run."""
    try:
        curves.plot(model_dir)
    except Exception as error:  # noqa: BLE001 (the checkpoint is saved; the picture is a convenience)
        logging.warning("Could not write %s/curves.png: %s", model_dir, error)


# After a stop request, how long the loop still waits for a batch (then to train the step and save it)
# before it gives up on a stuck input pipeline.
DATA_WAIT_GRACE_S = 10.0


def _device_batches(train_iter, trainer: Trainer, prefetch_batches: int, save_cfg, stop: StopRequest):
    """Batches already sharded onto the devices, `prefetch_batches` ahead of the step loop. No
    prefetch when the data iterator is checkpointed: it would be saved that many batches ahead."""
    if save_cfg is not None and save_cfg.save_dataset:
        prefetch_batches = 0
    return prefetch_to_device(
        loader.numpy_batches(train_iter),
        trainer.shard_batch,
        prefetch_batches,
        give_up=lambda: stop.seconds_since_request() > DATA_WAIT_GRACE_S,
    )


# Arguments of t5x.train.train that this trainer accepts and ignores (so T5X gin files still run).
T5X_ONLY_ARGUMENTS = (
    "use_hardware_rng",
    "inference_evaluator_cls",
    "get_dataset_fn",
    "concurrent_metrics",
    "actions",
    "train_eval_get_dataset_fn",
    "train_state_initializer_cls",
    "verify_matching_vocabs_fn",
    "gc_period",
    "skip_fn",
    "hardware_rng",
)


def _check_unused_kwargs(kwargs: dict) -> None:
    """T5X-only arguments are ignored with a warning; any other name is a misspelling and fails."""
    import difflib
    import inspect

    ours = [p for p in inspect.signature(train).parameters if p != "unused_t5x_kwargs"]
    for name, value in kwargs.items():
        if name == "inference_evaluator_cls" and value is seqio.Evaluator:
            continue  # what our InferenceEvaluator is built on (the run gins bind it for T5X)
        if name in T5X_ONLY_ARGUMENTS:
            logging.warning("train(): ignoring T5X argument %r, which the simvlm-jax trainer does not use.", name)
            continue
        close = difflib.get_close_matches(name, ours, n=3)
        raise ConfigError(
            f"train() has no argument {name!r}"
            + (
                f"; did you mean {' or '.join('train.' + c for c in close)}?"
                if close
                else f"; its arguments are {', '.join(ours)}."
            )
        )


def _is_save_step(save_cfg, step: int) -> bool:
    return bool(
        save_cfg and ((save_cfg.period and step % save_cfg.period == 0) or step in (save_cfg.checkpoint_steps or ()))
    )


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
    print(
        f"Finished at step {step}.\n"
        f"  checkpoints:  {os.path.join(model_dir, 'checkpoint_<step>')} "
        f"(newest: checkpoint_{checkpoints.latest_step(model_dir)})\n"
        f"  TensorBoard:  tensorboard --logdir={model_dir}   (train/, training_eval/<task>/, inference_eval/)\n"
        f"  curves:       {os.path.join(model_dir, 'curves.png')}\n"
        f"  config:       {os.path.join(model_dir, 'config.gin')}, {os.path.join(model_dir, 'model-info.txt')}",
        flush=True,
    )
    page = os.path.join(model_dir, "inference_eval", "report.html")
    if os.path.exists(page):  # the newest decoding evaluation, example by example (simvlm_jax/report)
        print(f"  report:       {page}   (open it in a browser: images, captions, scores)", flush=True)


def _restore_or_initialize(
    layout, manager, path: Optional[str], with_dataset: bool, train_iter, seed, mapping=None
) -> TrainState:
    """The state restored from checkpoint `path` (shapes checked in preflight), or a fresh one; with a
    `mapping` (a RestoreCheckpointConfig with assignment_map / strict / fallback_to_scratch), the parts it
    selects, the rest freshly initialised (training/partial_restore.py)."""
    if path is None:
        return layout.initialize(jax.random.key(seed))
    abstract = layout.abstract_state()
    if mapping is not None:
        tree, summary = partial_restore.restore_partially(
            path,
            abstract.to_checkpoint_tree(),
            layout.initialize(jax.random.key(seed)).to_checkpoint_tree(),
            mapping.assignment_map or (),
            strict=mapping.strict,
            fallback_to_scratch=mapping.fallback_to_scratch,
        )
        if with_dataset:
            manager.restore_dataset(path, train_iter)
        state = TrainState.from_checkpoint_tree(tree, abstract)
        print(f"Restored {path} partially: {partial_restore.describe(summary)}; continuing.", flush=True)
        return state
    tree = manager.restore(path, abstract.to_checkpoint_tree(), train_iter if with_dataset else None)
    state = TrainState.from_checkpoint_tree(tree, abstract)
    print(
        f"Restored {path} (step {int(jax.device_get(state.step))}"
        f"{', with the data iterator' if with_dataset else ''}); continuing.",
        flush=True,
    )
    return state
