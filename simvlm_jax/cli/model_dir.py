"""Rebuild a trained SimVLM model from its model directory's config.gin (eval, infer, caption).

    model, lengths = load_model_from_config(model_dir)   # from <model_dir>/config.gin
    params = checkpoints.load_params(checkpoint_dir)     # checkpoint_<step> (or a model dir: newest)

`python -m simvlm_jax.train` writes the operative gin config as `<model_dir>/config.gin`; re-parsing it
gives back the exact model (network size, vocabulary) the checkpoint was trained with.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping


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
