"""What a run tells its user: progress lines (model-dir checks: test_config_checks.py)."""

import pytest

from simvlm_jax.training.logs import ProgressLog


def test_progress_line_has_speed_and_eta(capsys):
    progress = ProgressLog(start_step=0, total_steps=100, batch_size=32)
    first = progress.update(1, {"loss": 7.5, "accuracy": 0.0, "num_target_tokens": 320.0})
    assert first["timing/examples_per_second"] == pytest.approx(first["timing/steps_per_second"] * 32)
    progress.update(50, {"loss": 2.0, "accuracy": 0.5})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("step 1/100  loss 7.5000") and "ETA ? (compiling)" in out[0]
    assert out[1].startswith("step 50/100  loss 2.0000") and "steps/s" in out[1] and "examples/s" in out[1]
    assert "compiling" not in out[1] and "ETA " in out[1]
