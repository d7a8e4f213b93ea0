"""Helpers shared by the tests: paths, running the entry points, gin as under them, a tiny model factory."""

import contextlib
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO_ROOT, "gin")  # the gin files (installed as simvlm_jax/gin)
# The downstream fine-tuning gins, as paths relative to GIN_DIR ("finetune/vqa_v2.gin", ...).
FINETUNE_GINS = sorted(
    os.path.join("finetune", name) for name in os.listdir(os.path.join(GIN_DIR, "finetune")) if name.endswith(".gin")
)


def run_module(
    module: str, *args: str, timeout: int = 600, env: dict | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess:
    """Runs `python -m module args...` from outside the repository (as an installed user would; `cwd`: from
    there instead); returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def inspect_checkpoint(*args: str) -> subprocess.CompletedProcess:
    """`python -m simvlm_jax.inspect_checkpoint args...`, run in this process (its main), as a finished process."""
    import io

    from simvlm_jax.inspect_checkpoint import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["inspect_checkpoint", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def entry_point_gin():
    """Gin as under `python -m simvlm_jax.train` (or eval / infer): `__main__` has the entry functions that
    the gin files bind as `train_script.train` etc.; the global gin config is cleared before and after."""
    import gin

    from simvlm_jax.eval import evaluate
    from simvlm_jax.infer import infer
    from simvlm_jax.training.loop import train

    main_module = sys.modules["__main__"]
    added = [name for name in ("train", "evaluate", "infer") if not hasattr(main_module, name)]
    for name, fn in (("train", train), ("evaluate", evaluate), ("infer", infer)):
        if name in added:
            setattr(main_module, name, fn)
    gin.clear_config(clear_constants=False)
    gin.enter_interactive_mode()
    try:
        yield
    finally:
        gin.clear_config(clear_constants=False)
        gin.exit_interactive_mode()
        for name in added:
            delattr(main_module, name)


# ----------------------------------------------------------------------------------------------------
# A tiny model (vocabulary 50, 32x32 images) and a batch for it: B examples, one of them text-only.
# ----------------------------------------------------------------------------------------------------
B, L_ENC, L_DEC, S = 2, 5, 6, 32


def make_model(**config_overrides):
    import optax
    import seqio

    from simvlm_jax.model import simvlm_model as models
    from simvlm_jax.network import SimVLMNetwork, tiny_config

    # The tiny preset with a narrow stem (width 8): the behaviour under test does not depend on its width,
    # and it compiles and runs faster.
    config = tiny_config(**{"vocab_size": 50, "image_size": S, "stem_width": 8, **config_overrides})
    vocab = seqio.PassThroughVocabulary(size=50, eos_id=1)
    return models.SimVLMModel(SimVLMNetwork(config), vocab, vocab, optax.adamw(1e-3))


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(2, 50, size=(B, L_DEC)).astype(np.int32)
    targets[0, 4:] = 0  # padding
    targets[0, 3] = 1  # EOS
    weights = (targets > 0).astype(np.int32)
    return {
        "encoder_image": rng.normal(size=(B, S, S, 3)).astype(np.float32),
        "encoder_image_mask": np.array([1.0, 0.0], np.float32),
        "encoder_input_tokens": np.array([[5, 6, 0, 0, 0], [7, 8, 9, 0, 0]], np.int32),
        "decoder_target_tokens": targets,
        "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
        "decoder_loss_weights": weights,
    }


def train_in_process(*args: str):
    """`python -m simvlm_jax.train args...` run in this process (what the command runs after reading its
    flags: `configure_and_train`), for tests of the loop's behaviour that need no process of their own.
    Returns train()'s (step, train state)."""
    from simvlm_jax import train as train_entry
    from simvlm_jax.cli import gin_flags

    rewritten = gin_flags.rewrite_gin_args(["train", *args])[1:]
    files = [a.split("=", 1)[1] for a in rewritten if a.startswith("--gin_file=")]
    bindings = [a.split("=", 1)[1] for a in rewritten if a.startswith("--gin_bindings=")]
    assert len(files) + len(bindings) == len(rewritten), rewritten
    with entry_point_gin():
        return train_entry.configure_and_train(files, bindings, finalize_config=False)


def postprocessed_targets(task, examples: list) -> list:
    """What seqio's Evaluator scores predictions against: the task's postprocessed pretokenized targets."""
    postprocess = task.postprocess_fn or (lambda text, example=None, is_target=False: text)
    return [postprocess(ex["targets_pretokenized"], example=ex, is_target=True) for ex in examples]


def finetune_tiny_in_process(gin_file: str, checkpoint: str, run_dir: str, task: str) -> dict:
    """A tiny downstream gin (gin/finetune/<dataset>_tiny.gin), shortened to 2 steps from `checkpoint` (the
    session's random tiny checkpoint: no optimizer state, restored as parameters only), decoding and scoring
    at step 3; returns the metrics it wrote for `task` (inference_eval/<task>-metrics.jsonl)."""
    import json

    step, _ = train_in_process(
        f"--gin_file={gin_file}",
        f"--gin.INITIAL_CHECKPOINT_PATH={checkpoint}",
        f"--gin.MODEL_DIR={run_dir}",
        "--gin.INITIAL_STEP=1",
        "--gin.TRAIN_STEPS=3",
        "--gin.EVAL_PERIOD=2",
        "--gin.CHECKPOINT_PERIOD=2",
        "--gin.BATCH_SIZE=2",
        "--gin.EVAL_STEPS=1",
        "--gin.utils.RestoreCheckpointConfig.assignment_map=((r'state/.*', None),)",
    )
    assert step == 3
    with open(os.path.join(run_dir, "inference_eval", f"{task}-metrics.jsonl")) as f:
        return json.loads(f.read().splitlines()[-1])
