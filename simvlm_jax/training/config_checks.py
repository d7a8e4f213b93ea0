"""Configuration checks that run before anything is compiled, each failing with the problem and the fix.

    check_model_dir(model_dir, needed_bytes)      writable directory with room for a checkpoint
    check_feature_lengths(lengths, config)        text lengths fit the position tables
    check_image_size(image_size, config)          the stem tiles the image exactly
    check_vocabulary(vocabulary, config, name)    token ids fit the embedding table
    check_checkpoint_shapes(path, shapes)         a checkpoint to restore matches the model
    check_training_config(model, dataset_cfg)     train: all model-versus-data checks
    check_inference_config(model, lengths, task)  eval / infer: the same for a trained model

All raise `ConfigError` (a ValueError), whose message starts with what is wrong and ends with what to
set. Plain Python: gin is applied by the entry points, which call these with the configured values.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from simvlm_jax.data.raw_files import MalformedFileError

# Headroom over the estimated checkpoint size when checking free disk space (Orbax metadata, the
# data-iterator state, TensorBoard events).
DISK_HEADROOM = 1.5


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the problem and the fix."""


def check_model_dir(model_dir: str, needed_bytes: int = 0, what: str = "one checkpoint needs") -> None:
    """MODEL_DIR is a writable directory, or one that can be made, with at least `needed_bytes` free
    (`what` says what they are for, in the message).

    Nothing is created: a missing MODEL_DIR is judged by its nearest existing parent."""
    fix = "choose another directory with --gin.MODEL_DIR=..."
    existing = os.path.abspath(model_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing == os.path.abspath(model_dir) and not os.path.isdir(existing):
        raise ConfigError(f"MODEL_DIR {model_dir!r} is a file, not a directory; {fix}")
    if not os.path.isdir(existing):
        raise ConfigError(f"MODEL_DIR {model_dir!r} cannot be made: its parent {existing!r} is a file; {fix}")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write_test"):
            pass
    except OSError as error:
        raise ConfigError(
            f"MODEL_DIR {model_dir!r} is not writable ({error.strerror} in {existing}); {fix} or fix its permissions."
        ) from error
    if needed_bytes:
        free = shutil.disk_usage(existing).free
        wanted = int(needed_bytes * DISK_HEADROOM)
        if free < wanted:
            raise ConfigError(
                f"MODEL_DIR {model_dir!r} has {_mib(free)} free but {what} about "
                f"{_mib(wanted)}; free disk space, {fix}, or lower CHECKPOINTS_TO_KEEP."
            )


def state_bytes(shapes: Any) -> int:
    """Bytes of a tree of ShapeDtypeStructs (the train state a checkpoint holds)."""
    import jax

    return sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(shapes))


def check_feature_lengths(lengths: Mapping[str, int], config) -> None:
    """Text lengths of TASK_FEATURE_LENGTHS fit the network's position tables (max_text_length)."""
    for name in ("inputs", "targets"):
        if name not in lengths:
            raise ConfigError(
                f"TASK_FEATURE_LENGTHS has no {name!r} entry (got {dict(lengths)}); set e.g. "
                f"--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': 32, 'targets': 32, 'image': 224}}\"."
            )
        if int(lengths[name]) > config.max_text_length:
            raise ConfigError(
                f"TASK_FEATURE_LENGTHS[{name!r}]={lengths[name]} exceeds the model's max_text_length "
                f"{config.max_text_length} (its position table): lower it to at most {config.max_text_length}, "
                f"or raise network.SimVLMConfig.max_text_length (a new model; checkpoints will not restore)."
            )
    if int(lengths["targets"]) < 2:
        raise ConfigError(
            f"TASK_FEATURE_LENGTHS['targets']={lengths['targets']} leaves no room for a token and "
            "EOS: set it to 2 or more."
        )
    images = int(lengths.get("num_images", 1))
    if not 1 <= images <= config.max_images:
        raise ConfigError(
            f"TASK_FEATURE_LENGTHS['num_images']={images} but the model takes 1 to {config.max_images} images "
            f"per example: set network.SimVLMConfig.max_images = {max(images, 1)} (a new image-index table)."
        )


