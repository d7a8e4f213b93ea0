"""The benchmark suite runs end to end at tiny sizes and reports the keys docs/performance.md lists."""

import pytest

from benchmarks import run


def test_quick_suite_reports_mfu_against_its_own_peak(tmp_path):
    out = tmp_path / "bench.json"
    results = run.run_suite("cpu", quick=True, parts=("small",), out=str(out))
    for key in (
        "peak_gflops",
        "peak_gflops_float32",
        "peak_gflops_bfloat16",
        "train_gflops",
        "mfu",
        "examples_per_s",
        "tokens_per_s",
    ):
        assert results[key] > 0, key
    small = results["small"]
    # Throughput is the analytic FLOP count of the step over its measured time, and it cannot be far above
    # the peak matmul rate measured in the same run (a faster step would mean the count or the timing is off).
    assert small["train_gflops"] == pytest.approx(small["analytic_gflop_per_step"] / small["step_s"])
    assert 0.0 < results["mfu"] < 1.5
    assert 0.7 < small["analytic_to_xla"] < 1.1  # the analytic count agrees with XLA's cost analysis
    assert out.exists()
    assert "small: MFU" in run.format_table(results)


def test_small_config_is_the_documented_one():
    cfg = run.small_config()
    assert (cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.emb_dim, cfg.num_image_tokens) == (6, 6, 512, 64)
