"""The launchers (simvlm_jax.launch): the gcloud command lines of every tpu_vm subcommand and the sbatch
script of slurm, read back the way a shell reads them. No network, gcloud or SLURM: the dry runs are
parsed with shlex, and the SLURM script runs under fake `scontrol`, `srun` and `python` programs."""

import ast
import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from simvlm_jax.launch import slurm, tpu_vm
from tests.helpers import REPO_ROOT

TPU = ["my-slice", "--zone=us-central2-b"]
GCLOUD_SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-slice", "--zone=us-central2-b"]
MODEL_DIR = "gs://bucket/runs/base"
TRAIN_FLAGS = ["--gin_file=gin/simvlm_base.gin", "--gin_file=runs/pretrain.gin", f"--model_dir={MODEL_DIR}"]
# As the user's shell hands them over: --gin.MIXTURE_OR_TASK_NAME="'cc3m'" arrives with its inner quotes.
PASSED_THROUGH = ["--gin.TRAIN_STEPS=1000", "--gin.MIXTURE_OR_TASK_NAME='cc3m'"]
EXPECTED_TRAINER_FLAGS = [
    "--gin_file=gin/simvlm_base.gin",
    "--gin_file=runs/pretrain.gin",
    f"--gin.MODEL_DIR='{MODEL_DIR}'",
    *PASSED_THROUGH,
]


def dry_run_lines(capsys, *argv: str) -> list[list[str]]:
    """Each printed line of `tpu_vm ARGV --dry_run`, split as a shell splits it."""
    tpu_vm.main([*argv, "--dry_run"])
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def remote_command(argv: list[str]) -> str:
    (command,) = [arg.removeprefix("--command=") for arg in argv if arg.startswith("--command=")]
    return command


def fake_program(folder, name: str, body: str) -> None:
    path = folder / name
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


# --- Cloud TPU VM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accelerator, runtime",
    [
        ("v4-128", "tpu-ubuntu2204-base"),
        ("v5litepod-256", "v2-alpha-tpuv5-lite"),
        ("v5p-128", "v2-alpha-tpuv5"),
        ("v6e-256", "v2-alpha-tpuv6e"),
    ],
)
def test_create_picks_the_runtime_of_the_generation(capsys, accelerator, runtime):
    (argv,) = dry_run_lines(capsys, "create", *TPU, f"--accelerator_type={accelerator}", "--spot", "--project=p1")
    assert argv == [
        *["gcloud", "compute", "tpus", "tpu-vm", "create", "my-slice", "--zone=us-central2-b", "--project=p1"],
        f"--accelerator-type={accelerator}",
        f"--version={runtime}",
        "--spot",
    ]


def test_create_takes_an_explicit_runtime_and_preemptible(capsys):
    (argv,) = dry_run_lines(capsys, "create", *TPU, "--accelerator_type=v4-8", "--version=tpu-vm-base", "--preemptible")
    assert argv[-3:] == ["--accelerator-type=v4-8", "--version=tpu-vm-base", "--preemptible"]
    assert "--spot" not in argv


def test_create_refuses_an_unknown_generation_without_version():
    with pytest.raises(SystemExit, match="pass --version"):
        tpu_vm.main(["create", *TPU, "--accelerator_type=v9x-8", "--dry_run"])


def test_install_from_a_package_pins_jax_on_every_worker(capsys):
    with open(os.path.join(REPO_ROOT, "setup.py")) as f:  # the pin as written in setup.py's install_requires
        strings = [n.value for n in ast.walk(ast.parse(f.read())) if isinstance(n, ast.Constant)]
    jax_pin = next(s for s in strings if isinstance(s, str) and s.startswith("jax=="))
    package = "git+https://github.com/owner/simvlm-jax@v0.1.0"
    (argv,) = dry_run_lines(capsys, "install", *TPU, f"--package={package}")
    assert argv[:7] == GCLOUD_SSH and "--worker=all" in argv
    steps = remote_command(argv).split(" && ")
    assert "python3.11 -m venv simvlm-venv" in steps
    assert shlex.split(steps[-1]) == ["simvlm-venv/bin/pip", "install", f"jax[tpu]{jax_pin[3:]}", package]


def test_install_from_a_wheel_copies_it_to_every_worker_first(capsys):
    scp, ssh = dry_run_lines(capsys, "install", *TPU, "--wheel=dist/simvlm_jax-0.1.0-py3-none-any.whl")
    assert scp == [
        *["gcloud", "compute", "tpus", "tpu-vm", "scp", "dist/simvlm_jax-0.1.0-py3-none-any.whl", "my-slice:"],
        *["--zone=us-central2-b", "--worker=all"],
    ]
    assert "--worker=all" in ssh
    assert shlex.split(remote_command(ssh).split(" && ")[-1])[-1] == "simvlm_jax-0.1.0-py3-none-any.whl"


def test_train_runs_the_same_detached_command_on_every_worker(capsys):
    (argv,) = dry_run_lines(capsys, "train", *TPU, *TRAIN_FLAGS, *PASSED_THROUGH)
    assert argv[:7] == GCLOUD_SSH and "--worker=all" in argv
    words = shlex.split(remote_command(argv))  # what the worker's shell runs
    assert words[:2] == ["nohup", "simvlm-venv/bin/python"]
    assert words[-6:] == [">", "simvlm_train.log", "2>&1", "<", "/dev/null", "&"]
    # The trainer's argv arrives intact, MODEL_DIR's inner quotes (gin's string literal) included.
    assert words[2:-6] == ["-m", "simvlm_jax.train", *EXPECTED_TRAINER_FLAGS]