def check_image_size(image_size: Optional[int], config) -> None:
    """The image side is a positive multiple of the stem's stride (no ragged border tiles)."""
    if image_size is None:
        raise ConfigError(
            "TASK_FEATURE_LENGTHS has no 'image' entry: add the image side in pixels, e.g. "
            f"'image': {config.image_size}."
        )
    stride = config.stem_stride
    if image_size <= 0 or image_size % stride:
        lower = max(stride, image_size // stride * stride)
        raise ConfigError(
            f"TASK_FEATURE_LENGTHS['image']={image_size} cannot be tiled by the image stem, whose stride is "
            f"{stride} pixels (num_conv_blocks={config.num_conv_blocks}"
            f"{', patch_size=%d' % config.patch_size if config.num_conv_blocks == 0 else ''}): "
            f"use a multiple of {stride}, e.g. {lower} or {lower + stride}."
        )


# Presets trained at full scale: a vocabulary smaller than their table is refused unless the user says so.
FULL_SIZE_PRESETS = ("base", "large", "huge")


def check_vocabulary(vocabulary, config, name: str = "VOCABULARY", allow_size_mismatch: bool = False) -> None:
    """Every id of `vocabulary` has a row in the embedding table (vocab_size); for the full-size presets the
    sizes must agree (a 32k model on the 2,000-piece embedded vocabulary is almost surely a forgotten
    $SIMVLM_SPM_MODEL) unless `allow_size_mismatch`."""
    size = int(vocabulary.vocab_size)
    if size > config.vocab_size:
        raise ConfigError(
            f"{name} has {size} ids but the model's embedding table has vocab_size={config.vocab_size} rows; "
            f"set network.SimVLMConfig.vocab_size = {size} (or more), or use the vocabulary the model was "
            "built for."
        )
    if size < config.vocab_size and config.preset in FULL_SIZE_PRESETS and not allow_size_mismatch:
        raise ConfigError(
            f"{name} has {size} ids but SimVLM-{config.preset}'s embedding table has {config.vocab_size} rows "
            "(with $SIMVLM_SPM_MODEL unset the full-size gins fall back to the 2,000-piece embedded vocabulary). "
            f"Set $SIMVLM_SPM_MODEL to a {config.vocab_size}-piece SentencePiece model (python -m "
            f"simvlm_jax.data.vocabulary builds one), or set network.SimVLMConfig.vocab_size = {size}, or "
            "--gin.train.allow_vocabulary_size_mismatch=True if this is intended."
        )


def _same_pieces(first, second) -> bool:
    """Both are SentencePiece vocabularies over one model file (they may differ in extra_ids)."""
    files = [getattr(v, "sentencepiece_model_file", None) for v in (first, second)]
    return files[0] is not None and files[0] == files[1]


def check_task_vocabulary(task_vocabulary, model_vocabulary, task_name: str, embedding_rows: int | None = None) -> None:
    """The task tokenizes with the model's vocabulary: the same size and pieces, or the same SentencePiece
    model with other extra ids (e.g. span corruption's sentinels) when every id has an embedding row."""
    if task_vocabulary is None or model_vocabulary is None:
        return
    if task_vocabulary == model_vocabulary:
        return
    size = int(task_vocabulary.vocab_size)
    if _same_pieces(task_vocabulary, model_vocabulary) and (embedding_rows is None or size <= embedding_rows):
        return
    if size != int(model_vocabulary.vocab_size):
        raise ConfigError(
            f"Task {task_name!r} tokenizes with a vocabulary of {task_vocabulary.vocab_size} ids but the model's "
            f"VOCABULARY has {model_vocabulary.vocab_size}: register the task with the model's vocabulary "
            "(or set $SIMVLM_SPM_MODEL / VOCABULARY to the same SentencePiece model)."
        )


def check_checkpoint_shapes(path: str, expected: Mapping[str, Any], recorded_differences: Sequence[str] = ()) -> None:
    """The parameters stored at checkpoint `path` are exactly the model's: the same names, the same shapes
    (read from metadata only). A checkpoint with parameters the model lacks (e.g. a decoder layer more) is
    refused too: restoring it would drop them silently.

    `expected` maps '/'-joined parameter names to shapes. A different number of rows in the embedding table
    is reported as a vocabulary mismatch, since that is its usual cause. `recorded_differences`: how this
    model differs from the one recorded in the checkpoint's model dir (`model_config.differences`), named in
    the message.
    """
    stored = checkpoint_param_shapes(path)
    if stored is None:
        return
    embedding = [name for name in expected if name.endswith("shared_embedding/embedding")]  # [vocab, embed]
    for name in embedding:
        if name in stored and stored[name][0] != expected[name][0]:
            raise ConfigError(
                f"The checkpoint {path} was trained with a vocabulary of {stored[name][0]} ids "
                f"({name} {tuple(stored[name])}), but this model has {expected[name][0]} "
                f"({tuple(expected[name])}): use the checkpoint's VOCABULARY and network.SimVLMConfig.vocab_size "
                "(see its model dir's config.gin), or start from scratch in a new MODEL_DIR."
            )
    wrong = [
        f"{n}: checkpoint {tuple(stored[n])} vs model {tuple(expected[n])}"
        for n in sorted(expected)
        if n in stored and tuple(stored[n]) != tuple(expected[n])
    ]
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if wrong or missing or extra:
        details = "; ".join(
            wrong[:3]
            + [f"{n}: not in the checkpoint" for n in missing[:3]]
            + [f"{n}: not in the model" for n in extra[:3]]
        )
        recorded = (
            f" The run was recorded with another configuration: {', '.join(recorded_differences)}."
            if recorded_differences
            else ""
        )
        raise ConfigError(
            f"The checkpoint {path} does not fit this model ({len(wrong)} shape mismatch(es), {len(missing)} "
            f"missing and {len(extra)} extra parameter(s): {details}).{recorded} Use the network settings the run "
            "was trained with (its config.gin), a new MODEL_DIR, or a partial restore "
            "(utils.RestoreCheckpointConfig.assignment_map, docs/t5x.md)."
        )


def checkpoint_param_shapes(path: str) -> Optional[dict[str, tuple]]:
    """'/'-joined parameter name -> shape from a checkpoint's Orbax metadata, or None if unreadable."""
    import flax
    import orbax.checkpoint as ocp

    state_dir = os.path.join(os.path.abspath(path), "state")
    try:
        metadata = ocp.StandardCheckpointer().metadata(state_dir)
    except Exception:  # an older Orbax layout: leave the check to the restore itself
        return None
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, Mapping) or "target" not in tree:
        return None
    flat = flax.traverse_util.flatten_dict(dict(tree["target"]), sep="/")
    return {name: tuple(getattr(leaf, "shape", ())) for name, leaf in flat.items()}


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:,.1f} MiB"


