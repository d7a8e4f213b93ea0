"""The paper's pretraining ablations on the embedded benchmark, as gin overrides of the main job.

    python -m benchmarks.ablations --out=/tmp/ablations            # every row, seeds 0 and 1, 400 steps
    python -m benchmarks.ablations --rows=default,plain_lm --seeds=0 --steps=1200

Each row is `python -m simvlm_jax.train --gin_file=gin/tiny_cpu.gin` plus its overrides (ROWS below), trained
for `--steps` steps and scored once at the end: zero-shot captioning CIDEr on the validation scenes and on the
held-out colour-shape compositions (`embedded_captioning_mix`). With `--finetune_steps=N`, each pretrained
checkpoint is then fine-tuned on easy-VQA for N steps (`gin/tiny_easy_vqa.gin` with the row's network
overrides) and scored on its test split; the row `no_pretraining` does that fine-tuning alone, from random
parameters. The runs go one after another (every run uses
the whole machine); each prints its scores as it ends, and `<out>/ablations.json` and `<out>/ablations.md`
(the table, mean and spread over seeds) are rewritten after every run. docs/ablations.md holds the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

# name -> (what it tests, gin overrides)
_CONFIG = "--gin.network.SimVLMConfig."
ROWS = {
    "default": ("PrefixLM, 3 conv blocks, 2D relative positions, pairs + text", []),
    "no_relative_position": ("without the 2D relative position bias", [_CONFIG + "image_relative_position=False"]),
    "conv0_patch16": ("ViT patch embedding instead of conv blocks (16x16 patches)", [_CONFIG + "num_conv_blocks=0"]),
    "conv1_stride16": (
        "1 conv block, 4x4 neighbourhoods merged to 16 tokens",
        [_CONFIG + "num_conv_blocks=1", _CONFIG + "image_token_stride=16"],
    ),
    "conv2_stride16": (
        "2 conv blocks, 2x2 neighbourhoods merged to 16 tokens",
        [_CONFIG + "num_conv_blocks=2", _CONFIG + "image_token_stride=16"],
    ),
    "conv4_stride16": (
        "4 conv blocks, the last stage at stride 1 (16 tokens)",
        [_CONFIG + "num_conv_blocks=4", _CONFIG + "image_token_stride=16"],
    ),
    "decoder_only": (
        "decoder-only: one stack of 4 layers, prefix-LM mask, no cross-attention",
        [_CONFIG + "decoder_only=True"],
    ),
    "plain_lm": (
        "plain LM objective: empty prefix for pairs and documents",
        ["--gin.MIXTURE_OR_TASK_NAME=embedded_plain_lm_mix"],
    ),
    "span_corruption": (
        "T5 span corruption (15%, spans of 3) instead of PrefixLM, 100 sentinel ids",
        ["--gin.MIXTURE_OR_TASK_NAME=embedded_span_corruption_mix", _CONFIG + "vocab_size=2100"],
    ),
    "pairs_only": ("no text-only data", ["--gin.MIXTURE_OR_TASK_NAME=embedded_scenes_prefixlm"]),
    "text_only": ("no image-text data", ["--gin.MIXTURE_OR_TASK_NAME=embedded_text_prefixlm"]),
}
NO_PRETRAINING = "no_pretraining"
ROWS[NO_PRETRAINING] = ("no pretraining: easy-VQA fine-tuning from random parameters", [])
_SCORE = re.compile(r"^infer_eval (\S+) @ (\d+): (.*)$")


def _scores(stdout: str, step: int) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of the inference evaluation printed at `step`."""
    scores = {}
    for line in stdout.splitlines():
        match = _SCORE.match(line)
        if match and int(match.group(2)) == step:
            scores[match.group(1)] = {k: float(v) for k, v in (p.split() for p in match.group(3).split(", "))}
    return scores


