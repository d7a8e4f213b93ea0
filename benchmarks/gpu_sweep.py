"""The Base train step on one GPU under the switches that matter there, best first, then a profile.

    python -m benchmarks.gpu_sweep --out=$OUT/gpu_sweep.json --budget_s=420

Each variant is the `benchmarks.run` Base step (bfloat16, AdamW, random data) with one setting changed:
attention through XLA einsums or `jax.nn.dot_product_attention` (cuDNN flash attention where it
applies), the per-chip batch, scanned or unrolled layers. MFU is against the bfloat16 matmul peak
measured first in the same process. The variants run in the order given and stop once `budget_s` is
spent (a lent GPU is short), every result written as soon as it exists. The best variant is then traced
with `jax.profiler` and its GPU kernels summed by name, so that what is left of the step is visible.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile
import time

import jax

from benchmarks import measure
from simvlm_jax.network import get_config

# (label, config overrides, batch), in the order they run (unrolled Base compiles slowly: last).
VARIANTS = (
    ("fused_b128_scan", dict(attention_impl="fused", scan_layers=True), 128),
    ("einsum_b128_scan", dict(attention_impl="einsum", scan_layers=True), 128),
    ("fused_b256_scan", dict(attention_impl="fused", scan_layers=True), 256),
    ("fused_b128_unrolled", dict(attention_impl="fused"), 128),
    ("einsum_b64_unrolled", dict(attention_impl="einsum"), 64),  # the setting of the previous GPU figure
)


def kernel_times(trace_dir: str, steps: int) -> list[tuple[str, float]]:
    """(kernel name with numeric suffixes dropped, milliseconds per step) from a jax.profiler trace,
    device-side events only, largest first."""
    totals: collections.Counter = collections.Counter()
    for path in glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True):
        trace = json.load(gzip.open(path))
        device_pids = {
            p["pid"]
            for p in trace["traceEvents"]
            if p.get("ph") == "M" and p.get("name") == "process_name" and "/device:GPU" in str(p.get("args"))
        }
        for event in trace["traceEvents"]:
            if event.get("ph") == "X" and event.get("pid") in device_pids:
                totals[re.sub(r"[._]\d+$", "", event["name"])[:80]] += event["dur"] / 1000 / steps
    return totals.most_common(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget_s", type=float, default=420.0)
    parser.add_argument("--size", default="base", help="size preset ('tiny' with --batch_scale=0.03: a CPU check)")
    parser.add_argument("--batch_scale", type=float, default=1.0)
    parser.add_argument("--peak_size", type=int, default=8192)
    parser.add_argument("--only", default="", help="comma-separated variant labels to run (default: all)")
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "variants": {}}

    def write():
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)

    results["peak_gflops_bfloat16"] = peak = measure.matmul_peak_gflops(args.peak_size, "bfloat16", repeats=3)
    print(f"peak bf16 {peak / 1e3:.1f} TFLOP/s", flush=True)
    chosen = [v for v in VARIANTS if not args.only or v[0] in args.only.split(",")]
    for label, overrides, batch in chosen:
        if time.perf_counter() - started > args.budget_s:
            print(f"budget spent: {label} and later variants not run", flush=True)
            break
        cfg = get_config(args.size, dtype="bfloat16", **overrides)
        batch = max(1, int(batch * args.batch_scale))
        t0 = time.perf_counter()
        try:
            result = measure.train_benchmark(cfg, measure.Shapes(batch), peak, repeats=3)
        except Exception as error:  # noqa: BLE001 - one variant out of memory must not end the sweep
            result = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        result.update(batch=batch, wall_s=time.perf_counter() - t0, **overrides)
        results["variants"][label] = result
        write()
        shown = {k: result.get(k) for k in ("step_s", "mfu", "temp_mib", "wall_s", "error")}
        print(label, json.dumps(shown), flush=True)

    ok = {k: v for k, v in results["variants"].items() if "mfu" in v}
    if not ok or time.perf_counter() - started > args.budget_s + 60:
        return
    best = max(ok, key=lambda k: ok[k]["mfu"])
    results["best"] = best
    overrides, batch = next(v[1] for v in VARIANTS if v[0] == best), ok[best]["batch"]
    cfg = get_config(args.size, dtype="bfloat16", **overrides)
    init, step = measure.train_step_fn(cfg)
    data = jax.device_put(measure.random_batch(cfg, measure.Shapes(batch)))
    state = init(jax.random.key(0), data)
    for _ in range(2):
        state, loss = step(state, data)
    jax.block_until_ready(loss)
    trace_dir = tempfile.mkdtemp()
    steps = 3
    with jax.profiler.trace(trace_dir):
        for _ in range(steps):
            state, loss = step(state, data)
        jax.block_until_ready(loss)
    results["best_profile_ms_per_step"] = kernel_times(trace_dir, steps)
    write()
    print(f"profile of {best} (GPU kernels, ms per step):", flush=True)
    for name, ms in results["best_profile_ms_per_step"]:
        print(f"  {ms:8.3f}  {name}", flush=True)


if __name__ == "__main__":
    main()