def check_data_prepared(mixture_or_task, split: str) -> None:
    """Every task of `mixture_or_task` can read `split`: a TFDS dataset is prepared in its data dir (TFDS
    datasets that need a manual download, like C4 or LAION, are never fetched at run time), a source that
    prepares itself on first read (`prepare()`: the embedded data, the downstream datasets' official
    files) finds its files, and the split exists. A ConfigError names the task, the dataset and what to do."""
    import seqio

    for task in _tasks_of(mixture_or_task):
        source = task.source
        prepare = getattr(source, "prepare", None)
        if prepare is not None:
            try:
                prepare()
            except (FileNotFoundError, MalformedFileError) as error:
                raise ConfigError(f"Task {task.name!r} cannot read its data: {error}") from None
        elif isinstance(source, seqio.TfdsDataSource):
            builder = source.tfds_dataset.builder
            name = builder.info.full_name.rsplit("/", 1)[0]  # c4/en/3.1.0 -> c4/en
            if not builder.is_prepared():
                raise ConfigError(
                    f"Task {task.name!r} reads the TFDS dataset {builder.info.full_name!r}, which is not prepared "
                    f"in {builder.data_dir_root}: prepare it there (`tfds build {name}"
                    f" --data_dir={builder.data_dir_root}`, with its manual download where it needs one), or pass "
                    "--tfds_data_dir=DIR where it is prepared; or leave the task out of the mixture."
                )
        splits = list(source.splits or ())
        if splits and split not in splits:
            raise ConfigError(
                f"Task {task.name!r} has no {split!r} split (it has {', '.join(map(repr, splits))}): choose "
                "another task or mixture, or set the dataset config's split."
            )


