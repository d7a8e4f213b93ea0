"""Multi-process training on JAX's own runtime, on this machine: 2 processes with a localhost coordinator
and 4 emulated CPU devices each form one 8-device mesh (what a 2-host pod slice or GPU cluster runs).

- the 2-process run reaches the loss and parameters of 1 process with 8 devices, and its evaluations run;
- the processes agree on a clock-drawn seed;
- a process killed mid-run ends the other one (with JAX's "another task died" error, not a hang), and the
  same command on both resumes from the newest checkpoint;
- a 2-process checkpoint resumes in 1 process (with a fresh data iterator, said so).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from simvlm_jax.cli import distributed
from simvlm_jax.training.config_checks import ConfigError
from tests.helpers import REPO_ROOT

# Deterministic data (easy-VQA questions in file order: no shuffle, no random prefix split), so that both
# layouts see the same 8 examples in every global batch; SGD, so that parameters compare closely (Adam turns
# rounding noise in near-zero gradients into full-size steps).
SGD_GIN = os.path.join(tempfile.mkdtemp(prefix="simvlm_multiprocess_"), "sgd.gin")
with open(SGD_GIN, "w") as _f:
    _f.write(
        "from __gin__ import dynamic_registration\nimport optax\nfrom simvlm_jax.t5x_compat import optimizers\n"
        "optimizers.chain.transformations = [@optax.sgd()]\noptax.sgd.learning_rate = 0.5\n"
    )
RUN = [
    "--gin_file=gin/tiny_cpu.gin",
    f"--gin_file={SGD_GIN}",
    "--gin.MIXTURE_OR_TASK_NAME='easy_vqa'",
    "--gin.SHUFFLE_TRAIN_EXAMPLES=False",
    "--gin.BATCH_SIZE=8",
    "--gin.CHECKPOINT_PERIOD=3",
    "--gin.train.stats_period=1",
]
NO_EVALUATIONS = ["--gin.train.infer_eval_dataset_cfg=None", "--gin.train.train_eval_dataset_cfg=None"]
SMALL_EVALUATIONS = [  # the decoding evaluation over a 48-image split (the tests' embedded data)
    "--gin.EVAL_STEPS=1",
    "--gin.infer_eval/utils.DatasetConfig.mixture_or_task_name='embedded_heldout_captioning'",
    "--gin.infer_eval/utils.DatasetConfig.batch_size=16",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(args, devices: int, log_path: str, rank=None, port=None) -> subprocess.Popen:
    command = [sys.executable, "-m", "simvlm_jax.train", *args]
    if rank is not None:
        command += [f"--coordinator_address=localhost:{port}", "--process_count=2", f"--process_index={rank}"]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=tempfile.gettempdir(), stdout=log, stderr=subprocess.STDOUT, env=env)


def _run_pair(args, log_dir: str, name: str, timeout=600) -> list[str]:
    """Both processes of a 2-process run to their end; returns their outputs (asserting exit status 0)."""
    port = _free_port()
    logs = [os.path.join(log_dir, f"{name}_{rank}.txt") for rank in (0, 1)]
    processes = [_start(args, 4, logs[rank], rank, port) for rank in (0, 1)]
    outputs = []
    for process, log in zip(processes, logs):
        process.wait(timeout=timeout)
        outputs.append(open(log).read())
        assert process.returncode == 0, outputs[-1][-3000:]
    return outputs


def _losses(output: str) -> list[float]:
    return [float(line.split("loss ")[1].split()[0]) for line in output.splitlines() if line.startswith("step ")]


def _params(checkpoint: str) -> dict:
    import flax

    from simvlm_jax.training import checkpoints

    return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(checkpoints.load_params(checkpoint)).items()}


def test_two_processes_train_as_one_process_with_eight_devices(tmp_path, embedded_data_dir):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    steps = ["--gin.TRAIN_STEPS=3", "--gin.EVAL_PERIOD=3"]
    single = _start([*RUN, *steps, *NO_EVALUATIONS, f"--gin.MODEL_DIR='{one}'"], 8, str(tmp_path / "one.txt"))
    pair = _run_pair([*RUN, *steps, *SMALL_EVALUATIONS, f"--gin.MODEL_DIR='{two}'"], str(tmp_path), "two")
    single.wait(timeout=600)
    single_output = open(tmp_path / "one.txt").read()
    assert single.returncode == 0, single_output[-3000:]

    # One mesh, one run: process 0 reports, both train; the same losses and parameters as one process.
    assert len(_losses(pair[0])) == 3 and _losses(pair[1]) == []
    np.testing.assert_allclose(_losses(pair[0]), _losses(single_output), rtol=1e-4)
    reference, trained = _params(f"{one}/checkpoint_3"), _params(f"{two}/checkpoint_3")
    assert reference.keys() == trained.keys()
    # SGD at 0.5 moves parameters by ~1e-2 in these 3 steps, and a layout error (a lost or doubled gradient
    # reduction) by as much. The two layouts sum the 8 devices' gradients in different orders, and the stem's
    # GroupNorm amplifies the rounding: ~1e-7 under load, 3.2e-6 and 1.5e-5 (stem norm3 biases) in two idle
    # runs, at this test's own commit 33101dd as well as after it. 1e-4 stays 100 x below a real error.
    for name, value in reference.items():
        np.testing.assert_allclose(trained[name], value, atol=1e-4, err_msg="/".join(name))
    assert _losses(single_output)[0] - _losses(single_output)[-1] > 1.0  # the 3 steps did train
    # Each process saved its own data iterator; the state was written cooperatively (one checkpoint).
    dataset_files = sorted(os.listdir(f"{two}/checkpoint_3/dataset"))
    assert [f for f in dataset_files if f.endswith(".index")] == [
        "train_ds-000-of-002.index",
        "train_ds-001-of-002.index",
    ]
    # The evaluations ran on the 8-device mesh: teacher-forced per task with samples, and decoding scored
    # once (process 0 writes inference_eval/ and the summaries).
    assert "eval embedded_scenes_captioning @ 3" in pair[0] and "greedy:" in pair[0]
    assert "infer_eval embedded_heldout_captioning @ 3: bleu_4" in pair[0]
    assert "infer_eval" not in pair[1].replace("'logger_cls' is empty", "")
    with open(f"{two}/inference_eval/embedded_heldout_captioning-metrics.jsonl") as f:
        assert len(f.readlines()) == 1

    # The 2-process checkpoint continues in 1 process on 8 devices (another process count: fresh data iterator).
    more = _start(
        [*RUN, "--gin.TRAIN_STEPS=4", *NO_EVALUATIONS, f"--gin.MODEL_DIR='{two}'"], 8, str(tmp_path / "c.txt")
    )
    more.wait(timeout=600)
    continued = open(tmp_path / "c.txt").read()
    assert more.returncode == 0, continued[-3000:]
    assert "Restored" in continued and "checkpoint_3" in continued and "saved by 2 processes" in continued
    assert os.path.isdir(f"{two}/checkpoint_4")


def test_a_killed_process_ends_the_run_and_the_same_command_resumes(tmp_path, embedded_data_dir):
    model_dir = str(tmp_path / "run")
    args = [*RUN, "--gin.TRAIN_STEPS=12", "--gin.EVAL_PERIOD=100", *NO_EVALUATIONS, f"--gin.MODEL_DIR='{model_dir}'"]
    port = _free_port()
    logs = [str(tmp_path / f"first_{rank}.txt") for rank in (0, 1)]
    processes = [_start(args, 4, logs[rank], rank, port) for rank in (0, 1)]
    deadline = time.monotonic() + 600
    while not os.path.isdir(f"{model_dir}/checkpoint_3") and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), open(logs[0]).read()[-3000:]
        time.sleep(0.5)
    assert os.path.isdir(f"{model_dir}/checkpoint_3")
    processes[1].send_signal(signal.SIGKILL)  # a host disappears mid-run
    killed_at = time.monotonic()
    processes[0].wait(timeout=distributed.HEARTBEAT_TIMEOUT_S + 120)  # no hang: ends within the heartbeat bound
    survivor = open(logs[0]).read()
    assert processes[0].returncode != 0 and "Finished" not in survivor
    assert "another task died" in survivor, survivor[-3000:]  # JAX's coordination service says why
    assert time.monotonic() - killed_at < distributed.HEARTBEAT_TIMEOUT_S + 120

    outputs = _run_pair(args, str(tmp_path), "again")  # the same command on both processes
    assert "Restored" in outputs[0] and "(step " in outputs[0]
    assert "Finished at step 12" in outputs[0]
    assert os.path.isdir(f"{model_dir}/checkpoint_12")


SEED_SCRIPT = """
import sys, time
from simvlm_jax.cli import distributed
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
time.sleep(1.5 * int(sys.argv[2]))  # the processes read the clock at different times
from simvlm_jax.training import multihost
print("SEED", multihost.agreed_seed(None), multihost.agreed_seed(7), flush=True)
"""


def test_processes_agree_on_a_seed_drawn_from_the_clock():
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "PYTHONPATH": REPO_ROOT}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SEED_SCRIPT, f"localhost:{port}", str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in (0, 1)
    ]
    seeds = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        seeds.append(json.loads("[" + out.split("SEED ", 1)[1].strip().replace(" ", ",") + "]"))
    assert seeds[0] == seeds[1] and seeds[0][1] == 7


@pytest.mark.parametrize(
    "flags, environ, expected",
    [
        ((None, None, None, False), {}, (False, None)),
        (("h:1", 2, 1, False), {}, (True, "h:1")),
        (("h:1", 2, 1, True), {}, (True, "h:1")),  # T5X: --multiprocess_gpu with the coordinator flags
        ((None, None, None, True), {}, (True, None)),  # --multiprocess_gpu alone: JAX's cluster detection
        ((None, None, None, False), {"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_ID": "0"}, (True, None)),
        ((None, None, None, False), {"SLURM_NTASKS": "4"}, (False, None)),  # the sbatch script, not a step
        ((None, None, None, False), {"SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_ID": "0"}, (False, None)),
        ((None, None, None, False), {"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, (True, None)),
    ],
)
def test_how_a_process_joins_the_run(flags, environ, expected):
    chosen = distributed.plan(*flags, environ=environ, tpu_vm=False)
    assert (chosen.initialize, chosen.coordinator_address) == expected


def test_a_cloud_tpu_vm_always_initialises_from_its_metadata():
    assert distributed.plan(None, None, None, False, environ={}, tpu_vm=True).initialize
    assert not distributed.on_cloud_tpu_vm()  # this test machine has no TPU


@pytest.mark.parametrize("flags", [("h:1", None, 0), (None, 2, 0), ("h:1", 2, 2)])
def test_incomplete_or_wrong_coordinator_flags_are_refused(flags):
    with pytest.raises(ConfigError, match="process"):
        distributed.plan(*flags, multiprocess_gpu=False, environ={})
