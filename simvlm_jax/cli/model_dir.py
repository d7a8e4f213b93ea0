"""Rebuild a trained SimVLM model from its model directory (eval, infer, caption).

    model, lengths = load_model(model_dir)               # model_config.json, else config.gin
    params = checkpoints.load_params(checkpoint_dir)     # checkpoint_<step> (or a model dir: newest)

`python -m simvlm_jax.train` writes the model's configuration in plain JSON
(`<model_dir>/model_config.json`, see `simvlm_jax.model.model_config`): the model is rebuilt from it
without gin. A model dir without it (written before it existed, or by T5X) is read from its
`config.gin`, which replaces gin's global configuration.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any, Mapping, Optional

from absl import logging


@dataclasses.dataclass
class Restored:
    """A trained model ready for inference: eval's and infer's common set-up."""

    model: Any
    params: Any
    lengths: dict[str, int]  # the task feature lengths to use
    step: int  # the checkpoint's step


def restore_for_inference(
    checkpoint_path: str,
    mixture_or_task_name,
    task_feature_lengths: Optional[Mapping[str, int]],
    module: Optional[str],
    split: str,
) -> Restored:
    """Imports the task module (and the training run's, from its config.gin), rebuilds the model of
    `checkpoint_path`'s model dir, checks it against the tasks (feature lengths default to the training
    run's) and checks that every task can read `split` (its raw files found and well formed, its TFDS data
    prepared), then loads the parameters. Raises ConfigError (or FileNotFoundError) before any parameter is
    read when something does not fit."""
    from simvlm_jax.data import loader
    from simvlm_jax.training import checkpoints, config_checks

    try:
        checkpoint_dir = checkpoints.resolve_checkpoint_path(checkpoint_path)
        model_dir = checkpoints.model_dir_of(checkpoint_dir)
        loader.import_task_module(module)
        recorded = recorded_task_module(model_dir)
        if recorded and recorded != module:  # the run's own tasks, found without naming their module again
            try:
                loader.import_task_module(recorded)
            except ModuleNotFoundError as error:  # only needed when the task lives there: checked just below
                logging.warning("The training run's task module could not be imported: %s", error)
        model, trained_lengths = load_model(model_dir)
        lengths = dict(task_feature_lengths or trained_lengths)
        config_checks.check_inference_config(model, lengths, mixture_or_task_name)
        config_checks.check_data_prepared(mixture_or_task_name, split)
    except (FileNotFoundError, ModuleNotFoundError) as error:  # a path or module named by the user
        raise config_checks.ConfigError(str(error)) from None
    # A model dir's newest checkpoint deleted since (a training run's keep-N): the newest one left is read.
    read_from = (
        checkpoint_path if checkpoint_dir != checkpoint_path and os.path.isdir(checkpoint_path) else checkpoint_dir
    )
    checkpoint_dir, params = checkpoints.load_verified_params(read_from)
    step = int(os.path.basename(os.path.normpath(checkpoint_dir)).split("_")[-1])
    return Restored(model, params, lengths, step)


_TASK_MODULE_LINE = re.compile(r"^MIXTURE_OR_TASK_MODULE\s*=\s*['\"]([\w.]+)['\"]\s*$", re.MULTILINE)


def recorded_task_module(model_dir: str) -> Optional[str]:
    """The MIXTURE_OR_TASK_MODULE the training run used, from its `config.gin` (None if not recorded): eval
    and infer import it, so a run's own tasks are found without naming the module again."""
    try:
        with open(os.path.join(model_dir, "config.gin")) as f:
            found = _TASK_MODULE_LINE.search(f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def load_model(model_dir: str) -> tuple[Any, Mapping[str, int]]:
    """(SimVLMModel, TASK_FEATURE_LENGTHS) of the model trained in `model_dir`."""
    from simvlm_jax.model import model_config

    recorded = model_config.read(model_dir)
    if recorded is not None:
        return recorded
    return load_model_from_config(model_dir)


def load_model_from_config(model_dir: str) -> tuple[Any, Mapping[str, int]]:
    """(SimVLMModel, TASK_FEATURE_LENGTHS) built from `<model_dir>/config.gin`.

    The global gin config is replaced by the one read here (it is not finalized).
    """
    import gin

    from simvlm_jax.training.loop import train

    config_path = os.path.join(model_dir, "config.gin")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{config_path} not found: --checkpoint must be a model directory written by "
            "`python -m simvlm_jax.train` (or one of its checkpoint_<step> folders)."
        )
    # The config says `import __main__ as train_script` and binds `train_script.train.*`, as under
    # `python -m simvlm_jax.train`; give whatever __main__ is now a `train` for those bindings.
    main_module = sys.modules["__main__"]
    if not hasattr(main_module, "train"):
        setattr(main_module, "train", train)
    # Not skip_unknown=True: under dynamic registration gin then leaves every `@module.fn()` reference
    # an unresolvable placeholder. The config came from this code base, so all of it is known.
    with gin.unlock_config():
        gin.clear_config(clear_constants=False)
        try:
            gin.parse_config_file(config_path, skip_unknown=False)
        except (ImportError, ValueError, KeyError) as e:
            raise ValueError(f"cannot parse {config_path}: {e}") from e
    try:
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    except ValueError as e:
        raise ValueError(f"{config_path} does not bind the MODEL macro: {e}") from e
    try:
        lengths = dict(gin.query_parameter("%TASK_FEATURE_LENGTHS"))
    except ValueError:
        lengths = {}
    if "image" not in lengths:
        lengths["image"] = int(model.module.config.image_size)
    return model, lengths
