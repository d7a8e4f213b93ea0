r"""The benchmark suite: throughput and MFU against a matmul peak measured in the same run.

    python -m benchmarks.run --suite=cpu --out=/tmp/bench_cpu.json   # a few minutes on 2 cores
    python -m benchmarks.run --suite=gpu --out=/tmp/bench_gpu.json   # one GPU, bf16 Base

Prints a table and writes JSON; docs/performance.md explains every key. The FLOPs behind
`train_gflops` are analytic (simvlm_jax/model/flops.py) and printed next to XLA's own count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

if __name__ == "__main__":
    from simvlm_jax.cli import startup

    startup.begin()  # before JAX loads: huge pages on the CPU backend

import jax

from benchmarks import measure
from simvlm_jax.cli import host_memory
from simvlm_jax.network import SimVLMConfig, get_config

# The "small" benchmark model: 6+6 layers, width 512, 8 heads x 64, MLP 2048, a 32,000-piece
# vocabulary, a 64x64 image cut into 8x8 patches (64 image tokens), 32 prefix + 32 target tokens.
SMALL = dict(
    vocab_size=32000,
    emb_dim=512,
    num_heads=8,
    head_dim=64,
    mlp_dim=2048,
    num_encoder_layers=6,
    num_decoder_layers=6,
    num_conv_blocks=0,
    patch_size=8,
    image_size=64,
    max_text_length=128,
)


def small_config(**overrides) -> SimVLMConfig:
    return get_config("base", **{**SMALL, **overrides})


def _suite_settings(suite: str) -> dict:
    if suite == "cpu":
        return dict(
            dtype="float32",
            peak_size=2048,
            small_batch=16,
            base_batch=2,
            decode_batch=4,
            repeats=3,
            compile_layers=(6, 24),
            memory=True,
            pipeline=True,
        )
    # One lent GPU for a few minutes: no compile-time or memory sweep, no SeqIO on that machine.
    return dict(
        dtype="bfloat16",
        peak_size=8192,
        small_batch=64,
        base_batch=64,
        decode_batch=16,
        repeats=3,
        compile_layers=(),
        memory=False,
        pipeline=False,
    )


DEFAULT_PARTS = ("peak", "small", "base", "decode", "compile", "memory", "pipeline")
# 'peer' (HF T5 in PyTorch, benchmarks/peer.py) needs the optional extra: run only when asked for.
PARTS = (*DEFAULT_PARTS, "peer")


def run_suite(suite: str, quick: bool = False, parts: tuple[str, ...] = DEFAULT_PARTS, out: str | None = None) -> dict:
    """The measurements `parts` of `suite` ('cpu' or 'gpu'), each printed (and written to `out`) as
    soon as it is done; `quick` shrinks every size (tests, dry runs). 'peak' always runs."""
    settings = _suite_settings(suite)
    dtype = settings["dtype"]
    results: dict = {
        "suite": suite,
        "device": str(jax.devices()[0].device_kind),
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
        "host": platform.node(),
        "compute_dtype": dtype,
        "host_huge_pages": host_memory.huge_pages_in_use(),
        "host_thp_mode": host_memory.transparent_huge_page_mode(),
    }
    started = time.perf_counter()

    def done(part: str, keys: dict) -> None:
        results.update(keys)
        results["total_s"] = time.perf_counter() - started
        print(f"[{results['total_s']:7.1f}s] {part}: {json.dumps(keys, default=str)}", flush=True)
        if out:
            with open(out, "w") as f:
                json.dump(results, f, indent=2, sort_keys=True)

    size = 256 if quick else settings["peak_size"]
    peaks = {
        "peak_gflops_float32": measure.matmul_peak_gflops(size, "float32"),
        "peak_gflops_bfloat16": measure.matmul_peak_gflops(size, "bfloat16", repeats=3),
    }
    # MFU is against the best matmul of the dtype the model computes in: on CPU the larger of XLA's and that
    # of the BLAS numpy uses (XLA's is often the slower); `mfu_xla` keeps XLA's own peak as the denominator.
    best = peaks[f"peak_gflops_{dtype}"]
    if suite == "cpu":
        peaks["peak_gflops_numpy_float32"] = measure.numpy_matmul_peak_gflops(size)
        best = max(best, peaks["peak_gflops_numpy_float32"])
    done("peak", {**peaks, "peak_gflops": best, "peak_gflops_xla": peaks[f"peak_gflops_{dtype}"]})
    peak = results["peak_gflops"]

    small = small_config(dtype=dtype)
    small_shapes = measure.Shapes(settings["small_batch"])
    base = get_config("base", dtype=dtype)
    base_shapes = measure.Shapes(settings["base_batch"])
    if quick:
        small = small_config(
            dtype=dtype,
            num_encoder_layers=1,
            num_decoder_layers=1,
            emb_dim=64,
            num_heads=2,
            head_dim=32,
            mlp_dim=128,
            vocab_size=500,
        )
        small_shapes = measure.Shapes(2, 8, 8)
        base, base_shapes = small, small_shapes
    results["small_config"] = {**dataclasses.asdict(small), **dataclasses.asdict(small_shapes)}

    # The small step first: run after Base in the same process, its first steps re-fault the heap that
    # Base's temporaries left (huge pages the host had reclaimed meanwhile), 2.0 -> 3.5 s a step here.
    if "small" in parts:
        small_result = measure.train_benchmark(small, small_shapes, peak, settings["repeats"])
        small_result["mfu_xla"] = small_result["train_gflops"] / results["peak_gflops_xla"]
        headline = {k: small_result[k] for k in ("train_gflops", "mfu", "mfu_xla", "examples_per_s", "tokens_per_s")}
        done("small", {"small": small_result, **headline})  # the headline figures are the small config's
    if "base" in parts:
        base_result = measure.train_benchmark(base, base_shapes, peak, settings["repeats"])
        base_result["mfu_xla"] = base_result["train_gflops"] / results["peak_gflops_xla"]
        done("base", {"base": {**base_result, "batch": base_shapes.batch}})
    if "decode" in parts:
        done("decode", measure.decode_benchmark(small, settings["decode_batch"], 16 if quick else 128))
    if "peer" in parts:
        from benchmarks import peer  # PyTorch + transformers: pip install '.[peer]'

        done("peer", peer.peer_benchmark(small, small_shapes, rounds=2 if quick else 6, pause_rounds=1 if quick else 4))
    if "compile" in parts and settings["compile_layers"]:
        compile_s = {}
        for label in settings["compile_layers"]:  # quick: 1 and 2 layers stand in for 6 and 24
            layers = {6: 1, 24: 2}[label] if quick else label
            for scan in (True, False):
                cfg = dataclasses.replace(small, num_encoder_layers=layers, num_decoder_layers=layers, scan_layers=scan)
                compile_s[f"{'scan' if scan else 'unrolled'}_{label}"] = measure.compile_seconds(cfg, small_shapes)
        done(
            "compile",
            {"compile_s": compile_s, "scan_compile_ratio_24_to_6": compile_s["scan_24"] / compile_s["scan_6"]},
        )
    if "memory" in parts and settings["memory"]:
        done("memory", {"peak_memory_mib": measure.peak_memory_mib(small, small_shapes)})
    if "pipeline" in parts and settings["pipeline"] and "small" in parts:
        from benchmarks import pipeline  # SeqIO + TensorFlow: CPU suite only

        rate = pipeline.examples_per_s(small_shapes.batch, 4 if quick else 30)
        done("pipeline", {"pipeline_examples_per_s": rate, "pipeline_to_step_ratio": rate / results["examples_per_s"]})
    return results


def format_table(results: dict) -> str:
    """The headline figures as an aligned text table."""

    def fmt(value):
        if value is None:
            return "n/a"
        return f"{value:,.3f}" if isinstance(value, float) else str(value)

    rows = [
        ("device", results["device"]),
        ("compute dtype", results["compute_dtype"]),
        ("peak GFLOP/s float32", results["peak_gflops_float32"]),
        ("peak GFLOP/s bfloat16", results["peak_gflops_bfloat16"]),
        ("peak GFLOP/s numpy float32", results.get("peak_gflops_numpy_float32")),
        ("MFU denominator GFLOP/s", results["peak_gflops"]),
    ]
    for name in ("small", "base"):
        if name not in results:
            continue
        r = results[name]
        rows += [
            (f"{name}: train GFLOP/s", r["train_gflops"]),
            (f"{name}: MFU", r["mfu"]),
            (f"{name}: MFU vs XLA's matmul", r.get("mfu_xla")),
            (f"{name}: examples/s", r["examples_per_s"]),
            (f"{name}: tokens/s", r["tokens_per_s"]),
            (f"{name}: GFLOP/step analytic", r["analytic_gflop_per_step"]),
            (f"{name}: GFLOP/step XLA", r["xla_gflop_per_step"]),
            (f"{name}: analytic / XLA", r["analytic_to_xla"]),
        ]
    if "kv_cache_speedup" in results:
        rows += [
            ("decode tokens/s (cached)", results["decode_tokens_per_s"]),
            ("decode tokens/s (self-attention cache only)", results["self_cache_only_decode_tokens_per_s"]),
            ("decode tokens/s (recomputed)", results["uncached_decode_tokens_per_s"]),
            ("kv_cache_speedup", results["kv_cache_speedup"]),
            ("cross_cache_speedup", results["cross_cache_speedup"]),
            ("decode: same tokens", results["decode_same_tokens"]),
            (
                f"beam search row-tokens/s ({results['decode_rows_per_example']} beams)",
                results["beam_decode_row_tokens_per_s"],
            ),
            (
                f"sampling row-tokens/s ({results['decode_rows_per_example']} rows each)",
                results["sample_decode_row_tokens_per_s"],
            ),
        ]
    if "compile_s" in results:
        rows += [(f"compile_s {k}", v) for k, v in results["compile_s"].items()]
        rows.append(("scan compile 24 / 6 layers", results["scan_compile_ratio_24_to_6"]))
    rows += [
        (f"temp memory MiB, {layout}, remat={policy}", v)
        for layout, sizes in results.get("peak_memory_mib", {}).items()
        for policy, v in sizes.items()
    ]
    if "peer_step_s" in results:
        rows += [(f"peer step s, {k}", v) for k, v in results["peer_step_s"].items()]
        rows += [(f"peer GFLOP/s, {k}", v) for k, v in results["peer_gflops"].items()]
        rows += [(f"peer step s after a pause, {k}", v) for k, v in results["peer_step_after_pause_s"].items()]
        rows += [("peer: torch.compile / ours, step after a pause", results["peer_ratio_after_pause_vs_torch_compile"])]
        rows += [
            ("peer: ours / torch.compile GFLOP/s", results["peer_ratio_vs_torch_compile"]),
            ("peer: ours / torch eager GFLOP/s", results["peer_ratio_vs_torch_eager"]),
            (
                "peer: GFLOP/step ours (analytic) / torch counter",
                (results["peer_flops_analytic_gflop"], results["peer_flops_torch_counter_gflop"]),
            ),
        ]
    if "pipeline_examples_per_s" in results:
        rows += [
            ("pipeline examples/s", results["pipeline_examples_per_s"]),
            ("pipeline_to_step_ratio", results["pipeline_to_step_ratio"]),
        ]
    rows.append(("total seconds", results["total_s"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {fmt(value)}" for name, value in rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--out", help="write the results here as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the suite runs")
    parser.add_argument(
        "--parts", default=",".join(DEFAULT_PARTS), help=f"comma-separated subset of {PARTS} (default: all but peer)"
    )
    args = parser.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; expected some of {PARTS}")
    results = run_suite(args.suite, quick=args.quick, parts=parts, out=args.out)
    print(format_table(results), flush=True)
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
