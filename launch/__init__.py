"""Launchers for multi-host training: what both of them share.

    python -m simvlm_jax.launch.tpu_vm --help   # Cloud TPU VM pod slices, through gcloud
    python -m simvlm_jax.launch.slurm --help    # multi-node GPU jobs, through sbatch / srun

Every worker runs the same training command,

    python -m simvlm_jax.train --gin_file=G... --gin.MODEL_DIR='DIR' [--gin.X=Y ...]

and the launchers differ only in how they start it on each host. This module builds that command,
sorts the trainer's own flags out of a launcher's command line, and prints or runs command lines.
Plain Python (argparse, shlex, subprocess): no JAX, no gin, so it starts in a blink on a laptop.
"""

import argparse
import shlex
import shutil
import subprocess
import sys

TRAIN_MODULE = "simvlm_jax.train"
# The trainer's flags a launcher passes through unchanged (`--gin.TRAIN_STEPS=1000`, ...).
TRAINER_FLAG_PREFIXES = ("--gin.", "--gin_bindings", "--gin_search_paths", "--tfds_data_dir")


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that describe the run itself (the launcher-specific ones are the caller's)."""
    parser.add_argument(
        "--gin_file", action="append", required=True, help="gin file for the trainer (repeatable), e.g. pretrain.gin"
    )
    parser.add_argument("--model_dir", required=True, help="checkpoints and logs, e.g. gs://bucket/runs/base")
    parser.epilog = (
        "Trainer flags starting with " + ", ".join(TRAINER_FLAG_PREFIXES) + " are passed through unchanged, "
        "e.g. --gin.TRAIN_STEPS=1000 or --gin.MIXTURE_OR_TASK_NAME=\"'cc3m'\"."
    )


def parse_launcher_args(parser: argparse.ArgumentParser, argv: list[str] | None, passthrough: bool):
    """Parses argv; with `passthrough`, the trainer's flags are kept in `args.trainer_flags` (in their
    order) and anything else unknown is an error, so a typo never reaches a pod."""
    args, unknown = parser.parse_known_args(argv)
    args.trainer_flags = []
    for flag in unknown:
        if passthrough and flag.startswith(TRAINER_FLAG_PREFIXES):
            args.trainer_flags.append(flag)
        else:
            parser.error(f"unrecognized argument: {flag}")
    return args


def gin_string(value: str) -> str:
    """A Python string literal as gin reads it: gs://b/run -> 'gs://b/run' (quotes inside escaped)."""
    return repr(value)


def train_argv(python: str, gin_files: list[str], model_dir: str, trainer_flags: list[str]) -> list[str]:
    """The training command as an argv list (not yet shell-quoted), e.g.
    ['python', '-m', 'simvlm_jax.train', '--gin_file=pretrain.gin', "--gin.MODEL_DIR='gs://b/run'"]."""
    return [
        python,
        "-m",
        TRAIN_MODULE,
        *(f"--gin_file={gin_file}" for gin_file in gin_files),
        f"--gin.MODEL_DIR={gin_string(model_dir)}",
        *trainer_flags,
    ]


def command_line(argv: list[str]) -> str:
    """One argv as a line a POSIX shell reads back into exactly that argv (paste it, or shlex.split it)."""
    return shlex.join(argv)


def run_commands(commands: list[list[str]], dry_run: bool) -> None:
    """Prints the command lines (dry run) or runs them in order, stopping at the first failure.

    Without the program on PATH (`gcloud`, `sbatch`) it stops before running anything, saying so.
    """
    if dry_run:
        for argv in commands:
            print(command_line(argv))
        return
    for program in dict.fromkeys(argv[0] for argv in commands):
        if shutil.which(program) is None:
            raise SystemExit(
                f"error: `{program}` is not on PATH. Install it (gcloud: the Google Cloud CLI; sbatch: a SLURM "
                "login node) or add --dry_run to print the commands instead of running them."
            )
    for argv in commands:
        print(f"+ {command_line(argv)}", file=sys.stderr, flush=True)
        try:
            subprocess.run(argv, check=True)
        except subprocess.CalledProcessError as failure:
            raise SystemExit(f"error: exit status {failure.returncode} from: {command_line(argv)}") from None