def finetune_row(name: str, seed: int, steps: int, finetune_steps: int, out: str) -> dict:
    """Fine-tunes the row's pretrained checkpoint (none for no_pretraining) on easy-VQA; the test accuracy."""
    start_step = 0 if name == NO_PRETRAINING else steps
    initial = "None" if name == NO_PRETRAINING else os.path.join(out, f"{name}_seed{seed}", f"checkpoint_{steps}")
    network_overrides = [o for o in ROWS[name][1] if o.startswith(_CONFIG)]
    end = start_step + finetune_steps
    command = [
        sys.executable, "-m", "simvlm_jax.train", "--gin_file=gin/tiny_easy_vqa.gin",
        f"--gin.MODEL_DIR={os.path.join(out, f'{name}_seed{seed}_easy_vqa{finetune_steps}')}",
        f"--gin.INITIAL_CHECKPOINT_PATH={initial}", f"--gin.INITIAL_STEP={start_step}",
        f"--gin.TRAIN_STEPS={end}", f"--gin.RANDOM_SEED={seed}", f"--gin.EVAL_PERIOD={finetune_steps}",
        f"--gin.CHECKPOINT_PERIOD={finetune_steps}", *network_overrides,
    ]  # fmt: skip
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, cwd=out)
    scores = _scores(done.stdout, end)
    if done.returncode != 0 or "easy_vqa" not in scores:
        raise RuntimeError(f"{name} seed {seed} fine-tuning failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {
        "easy_vqa_accuracy": scores["easy_vqa"]["vqa_accuracy"],
        "finetune_steps": finetune_steps,
        "finetune_seconds": round(time.time() - started, 1),
        "finetune_command": " ".join(command[1:]),
    }


def run_row(name: str, seed: int, steps: int, out: str) -> dict:
    if name == NO_PRETRAINING:
        return {"row": name, "seed": seed, "steps": steps}
    model_dir = os.path.join(out, f"{name}_seed{seed}")
    command = [
        sys.executable, "-m", "simvlm_jax.train", "--gin_file=gin/tiny_cpu.gin",
        f"--gin.MODEL_DIR={model_dir}", f"--gin.TRAIN_STEPS={steps}", f"--gin.RANDOM_SEED={seed}",
        f"--gin.EVAL_PERIOD={steps}", f"--gin.CHECKPOINT_PERIOD={steps}", *ROWS[name][1],
    ]  # fmt: skip
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, cwd=out)
    scores = _scores(done.stdout, steps)
    if done.returncode != 0 or len(scores) != 2:
        raise RuntimeError(f"{name} seed {seed} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {
        "row": name,
        "seed": seed,
        "steps": steps,
        "seconds": round(time.time() - start, 1),
        "cider_validation": scores["embedded_scenes_captioning"]["cider"],
        "cider_heldout": scores["embedded_heldout_captioning"]["cider"],
        "exact_validation": scores["embedded_scenes_captioning"]["exact_match"],
        "command": " ".join(command[1:]),
    }


def table(results: list[dict]) -> str:
    """Mean ± standard deviation over seeds, then each seed's value; "n/a" where a row has no such figure."""
    lines = [
        "| row | what | seeds | CIDEr validation | CIDEr held-out | exact match % | easy-VQA accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (what, _) in ROWS.items():
        runs = [r for r in results if r["row"] == name]
        if not runs:
            continue

        def cell(key):
            values = [r[key] for r in runs if key in r]
            if not values:
                return "n/a"
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.1f}{spread} ({', '.join(f'{v:.1f}' for v in values)})"

        lines.append(
            f"| `{name}` | {what} | {len(runs)} | {cell('cider_validation')} | {cell('cider_heldout')} | "
            f"{cell('exact_validation')} | {cell('easy_vqa_accuracy')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/simvlm_ablations")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--finetune_steps", type=int, default=0, help="easy-VQA fine-tuning steps (0: none)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ablations.json")
    results = json.load(open(path)) if os.path.exists(path) else []

    def save():
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "ablations.md"), "w") as f:
            f.write(table(results))

    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.rows.split(","):
            # Already measured rows are kept (a rerun after an interruption resumes where it stopped).
            result = next((r for r in results if (r["row"], r["seed"], r["steps"]) == (name, seed, args.steps)), None)
            if result is None:
                result = run_row(name, seed, args.steps, args.out)
                results.append(result)
                print(json.dumps(result), flush=True)
                save()
            if args.finetune_steps and result.get("finetune_steps") != args.finetune_steps:
                result.update(finetune_row(name, seed, args.steps, args.finetune_steps, args.out))
                print(json.dumps(result), flush=True)
                save()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
