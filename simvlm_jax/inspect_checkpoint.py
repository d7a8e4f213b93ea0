r"""List a checkpoint's parameters, or compare two checkpoints parameter by parameter.

    python -m simvlm_jax.inspect_checkpoint MODEL_DIR/checkpoint_1000
    python -m simvlm_jax.inspect_checkpoint RUN_A/checkpoint_1000 --compare RUN_B/checkpoint_1000

PATH may also be a model directory (its newest checkpoint is used). The listing gives the step and each
parameter's shape and dtype; `--compare` prints the largest absolute difference per parameter and ends
with one line `max_abs_diff: <value>` over all parameters (`inf` where shapes or names differ, or where either
side holds a NaN or an infinity). Both checkpoints are verified against their checksums first.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_checkpoint(path: str) -> tuple[int, dict[str, np.ndarray]]:
    """(step, {'/'-joined parameter name: numpy array}) of a checkpoint_<step> dir or a model dir."""
    import flax

    from simvlm_jax.training import checkpoints

    _, tree = checkpoints.read_verified_state(path)  # checksums first: a corrupt checkpoint is refused
    params = flax.traverse_util.flatten_dict(tree["target"], sep="/")
    step = int(np.asarray(tree["state"]["step"]))
    return step, {name: np.asarray(value) for name, value in params.items()}


def describe(path: str) -> list[str]:
    step, params = load_checkpoint(path)
    lines = [f"checkpoint: {path}", f"step: {step}"]
    total = 0
    for name in sorted(params):
        value = params[name]
        total += value.size
        lines.append(f"{name:80s} {str(tuple(value.shape)):24s} {value.dtype}")
    lines.append(f"parameters: {len(params)} arrays, {total:,} values")
    return lines


def _non_finite(value: np.ndarray) -> int:
    """The number of NaN and infinite values of a floating-point array (0 for integers)."""
    return int(np.size(value) - np.count_nonzero(np.isfinite(value))) if np.issubdtype(value.dtype, np.inexact) else 0


def compare(path: str, other: str) -> tuple[list[str], float]:
    step_a, a = load_checkpoint(path)
    step_b, b = load_checkpoint(other)
    lines = [f"comparing {path} (step {step_a}) with {other} (step {step_b})"]
    overall = 0.0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            lines.append(f"{name:80s} only in {'the first' if name in a else 'the second'}")
            overall = float("inf")
        elif a[name].shape != b[name].shape:
            lines.append(f"{name:80s} shapes differ: {a[name].shape} vs {b[name].shape}")
            overall = float("inf")
        elif _non_finite(a[name]) or _non_finite(b[name]):  # NaN or Inf: a difference, whatever the other holds
            counts = f"{_non_finite(a[name])} in the first, {_non_finite(b[name])} in the second"
            lines.append(f"{name:80s} non-finite values (NaN/Inf): {counts}")
            overall = float("inf")
        else:
            diff = (
                float(np.max(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)))) if a[name].size else 0.0
            )
            lines.append(f"{name:80s} {diff:.6g}")
            overall = max(overall, diff)
    lines.append(f"max_abs_diff: {overall:.6g}")
    return lines, overall


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simvlm_jax.inspect_checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", help="a checkpoint_<step> directory or a model directory")
    parser.add_argument("--compare", metavar="OTHER", help="another checkpoint to compare parameters with")
    args = parser.parse_args(argv)
    try:
        lines = compare(args.path, args.compare)[0] if args.compare else describe(args.path)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
