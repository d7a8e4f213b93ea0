r"""Train on a Cloud TPU VM pod slice: create it, install, train on every worker, follow, stop, delete.

    python -m simvlm_jax.launch.tpu_vm create simvlm-v4 --zone=us-central2-b --accelerator_type=v4-128 --spot
    python -m simvlm_jax.launch.tpu_vm install simvlm-v4 --zone=us-central2-b \
        --package='git+https://github.com/OWNER/simvlm-jax@v0.1.0'   # or --wheel=dist/simvlm_jax-0.1.0-*.whl
    python -m simvlm_jax.launch.tpu_vm train simvlm-v4 --zone=us-central2-b \
        --gin_file=gin/simvlm_base.gin --model_dir=gs://BUCKET/runs/base
    python -m simvlm_jax.launch.tpu_vm logs simvlm-v4 --zone=us-central2-b            # worker 0's log, tail -f
    python -m simvlm_jax.launch.tpu_vm stop simvlm-v4 --zone=us-central2-b            # SIGTERM: checkpoint, exit
    python -m simvlm_jax.launch.tpu_vm delete simvlm-v4 --zone=us-central2-b

Every subcommand takes --dry_run: it prints the gcloud command lines, shell-quoted to paste, and runs
nothing. Each worker of the slice is one JAX process; `simvlm_jax.train` finds the others by itself
(`jax.distributed.initialize()` on a TPU VM), so the same command goes to all workers (--worker=all).
Paths on the workers (the venv, the log file) are relative to the ssh user's home directory.
"""

import argparse
import importlib.metadata
import os
import shlex

from simvlm_jax.launch import add_train_flags, parse_launcher_args, run_commands, train_argv

GCLOUD_TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
# Accelerator-type prefix -> the TPU software version (runtime) JAX is installed on, per Cloud TPU's docs.
RUNTIME_BY_ACCELERATOR_PREFIX = {
    "v6e-": "v2-alpha-tpuv6e",
    "v5p-": "v2-alpha-tpuv5",
    "v5litepod-": "v2-alpha-tpuv5-lite",
    "v4-": "tpu-ubuntu2204-base",
    "v3-": "tpu-ubuntu2204-base",
    "v2-": "tpu-ubuntu2204-base",
}
DEFAULT_VENV = "simvlm-venv"
DEFAULT_LOG_FILE = "simvlm_train.log"
# The pkill pattern matches the trainer's command line but not a shell running this very pkill line:
# "simvlm_jax[.]train" as text does not contain "simvlm_jax.train".
TRAINER_PROCESS_PATTERN = "simvlm_jax[.]train"


def default_runtime_version(accelerator_type: str) -> str:
    """v4-128 -> tpu-ubuntu2204-base, v5litepod-256 -> v2-alpha-tpuv5-lite, v6e-256 -> v2-alpha-tpuv6e."""
    for prefix, runtime in RUNTIME_BY_ACCELERATOR_PREFIX.items():
        if accelerator_type.startswith(prefix):
            return runtime
    raise SystemExit(f"error: no default TPU software version for {accelerator_type!r}; pass --version")


def pinned_jax_version() -> str:
    """The jax version this package pins (jax==X in its installed metadata)."""
    try:
        requirements = importlib.metadata.requires("simvlm-jax") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    for requirement in requirements:
        if requirement.replace(" ", "").startswith("jax=="):
            return requirement.replace(" ", "").removeprefix("jax==").split(";")[0]
    raise SystemExit("error: simvlm-jax is not installed here, so its jax pin is unknown; pass --jax_version")


def gcloud(verb: str, args: argparse.Namespace, *verb_args: str) -> list[str]:
    """`gcloud compute tpus tpu-vm VERB NAME --zone=Z [--project=P] VERB_ARGS...` as an argv list."""
    project = [f"--project={args.project}"] if args.project else []
    return [*GCLOUD_TPU_VM, verb, args.name, f"--zone={args.zone}", *project, *verb_args]


def on_workers(args: argparse.Namespace, worker: str, remote_command: str) -> list[str]:
    """Runs one shell command line over ssh on a worker ("0", "1", ...) or on all of them ("all")."""
    return gcloud("ssh", args, f"--worker={worker}", f"--command={remote_command}")


def create_commands(args: argparse.Namespace) -> list[list[str]]:
    version = args.version or default_runtime_version(args.accelerator_type)
    flags = [f"--accelerator-type={args.accelerator_type}", f"--version={version}"]
    flags += ["--spot"] if args.spot else ["--preemptible"] if args.preemptible else []
    return [gcloud("create", args, *flags)]


