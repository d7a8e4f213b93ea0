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


def test_gpu_sweep_runs_a_variant_and_writes_its_mfu(tmp_path, monkeypatch):
    import json
    import sys

    from benchmarks import gpu_sweep

    out = tmp_path / "sweep.json"
    argv = ["gpu_sweep", f"--out={out}", "--size=tiny", "--batch_scale=0.03", "--peak_size=256"]
    monkeypatch.setattr(sys, "argv", [*argv, "--only=einsum_b128_scan"])
    gpu_sweep.main()
    results = json.loads(out.read_text())
    variant = results["variants"]["einsum_b128_scan"]
    assert list(results["variants"]) == ["einsum_b128_scan"]  # --only ran that variant alone
    assert variant["batch"] == 3 and variant["scan_layers"] is True
    assert variant["train_gflops"] == pytest.approx(variant["mfu"] * results["peak_gflops_bfloat16"])
    assert results["best"] == "einsum_b128_scan"


def test_the_peer_part_without_pytorch_says_how_to_install_it(monkeypatch):
    import sys

    from benchmarks import peer

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install '\.\[peer\]'"):
        peer.peer_benchmark(run.small_config(), None)
