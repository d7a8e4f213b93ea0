"""The model dir records the model in plain JSON; eval, infer and caption rebuild it without gin."""

import json
import os
import shutil

import gin
import seqio

from simvlm_jax.cli import model_dir as model_dir_lib
from simvlm_jax.model import model_config
from simvlm_jax.network import tiny_config
from tests.helpers import make_model


def test_the_recorded_model_is_the_trained_one(model_dir):
    with open(os.path.join(model_dir, model_config.FILE_NAME)) as f:
        record = json.load(f)
    assert record["network"]["preset"] == "tiny" and record["network"]["stem_width"] == 32
    assert record["vocabulary"] == {"kind": "embedded", "pieces": 2000, "extra_ids": 0}
    assert record["task_feature_lengths"] == {"inputs": 32, "targets": 32, "image": 64}

    gin.clear_config(clear_constants=False)
    model, lengths = model_dir_lib.load_model(model_dir)
    assert gin.config_str() == ""  # rebuilt without touching gin's global configuration
    from_gin, gin_lengths = model_dir_lib.load_model_from_config(model_dir)  # the old way, for comparison
    gin.clear_config(clear_constants=False)
    assert model.module.config == from_gin.module.config
    assert dict(lengths) == dict(gin_lengths)
    assert model.output_vocabulary.vocab_size == from_gin.output_vocabulary.vocab_size == 2000
    assert (model.z_loss, model.label_smoothing) == (from_gin.z_loss, from_gin.label_smoothing)


def test_a_model_dir_without_the_record_falls_back_on_config_gin(model_dir, tmp_path):
    old = tmp_path / "old_run"
    os.makedirs(old)
    shutil.copy(os.path.join(model_dir, "config.gin"), old / "config.gin")
    model, lengths = model_dir_lib.load_model(str(old))
    gin.clear_config(clear_constants=False)
    assert model.module.config.preset == "tiny" and lengths["image"] == 64


def test_records_round_trip_for_each_vocabulary_kind(tmp_path):
    model = make_model()  # a PassThroughVocabulary
    record = json.loads(json.dumps(model_config.to_record(model, {"inputs": 5, "targets": 6, "image": 32})))
    rebuilt, lengths = model_config.from_record(record)
    assert rebuilt.module.config == model.module.config and lengths == {"inputs": 5, "targets": 6, "image": 32}
    assert rebuilt.output_vocabulary == model.output_vocabulary
    # A vocabulary with no plain form: nothing recorded (the reader then uses config.gin).
    other = make_model()
    other.output_vocabulary = other.input_vocabulary = seqio.ByteVocabulary()
    assert model_config.to_record(other, {}) is None
    assert model_config.write(str(tmp_path), other, {}) is None and not os.listdir(tmp_path)
    assert tiny_config().stem_width == 32  # the tests' tiny model is the benchmark's (one size table)