def check_training_config(model, dataset_cfg, allow_vocabulary_size_mismatch: bool = False) -> None:
    """All model-versus-data checks for a DatasetConfig (its task module already imported)."""
    check_data_prepared(dataset_cfg.mixture_or_task_name, dataset_cfg.split)
    check_inference_config(model, dict(dataset_cfg.task_feature_lengths), dataset_cfg.mixture_or_task_name)
    config = model.module.config
    check_vocabulary(model.output_vocabulary, config, allow_size_mismatch=allow_vocabulary_size_mismatch)
    if model.input_vocabulary is not model.output_vocabulary:
        check_vocabulary(
            model.input_vocabulary, config, "the input VOCABULARY", allow_size_mismatch=allow_vocabulary_size_mismatch
        )


# Settings of T5X's configuration records that this trainer does not implement: the values it accepts
# (T5X's defaults) and why it takes no other.
_ONLY = {
    ("DatasetConfig", "pack"): ((False,), "SimVLM examples cannot be packed (an image belongs to one example)"),
    ("DatasetConfig", "use_custom_packing_ops"): ((False,), "examples are never packed"),
    ("DatasetConfig", "use_memory_cache"): ((True,), "SeqIO decides itself which small datasets to cache"),
    ("SaveCheckpointConfig", "dtype"): (
        ("float32", None),
        "checkpoints keep float32 parameters so that a resume is exact",
    ),
    ("SaveCheckpointConfig", "keep_dataset_checkpoints"): (
        (None,),
        "the data iterator is kept (and deleted) with its checkpoint; see CHECKPOINTS_TO_KEEP",
    ),
    ("RestoreCheckpointConfig", "mode"): (
        ("latest", "specific"),
        "'all' (evaluating every checkpoint) is T5X's eval.py; use python -m simvlm_jax.eval per checkpoint",
    ),
    ("RestoreCheckpointConfig", "dtype"): ((None, "float32"), "checkpoints hold float32 parameters"),
}


def check_supported_settings(**records) -> None:
    """Each T5X configuration record (DatasetConfig, SaveCheckpointConfig, RestoreCheckpointConfig; ours or
    T5X's) uses only values this trainer implements; any other is refused, naming the field."""
    for record in records.values():
        if record is None:
            continue
        kind = type(record).__name__
        for (owner, field), (allowed, why) in _ONLY.items():
            if owner != kind or not hasattr(record, field):
                continue
            value = getattr(record, field)
            if value not in allowed:
                allowed_text = " or ".join(repr(a) for a in allowed if a != ())
                raise ConfigError(
                    f"utils.{kind}.{field} = {value!r} is not supported by the simvlm-jax trainer: "
                    f"{why}. Remove the binding (allowed: {allowed_text})."
                )


def _tasks_of(mixture_or_task) -> list:
    import difflib

    import seqio

    if isinstance(mixture_or_task, (seqio.Task, seqio.Mixture)):
        provider = mixture_or_task
    else:
        try:
            provider = seqio.get_mixture_or_task(mixture_or_task)
        except ValueError as error:
            names = seqio.TaskRegistry.names() | seqio.MixtureRegistry.names()
            close = difflib.get_close_matches(str(mixture_or_task), sorted(names), n=3)
            hint = f" Did you mean {', '.join(repr(n) for n in close)}?" if close else ""
            raise ConfigError(
                f"No SeqIO task or mixture named {mixture_or_task!r} is registered.{hint} Set "
                "--gin.MIXTURE_OR_TASK_NAME=... to a registered name, and --gin.MIXTURE_OR_TASK_MODULE=... to the "
                "module that registers it."
            ) from error
    return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def check_inference_config(model, lengths: Mapping[str, int], mixture_or_task_name) -> None:
    """eval / infer: the feature lengths fit the trained model and the tasks share its vocabulary."""
    config = model.module.config
    check_feature_lengths(lengths, config)
    check_image_size(lengths.get("image"), config)
    for task in _tasks_of(mixture_or_task_name):
        feature = task.output_features.get("targets")
        vocabulary = getattr(feature, "vocabulary", None)
        check_task_vocabulary(vocabulary, model.output_vocabulary, task.name, config.vocab_size)
