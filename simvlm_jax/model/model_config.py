"""A trained model's configuration in plain JSON, `<model_dir>/model_config.json`, written by the trainer.

eval, infer and caption rebuild the model from it with `read(model_dir)`: no gin, no global state.

    {"network": {every SimVLMConfig field},
     "vocabulary": {"kind": "embedded" | "sentencepiece" | "passthrough", ...},
     "model": {"label_smoothing", "z_loss", "loss_normalizing_factor", "default_decoder_params"},
     "task_feature_lengths": {"inputs": L_enc, "targets": L_dec, "image": S}}

One vocabulary serves as input and output vocabulary (as in every SimVLM gin file). A model whose
vocabulary has no plain form here (another seqio.Vocabulary class) is not recorded: `to_record` returns
None and the reader falls back on the model dir's config.gin.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

import seqio

from simvlm_jax.data import embedded
from simvlm_jax.network import SimVLMConfig, SimVLMNetwork

FILE_NAME = "model_config.json"


def vocabulary_record(vocabulary) -> Optional[dict]:
    """The plain form of a vocabulary, or None for a kind this module does not know."""
    if isinstance(vocabulary, embedded.EmbeddedVocabulary):
        # The data dir is resolved when the model is loaded ($SIMVLM_DATA_DIR, else the cache), as config.gin's
        # `@embedded.embedded_vocabulary()` is: a model dir moved to another machine finds its vocabulary there.
        return {"kind": "embedded", "pieces": vocabulary.pieces, "extra_ids": vocabulary.extra_ids}
    if isinstance(vocabulary, seqio.SentencePieceVocabulary):
        return {
            "kind": "sentencepiece",
            "model_file": vocabulary.sentencepiece_model_file,
            "extra_ids": vocabulary.extra_ids,
        }
    if isinstance(vocabulary, seqio.PassThroughVocabulary):
        return {"kind": "passthrough", "size": vocabulary.vocab_size, "eos_id": vocabulary.eos_id}
    return None


def vocabulary_from_record(record: Mapping[str, Any]):
    kind = record["kind"]
    if kind == "embedded":
        return embedded.embedded_vocabulary(None, record["pieces"], record["extra_ids"])
    if kind == "sentencepiece":
        return seqio.SentencePieceVocabulary(record["model_file"], extra_ids=record["extra_ids"])
    if kind == "passthrough":
        return seqio.PassThroughVocabulary(size=record["size"], eos_id=record["eos_id"])
    raise ValueError(f"Unknown vocabulary kind {kind!r} in {FILE_NAME}.")


def to_record(model, task_feature_lengths: Mapping[str, int]) -> Optional[dict]:
    """The plain form of a SimVLMModel and its feature lengths, or None when it has none."""
    vocabulary = vocabulary_record(model.output_vocabulary)
    if vocabulary is None or vocabulary_record(model.input_vocabulary) != vocabulary:
        return None
    return {
        "network": dataclasses.asdict(model.module.config),
        "vocabulary": vocabulary,
        "model": {
            "label_smoothing": model.label_smoothing,
            "z_loss": model.z_loss,
            "loss_normalizing_factor": model.loss_normalizing_factor,
            "default_decoder_params": dict(model.default_decoder_params),
        },
        "task_feature_lengths": {name: int(length) for name, length in task_feature_lengths.items()},
    }


def from_record(record: Mapping[str, Any]) -> tuple[Any, dict[str, int]]:
    """(SimVLMModel for inference (no optimizer), task feature lengths) from `to_record`'s output."""
    from simvlm_jax.model.simvlm_model import SimVLMModel

    network = dict(record["network"])
    network["stem_blocks_per_stage"] = tuple(network["stem_blocks_per_stage"])
    vocabulary = vocabulary_from_record(record["vocabulary"])
    model = SimVLMModel(
        SimVLMNetwork(SimVLMConfig(**network)), vocabulary, vocabulary, optimizer_def=None, **record["model"]
    )
    return model, dict(record["task_feature_lengths"])


def write(model_dir: str, model, task_feature_lengths: Mapping[str, int]) -> Optional[str]:
    """Writes `<model_dir>/model_config.json` (when the model has a plain form); returns its path."""
    record = to_record(model, task_feature_lengths)
    if record is None:
        return None
    path = os.path.join(model_dir, FILE_NAME)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def differences(model_dir: str, model) -> list[str]:
    """How `model` differs from the one recorded in `<model_dir>/model_config.json`, field by field
    ("network.num_decoder_layers: 2 recorded, 1 now"); empty when they agree or nothing is recorded."""
    path = os.path.join(model_dir, FILE_NAME)
    now = to_record(model, {})
    if not os.path.isfile(path) or now is None:
        return []
    with open(path) as f:
        recorded = json.load(f)
    found = []
    for part in ("network", "vocabulary"):
        old, new = recorded.get(part, {}), now[part]
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                found.append(f"{part}.{name}: {old.get(name)!r} recorded, {new.get(name)!r} now")
    return found


def read(model_dir: str) -> Optional[tuple[Any, dict[str, int]]]:
    """(model, task feature lengths) from `<model_dir>/model_config.json`, None when there is none."""
    path = os.path.join(model_dir, FILE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return from_record(json.load(f))