def install_commands(args: argparse.Namespace) -> list[list[str]]:
    """Copies the wheel to every worker (with --wheel), then on every worker: the Python the package needs
    (from apt when missing), a venv, and jax[tpu] at the pinned version together with this package."""
    commands, requirement = [], args.package
    if args.wheel:
        wheel_name = os.path.basename(args.wheel)
        project = [f"--project={args.project}"] if args.project else []
        scp = [*GCLOUD_TPU_VM, "scp", args.wheel, f"{args.name}:", f"--zone={args.zone}", *project, "--worker=all"]
        commands.append(scp)
        requirement = wheel_name  # scp put it in the home directory, where the ssh command starts
    python, venv = shlex.quote(args.python), shlex.quote(args.venv)
    jax_requirement = f"jax[tpu]=={args.jax_version or pinned_jax_version()}"
    steps = [
        f"(command -v {python} >/dev/null || (sudo apt-get update -q && sudo apt-get install -y -q {python} "
        f"{python}-venv))",
        f"{python} -m venv {venv}",
        f"{venv}/bin/pip install -q --upgrade pip",
        f"{venv}/bin/pip install {shlex.quote(jax_requirement)} {shlex.quote(requirement)}",
    ]
    commands.append(on_workers(args, "all", " && ".join(steps)))
    return commands


def train_commands(args: argparse.Namespace) -> list[list[str]]:
    """The training command on every worker, detached (nohup, all streams redirected) so ssh returns;
    each worker writes its own log file on its own disk."""
    trainer = train_argv(f"{args.venv}/bin/python", args.gin_file, args.model_dir, args.trainer_flags)
    log = shlex.quote(args.log_file)
    remote = f"nohup {shlex.join(trainer)} > {log} 2>&1 < /dev/null &"
    return [on_workers(args, "all", remote)]


def logs_commands(args: argparse.Namespace) -> list[list[str]]:
    return [on_workers(args, args.worker, f"tail -n 200 -f {shlex.quote(args.log_file)}")]


def stop_commands(args: argparse.Namespace) -> list[list[str]]:
    """SIGTERM to the trainer on every worker: it saves a checkpoint and exits. A worker with no trainer
    running is not an error (`|| true`), so a half-stopped slice can be stopped again."""
    remote = f"pkill -TERM -f {shlex.quote(TRAINER_PROCESS_PATTERN)} || true"
    return [on_workers(args, "all", remote)]


def delete_commands(args: argparse.Namespace) -> list[list[str]]:
    return [gcloud("delete", args, "--quiet")]


COMMANDS = {
    "create": create_commands,
    "install": install_commands,
    "train": train_commands,
    "logs": logs_commands,
    "stop": stop_commands,
    "delete": delete_commands,
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("name", help="the TPU VM (slice) name")
    common.add_argument("--zone", required=True, help="e.g. us-central2-b")
    common.add_argument("--project", help="Google Cloud project (default: gcloud's configured one)")
    common.add_argument("--dry_run", action="store_true", help="print the gcloud command lines, run nothing")

    parser = argparse.ArgumentParser(
        prog="python -m simvlm_jax.launch.tpu_vm", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    verbs = parser.add_subparsers(dest="command", required=True)
    create = verbs.add_parser("create", parents=[common], help="create the TPU VM slice", allow_abbrev=False)
    create.add_argument("--accelerator_type", required=True, help="e.g. v4-128, v5litepod-256, v5p-128, v6e-256")
    create.add_argument("--version", help="TPU software version (default: the one for the accelerator's generation)")
    capacity = create.add_mutually_exclusive_group()
    capacity.add_argument("--spot", action="store_true", help="Spot capacity (cheaper, can be reclaimed)")
    capacity.add_argument("--preemptible", action="store_true", help="preemptible capacity (older form of spot)")

    install = verbs.add_parser("install", parents=[common], help="install jax[tpu] and simvlm-jax", allow_abbrev=False)
    source = install.add_mutually_exclusive_group(required=True)
    source.add_argument("--package", help="a pip requirement, e.g. git+https://github.com/OWNER/simvlm-jax@TAG")
    source.add_argument("--wheel", help="a local wheel (python -m build --wheel), copied to every worker")
    install.add_argument("--jax_version", help="jax[tpu] version (default: the version simvlm-jax pins)")
    install.add_argument("--python", default="python3.11", help="Python on the workers (simvlm-jax needs 3.11)")
    install.add_argument("--venv", default=DEFAULT_VENV, help="venv path on the workers (relative: to home)")

    train = verbs.add_parser("train", parents=[common], help="start training on every worker", allow_abbrev=False)
    add_train_flags(train)
    train.add_argument("--venv", default=DEFAULT_VENV, help="the venv `install` made")
    train.add_argument("--log_file", default=DEFAULT_LOG_FILE, help="log file on each worker")

    logs = verbs.add_parser("logs", parents=[common], help="follow one worker's log", allow_abbrev=False)
    logs.add_argument("--worker", default="0", help="worker index")
    logs.add_argument("--log_file", default=DEFAULT_LOG_FILE)

    verbs.add_parser("stop", parents=[common], help="SIGTERM the trainer on every worker", allow_abbrev=False)
    verbs.add_parser("delete", parents=[common], help="delete the TPU VM slice", allow_abbrev=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parse_launcher_args(parser, argv, passthrough=True)
    if args.trainer_flags and args.command != "train":
        parser.error(f"trainer flags are for `train` only: {' '.join(args.trainer_flags)}")
    run_commands(COMMANDS[args.command](args), args.dry_run)


if __name__ == "__main__":
    main()
