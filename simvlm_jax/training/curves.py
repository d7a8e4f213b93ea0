r"""A PNG of a run's curves, read back from its TensorBoard event files (TensorBoard stays the main view).

    python -m simvlm_jax.training.curves MODEL_DIR [--out=FILE.png]

Panels: training loss and token accuracy (model_dir/train), teacher-forced eval loss per task
(model_dir/training_eval/<task>) and decoded-prediction metrics per task (model_dir/inference_eval/<task>,
where seqio's TensorBoardLogger writes tags `eval/<metric>`: CIDEr, VQA accuracy, ...). The trainer writes
`MODEL_DIR/curves.png` at the end of every run.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
from typing import Optional, Sequence

import numpy as np

Series = dict[str, list[tuple[int, float]]]  # tag -> [(step, value)] sorted by step


def read_scalars(log_dir: str) -> Series:
    """Every scalar summary in the event files directly under `log_dir` (later writes of a step win)."""
    import tensorflow as tf

    values: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        number = value.simple_value
                    elif value.HasField("tensor") and not value.tensor.string_val:
                        array = tf.make_ndarray(value.tensor)
                        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
                            continue
                        number = float(array.reshape(()))
                    else:
                        continue
                    values[value.tag][int(event.step)] = float(number)
        except tf.errors.DataLossError:  # a file cut short by a kill: keep what was read
            continue
    return {tag: sorted(points.items()) for tag, points in values.items()}


def collect(model_dir: str) -> dict[str, Series]:
    """{run name: scalars}: 'train', 'training_eval/<task>' and 'inference_eval/<task>' (when present)."""
    runs = {"train": read_scalars(os.path.join(model_dir, "train"))}
    for kind in ("training_eval", "inference_eval"):
        for sub in sorted(glob.glob(os.path.join(model_dir, kind, "*"))):
            if os.path.isdir(sub):
                runs[f"{kind}/{os.path.basename(sub)}"] = read_scalars(sub)
        scalars = read_scalars(os.path.join(model_dir, kind))  # seqio's TensorBoardLogger: tags <task>/<metric>
        for tag, points in scalars.items():
            task, _, metric = tag.rpartition("/")
            runs.setdefault(f"{kind}/{task or 'all'}", {})[metric] = points
    return {name: series for name, series in runs.items() if series}


def plot(model_dir: str, out: Optional[str] = None) -> Optional[str]:
    """Writes the curves PNG (default MODEL_DIR/curves.png); returns its path, or None with no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = collect(model_dir)
    train = runs.get("train", {})
    evals = {name.split("/", 1)[1]: s for name, s in runs.items() if name.startswith("training_eval/")}
    infers = {name.split("/", 1)[1]: s for name, s in runs.items() if name.startswith("inference_eval/")}
    infers = {task: {tag.removeprefix("eval/"): points for tag, points in s.items()} for task, s in infers.items()}
    infer_metrics = sorted({m for s in infers.values() for m in s if not m.startswith("timing")})
    panels = [
        ("training loss", {"train": train.get("loss", [])}),
        (
            "token accuracy",
            {"train": train.get("accuracy", []), **{t: s.get("accuracy", []) for t, s in evals.items()}},
        ),
        ("eval loss (teacher-forced)", {t: s.get("loss", []) for t, s in evals.items()}),
    ]
    panels += [(metric, {t: s.get(metric, []) for t, s in infers.items()}) for metric in infer_metrics]
    panels = [(title, {k: v for k, v in lines.items() if v}) for title, lines in panels]
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, points in lines.items():
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle(os.path.basename(os.path.normpath(model_dir)))
    figure.tight_layout()
    out = out or os.path.join(model_dir, "curves.png")
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--out", default=None, help="PNG path (default: MODEL_DIR/curves.png)")
    args = parser.parse_args(argv)
    path = plot(args.model_dir, args.out)
    print(path if path else f"No scalar summaries under {args.model_dir}.")
    return 0 if path else 1


if __name__ == "__main__":
    raise SystemExit(main())
