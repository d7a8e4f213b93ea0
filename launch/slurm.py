r"""Train on several GPU nodes under SLURM: write an sbatch script (one JAX process per node) and submit it.

    python -m simvlm_jax.launch.slurm --nodes=4 --gpus_per_node=8 --partition=gpu --time=48:00:00 \
        --setup='source ~/simvlm/venv/bin/activate' \
        --gin_file=gin/simvlm_base.gin --model_dir=/shared/runs/base \
        --gin.TRAIN_STEPS=250000

writes slurm_logs/simvlm.sbatch and runs `sbatch slurm_logs/simvlm.sbatch`; the job's output goes to
slurm_logs/simvlm-JOBID.out. With --dry_run the script goes to stdout (`--dry_run > job.sbatch` keeps it)
and the sbatch line to stderr; nothing is written or submitted.

In the job, the first node of the allocation hosts JAX's coordinator and `srun` starts the trainer once
per node with --coordinator_address, --process_count and --process_index (that task's SLURM_PROCID).
"""

import argparse
import os
import sys

from simvlm_jax.launch import add_train_flags, command_line, parse_launcher_args, run_commands, train_argv

# The program srun starts in every task. Single-quoted in the script, so the batch shell leaves it alone
# and each task's own bash expands SLURM_PROCID (different per task) and SLURM_NTASKS. "$0" is the Python
# and "$@" is `-m simvlm_jax.train FLAGS...`: they follow the program as separate, already quoted words.
TASK_PROGRAM = (
    'exec "$0" "$@" --coordinator_address="$SIMVLM_COORDINATOR"'
    ' --process_count="$SLURM_NTASKS" --process_index="$SLURM_PROCID"'
)


def sbatch_directives(args: argparse.Namespace) -> list[str]:
    """The #SBATCH lines: resources, limits, and where the job's output goes (%x job name, %j job id)."""
    lines = [
        f"--job-name={args.job_name}",
        f"--nodes={args.nodes}",
        "--ntasks-per-node=1",
        f"--gpus-per-node={args.gpus_per_node}",
        f"--cpus-per-task={args.cpus_per_task}",
        f"--time={args.time}",
        f"--output={os.path.join(args.log_dir, '%x-%j.out')}",
    ]
    lines += [f"--partition={args.partition}"] if args.partition else []
    lines += [f"--account={args.account}"] if args.account else []
    return [f"#SBATCH {line}" for line in lines]


def sbatch_script(args: argparse.Namespace) -> str:
    """The whole batch script, as text."""
    trainer = train_argv(args.python, args.gin_file, args.model_dir, args.trainer_flags)
    python, train_flags = trainer[0], trainer[1:]  # ["python", "-m", "simvlm_jax.train", flags...]
    srun = ["srun", "--kill-on-bad-exit=1", "bash", "-c", TASK_PROGRAM, python, *train_flags]
    lines = [
        "#!/bin/bash",
        *sbatch_directives(args),
        "# Written by `python -m simvlm_jax.launch.slurm`: SimVLM training, one JAX process per node.",
        "set -e -o pipefail",
        "",
        *args.setup,
        "",
        "# Process 0 runs on the allocation's first node, which therefore hosts JAX's coordinator.",
        'COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f'export SIMVLM_COORDINATOR="$COORDINATOR_HOST:{args.port}"',
        'echo "coordinator: $SIMVLM_COORDINATOR, nodes: $SLURM_JOB_NODELIST"',
        "",
        "# One task per node, each starting the trainer with explicit multi-process flags (rather than JAX's",
        "# own SLURM detection, so that coordinator, count and index are plain to see here and in the log).",
        "# SLURM_PROCID differs per task, so this shell must not expand it: the program after `bash -c` is in",
        "# single quotes, and each task's bash expands it. That program's $0 is the Python, its \"$@\" the module",
        "# and the training flags. srun passes this environment (SIMVLM_COORDINATOR) on to the tasks.",
        command_line(srun),
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simvlm_jax.launch.slurm", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("--job_name", default="simvlm", help="SLURM job name (%%x in the output file name)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes; one training process on each")
    parser.add_argument("--gpus_per_node", type=int, default=8)
    parser.add_argument("--cpus_per_task", type=int, default=32, help="CPU cores for each node's process")
    parser.add_argument("--time", default="24:00:00", help="time limit, [D-]HH:MM:SS")
    parser.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    parser.add_argument("--account", help="SLURM account to charge")
    parser.add_argument("--log_dir", default="slurm_logs", help="job output (JOBNAME-JOBID.out) and the script")
    parser.add_argument(
        "--setup",
        action="append",
        default=[],
        help="a shell line run first on the batch node, e.g. 'module load cuda' (repeatable, in order)",
    )
    parser.add_argument("--python", default="python", help="the Python that has simvlm-jax (after --setup)")
    parser.add_argument("--port", type=int, default=12345, help="coordinator port on the first node")
    parser.add_argument("--script", help="where to write the script (default: LOG_DIR/JOB_NAME.sbatch)")
    parser.add_argument("--dry_run", action="store_true", help="print the script and the sbatch line only")
    add_train_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parse_launcher_args(build_parser(), argv, passthrough=True)
    script = sbatch_script(args)
    script_path = args.script or os.path.join(args.log_dir, f"{args.job_name}.sbatch")
    submit = ["sbatch", script_path]
    if args.dry_run:
        sys.stdout.write(script)
        print(command_line(submit), file=sys.stderr)
        return
    os.makedirs(args.log_dir, exist_ok=True)  # SLURM does not create the --output folder
    os.makedirs(os.path.dirname(script_path) or ".", exist_ok=True)
    with open(script_path, "w") as f:
        f.write(script)
    print(f"wrote {script_path}", file=sys.stderr)
    run_commands([submit], dry_run=False)


if __name__ == "__main__":
    main()