def test_logs_follows_one_worker(capsys):
    (argv,) = dry_run_lines(capsys, "logs", *TPU)
    assert argv[:7] == GCLOUD_SSH and "--worker=0" in argv
    assert shlex.split(remote_command(argv)) == ["tail", "-n", "200", "-f", "simvlm_train.log"]
    (argv,) = dry_run_lines(capsys, "logs", *TPU, "--worker=3")
    assert "--worker=3" in argv


def test_stop_sends_sigterm_on_every_worker_without_matching_itself(capsys):
    (argv,) = dry_run_lines(capsys, "stop", *TPU)
    assert argv[:7] == GCLOUD_SSH and "--worker=all" in argv
    command = remote_command(argv)
    assert shlex.split(command) == ["pkill", "-TERM", "-f", "simvlm_jax[.]train", "||", "true"]
    assert "simvlm_jax.train" not in command  # the ssh shell's own command line must not match the pattern


def test_delete_is_quiet(capsys):
    (argv,) = dry_run_lines(capsys, "delete", *TPU)
    assert argv == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "my-slice", "--zone=us-central2-b", "--quiet"]


def test_unknown_flags_are_refused():
    with pytest.raises(SystemExit):
        tpu_vm.main(["train", *TPU, *TRAIN_FLAGS, "--gin_fille=x.gin", "--dry_run"])
    with pytest.raises(SystemExit):
        tpu_vm.main(["delete", *TPU, "--gin.TRAIN_STEPS=1", "--dry_run"])


def test_a_missing_gcloud_is_reported_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="`gcloud` is not on PATH"):
        tpu_vm.main(["delete", *TPU])


def test_without_dry_run_the_printed_commands_are_run(tmp_path, monkeypatch, capsys):
    fake_program(tmp_path, "gcloud", f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    (printed,) = dry_run_lines(capsys, "train", *TPU, *TRAIN_FLAGS)
    tpu_vm.main(["train", *TPU, *TRAIN_FLAGS])
    assert ["gcloud", *(tmp_path / "argv").read_text().splitlines()] == printed


# --- SLURM ----------------------------------------------------------------------------------------------

SLURM_FLAGS = ["--nodes=2", "--gpus_per_node=4", "--partition=gpu", "--account=proj", "--port=23456"]


def slurm_dry_run(capsys, *extra: str) -> tuple[str, list[str]]:
    slurm.main([*SLURM_FLAGS, *TRAIN_FLAGS, *PASSED_THROUGH, *extra, "--dry_run"])
    captured = capsys.readouterr()
    return captured.out, shlex.split(captured.err)


def test_sbatch_lines_and_submit_command(capsys):
    script, submit = slurm_dry_run(capsys)
    assert script.startswith("#!/bin/bash\n")
    assert [line for line in script.splitlines() if line.startswith("#SBATCH")] == [
        "#SBATCH --job-name=simvlm",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --time=24:00:00",
        "#SBATCH --output=slurm_logs/%x-%j.out",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
    ]
    assert submit == ["sbatch", "slurm_logs/simvlm.sbatch"]


def test_every_task_gets_its_own_process_index(capsys, tmp_path):
    """The script under fake SLURM programs: srun runs its command as tasks 0 and 1 of 2."""
    script, _ = slurm_dry_run(capsys, "--setup=export SETUP_RAN=yes")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_program(bin_dir, "scontrol", '#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && tr , "\\n" <<< "$3"\n')
    fake_program(bin_dir, "srun", '#!/bin/bash\nshift\nfor i in 0 1; do SLURM_PROCID=$i "$@" || exit 1; done\n')
    fake_program(
        bin_dir,
        "python",
        f"#!{sys.executable}\nimport json, os, sys\nprint(json.dumps([os.environ['SETUP_RAN'], *sys.argv[1:]]))\n",
    )
    (tmp_path / "job.sbatch").write_text(script)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-a7,gpu-b3",
        "SLURM_NTASKS": "2",
    }
    run = subprocess.run(["bash", str(tmp_path / "job.sbatch")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "coordinator: gpu-a7:23456, nodes: gpu-a7,gpu-b3"
    invocations = [json.loads(line) for line in lines[1:]]
    assert invocations == [
        [
            "yes",
            *["-m", "simvlm_jax.train", *EXPECTED_TRAINER_FLAGS],
            *["--coordinator_address=gpu-a7:23456", "--process_count=2", f"--process_index={index}"],
        ]
        for index in (0, 1)
    ]


def test_without_dry_run_the_script_is_written_and_submitted(tmp_path, monkeypatch):
    fake_program(tmp_path, "sbatch", f'#!/bin/sh\ncp "$1" {tmp_path}/submitted\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    log_dir = tmp_path / "logs"
    slurm.main([*SLURM_FLAGS, *TRAIN_FLAGS, f"--log_dir={log_dir}", "--job_name=run1"])
    assert (log_dir / "run1.sbatch").read_text() == (tmp_path / "submitted").read_text()
    assert f"#SBATCH --output={log_dir}/%x-%j.out" in (tmp_path / "submitted").read_text()


def test_a_missing_sbatch_is_reported_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match="`sbatch` is not on PATH"):
        slurm.main([*TRAIN_FLAGS, f"--log_dir={tmp_path}"])
