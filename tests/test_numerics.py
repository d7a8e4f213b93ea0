"""Numerical faults: a NaN/Inf step is not applied and is counted; policy 'stop' ends the run without
saving the fault; loss spikes are logged."""

import functools
import re

import jax
import numpy as np
import optax
import pytest

from simvlm_jax.training import checkpoints, numerics, trainer
from tests.helpers import make_batch, make_model, run_module, train_in_process


def test_a_nan_batch_leaves_params_and_optimizer_state_unchanged_and_is_counted():
    model = make_model()
    optimizer = optax.adamw(1e-3)
    params = model.get_initial_variables(jax.random.key(0), {k: v.shape for k, v in make_batch().items()})["params"]
    state = trainer.TrainState(step=np.int32(0), params=params, opt_state=optimizer.init(params))
    step = jax.jit(functools.partial(trainer.train_step, model, optimizer, None, jax.random.key(1)))

    good, metrics = step(state, make_batch())
    assert float(metrics["nonfinite_steps"].compute()) == 0.0
    poisoned = make_batch()
    poisoned["encoder_image"][0, 0, 0, 0] = np.nan
    after, metrics = step(good, poisoned)
    assert float(metrics["nonfinite_steps"].compute()) == 1.0
    assert int(after.step) == 2  # the batch is consumed; the update is not applied
    same = jax.tree.map(
        lambda a, b: bool(np.array_equal(a, b)), (after.params, after.opt_state), (good.params, good.opt_state)
    )
    assert all(jax.tree.leaves(same))


def test_monitor_stops_under_policy_stop_and_logs_spikes(capsys):
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        numerics.NumericsMonitor("ignore")
    skip = numerics.NumericsMonitor("skip_step", spike_factor=3.0)
    assert skip.observe(1, {"loss": 2.0, "nonfinite_steps": 0.0})["numerics/nonfinite_steps_total"] == 0
    assert skip.observe(2, {"loss": 2.1, "nonfinite_steps": 2.0})["numerics/nonfinite_steps_total"] == 2
    assert skip.observe(3, {"loss": 9.0})["numerics/loss_spike"] == 1.0
    assert "loss spike at step 3" in capsys.readouterr().out
    with pytest.raises(numerics.NonFiniteError, match="newest checkpoint holds the last good state"):
        numerics.NumericsMonitor("stop").observe(5, {"loss": float("nan"), "nonfinite_steps": 1.0})


# A learning rate so large that the first real update overflows the parameters' norm to inf.
HUGE_LR = [
    "--gin_file=gin/tiny_cpu.gin",
    "--gin.BATCH_SIZE=8",
    "--gin.EVAL_PERIOD=1000",
    "--gin.TRAIN_STEPS=6",
    "--gin.CHECKPOINT_PERIOD=2",
    "--gin.SAVE_DATASET=False",  # checkpoints of parameters only: the data position is not under test here
    "--gin.train.stats_period=1",
    "--gin.GRAD_CLIP_NORM=1e30",
    "--gin.PEAK_LEARNING_RATE=1e37",
    "--gin.WARMUP_FRACTION=0.0",
    "--gin.train.train_eval_dataset_cfg=None",
    "--gin.train.infer_eval_dataset_cfg=None",
]  # no evaluations


def test_skip_step_policy_trains_on_with_finite_parameters(embedded_data_dir, tmp_path, capsys):
    model_dir = str(tmp_path / "skip")
    step, _ = train_in_process(*HUGE_LR, f"--gin.MODEL_DIR={model_dir}")  # in-process: the loop's behaviour
    assert step == 6
    assert "their updates were skipped" in capsys.readouterr().out
    _, params = __import__("simvlm_jax.inspect_checkpoint", fromlist=["x"]).load_checkpoint(model_dir)
    assert all(np.isfinite(v).all() for v in params.values())


def test_stop_policy_exits_with_a_clear_error_and_keeps_the_last_good_checkpoint(embedded_data_dir, tmp_path):
    model_dir = str(tmp_path / "stop")
    done = run_module("simvlm_jax.train", *HUGE_LR, f"--gin.MODEL_DIR={model_dir}", "--gin.train.nan_policy=stop")
    assert done.returncode != 0
    assert "NonFiniteError" in done.stderr and "nan_policy='stop'" in done.stderr, done.stderr[-3000:]
    stopped_at = int(re.search(r"up to step (\d+)", done.stderr).group(1))
    latest = checkpoints.latest_step(model_dir)
    assert latest is None or latest < stopped_at  # nothing saved at or after the fault


def test_monitor_stops_a_diverging_loss_or_parameter_norm():
    monitor = numerics.NumericsMonitor(divergence_factor=10.0, reference_loss=7.6, initial_param_norm=50.0)
    for step, loss in enumerate((7.5, 6.0, 5.0, 40.0), start=1):  # a spike of 8x the median: a warning only
        monitor.observe(step, {"loss": loss, "param_norm": 60.0})
    with pytest.raises(numerics.DivergenceError, match=r"step 5: the loss 70 is more than 10 x the median .* 6\b"):
        monitor.observe(5, {"loss": 70.0, "param_norm": 60.0})
    first = numerics.NumericsMonitor(divergence_factor=10.0, reference_loss=7.6, initial_param_norm=50.0)
    with pytest.raises(numerics.DivergenceError, match=r"step 1: the loss 2\.2e\+13 is more than 10 x a uniform"):
        first.observe(1, {"loss": 2.2e13})
    norms = numerics.NumericsMonitor(divergence_factor=10.0, reference_loss=7.6, initial_param_norm=50.0)
    with pytest.raises(numerics.DivergenceError, match=r"step 2: the parameter norm 8e\+05 is more than 10 x"):
        norms.observe(2, {"loss": 7.0, "param_norm": 8e5})
    off = numerics.NumericsMonitor(divergence_factor=None, reference_loss=7.6, initial_param_norm=50.0)
    off.observe(1, {"loss": 2.2e13, "param_norm": 8e5})  # the check is off
    with pytest.raises(ValueError, match="divergence_factor must be above 1"):
        numerics.NumericsMonitor(divergence_factor=0.5)


def test_a_diverging_run_stops_without_saving_a_ruined_checkpoint(embedded_data_dir, tmp_path):
    """The reproduction: PEAK_LEARNING_RATE=1e4 used to skip steps, reach a loss of 2e13, print `Finished`
    and save parameters up to 8.5e5. Now it stops with one line, and every saved checkpoint is sane."""
    model_dir = str(tmp_path / "diverged")
    args = ["--gin_file=gin/tiny_cpu.gin", "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=1000", "--gin.TRAIN_STEPS=8"]
    args += ["--gin.CHECKPOINT_PERIOD=2", "--gin.train.stats_period=1", "--gin.PEAK_LEARNING_RATE=1e4"]
    args += ["--gin.train.train_eval_dataset_cfg=None", "--gin.train.infer_eval_dataset_cfg=None"]
    with pytest.raises(numerics.DivergenceError, match="Training diverged at step"):
        train_in_process(*args, f"--gin.MODEL_DIR={model_dir}")
    for step in checkpoints.all_steps(model_dir):
        _, params = __import__("simvlm_jax.inspect_checkpoint", fromlist=["x"]).load_checkpoint(
            checkpoints.checkpoint_dir(model_dir, step)
        )
        assert max(float(np.max(np.abs(v))) for v in params.values()) < 100.0, step
