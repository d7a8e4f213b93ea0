"""The benchmark suite runs end to end at tiny sizes and reports the keys docs/performance.md lists."""

import time

import jax
import pytest

from benchmarks import measure, run


def test_quick_suite_reports_mfu_against_its_own_peak(tmp_path):
    out = tmp_path / "bench.json"
    started = time.perf_counter()
    results = run.run_suite("cpu", quick=True, parts=("small",), out=str(out))
    elapsed = time.perf_counter() - started
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
    # The step time against this test's own clock: the part runs the step at least 7 times (2 warm-up
    # steps, 5 timed), so 7 steps fit in the whole run; a step time off by a unit (ms for s) or divided by
    # the batch would not.
    assert 0.0 < 7 * small["step_s"] < elapsed
    # Throughput cannot be far above the peak matmul rate measured in the same run (a faster step would
    # mean the FLOP count or the timing is off), and the analytic FLOP count agrees with XLA's own count
    # of the compiled step (its cost analysis), an independent counter.
    assert 0.0 < results["mfu"] < 1.5
    assert 0.7 < small["analytic_to_xla"] < 1.1
    assert out.exists()
    assert "small: MFU" in run.format_table(results)


def test_quick_decode_part_times_greedy_beam_search_and_sampling():
    results = run.run_suite("cpu", quick=True, parts=("decode",))
    assert results["decode_same_tokens"]  # cached, self-attention cache only and recomputed agree
    for key in (
        "decode_tokens_per_s",
        "self_cache_only_decode_tokens_per_s",
        "uncached_decode_tokens_per_s",
        "beam_decode_row_tokens_per_s",
        "sample_decode_row_tokens_per_s",
    ):
        assert results[key] > 0, key
    table = run.format_table(results)
    assert "beam search row-tokens/s (4 beams)" in table and "sampling row-tokens/s (4 rows each)" in table


def test_cached_decoding_returns_a_row_per_hypothesis_and_refuses_unknown_settings():
    cfg = run.small_config(
        num_encoder_layers=1, num_decoder_layers=1, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, vocab_size=50
    )
    batch = measure.random_batch(cfg, measure.Shapes(2, 4, 6))
    params = measure.SimVLMNetwork(cfg).init(
        jax.random.key(0),
        *(batch[k] for k in ("encoder_image", "encoder_image_mask", "encoder_input_tokens", "decoder_input_tokens")),
        batch["decoder_target_tokens"],
    )["params"]
    greedy = measure.cached_decode_fn(cfg, 6)(params, batch)
    beams = measure.cached_decode_fn(cfg, 6, "beam", 3)(params, batch)
    samples = measure.cached_decode_fn(cfg, 6, "sample", 3)(params, batch)
    assert greedy.shape == (2, 6) and beams.shape == samples.shape == (6, 6)
    with pytest.raises(ValueError, match="num_decodes"):
        measure.cached_decode_fn(cfg, 6, "greedy", 3)
    with pytest.raises(ValueError, match="num_decodes"):
        measure.cached_decode_fn(cfg, 6, "top_k", 3)


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
    assert 0.0 < variant["mfu"] < float("inf")  # measured against a small peak matmul here: no upper bound
    assert results["best"] == "einsum_b128_scan"


def test_the_peer_part_without_pytorch_says_how_to_install_it(monkeypatch):
    import sys

    from benchmarks import peer

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install '\.\[peer\]'"):
        peer.peer_benchmark(run.small_config(), None)
