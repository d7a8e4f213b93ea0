"""Batched, compiled prediction and scoring over datasets of model features (for seqio.Evaluator).

SeqIO's evaluator hands `predict_fn(dataset, model_feature_shapes)` an enumerated dataset of single
examples, `(index, {feature: tensor})`, and expects `[(index, tokens)]` back; `score_fn` likewise returns
`[(index, log-likelihood)]`. `ModelRunner` batches them to a fixed batch size (the last batch padded by
repeating its last example, then trimmed), so every batch reuses one compilation.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils


class EvaluationInterrupted(RuntimeError):
    """A decode or score pass ended early because its `interrupted()` said so."""


class ModelRunner:
    """Runs `model.predict_batch_with_aux` / `model.score_batch` with fixed-size jitted batches."""

    def __init__(
        self,
        model,
        params: Any,
        batch_size: int,
        decoder_params: Optional[Mapping[str, Any]] = None,
        on_dataset: Optional[Callable[[Optional[int]], Any]] = None,
    ):
        """`on_dataset(num_examples or None)`, if given, is called as each dataset starts and returns a
        progress object: its `advance(n)` gets the examples of every finished batch, `finish()` the end
        (e.g. `training.logs.CountProgress`). `interrupted()` (settable attribute) is asked before every
        batch; True raises EvaluationInterrupted."""
        self.model = model
        self.params = params
        self.batch_size = batch_size
        self.on_dataset = on_dataset
        self.interrupted: Callable[[], bool] = lambda: False
        settings = dict(decoder_params or {})
        self._predict = jax.jit(lambda p, b: model.predict_batch_with_aux(p, b, decoder_params=settings))
        self._score = jax.jit(model.score_batch)

    def _batches(self, dataset: tf.data.Dataset) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], int]]:
        """(indices [n], padded batch [batch_size, ...], n real rows) over an enumerated dataset."""
        count = int(dataset.cardinality())
        report = self.on_dataset(count if count >= 0 else None) if self.on_dataset else None
        for indices, features in dataset.batch(self.batch_size).as_numpy_iterator():
            if self.interrupted():
                raise EvaluationInterrupted("interrupted between batches")
            real = len(indices)
            padded = {
                name: np.concatenate([value, np.repeat(value[-1:], self.batch_size - real, axis=0)])
                for name, value in features.items()
            }
            yield indices, padded, real
            if report:
                report.advance(real)
        if report:
            report.finish()

    def predict_fn(self, dataset: tf.data.Dataset, model_feature_shapes=None) -> list[tuple[int, list[int]]]:
        """[(index, output token ids [L_dec])], 0 after EOS; SeqIO's vocabulary.decode stops at EOS."""
        del model_feature_shapes
        results = []
        for indices, batch, real in self._batches(dataset):
            tokens, _ = self._predict(self.params, batch)
            results.extend((int(i), row.tolist()) for i, row in zip(indices[:real], to_host(tokens)[:real]))
        return results

    def score_fn(self, dataset: tf.data.Dataset, model_feature_shapes=None) -> list[tuple[int, float]]:
        """[(index, log-likelihood of the example's targets)]."""
        del model_feature_shapes
        results = []
        for indices, batch, real in self._batches(dataset):
            scores = to_host(self._score(self.params, batch))
            results.extend((int(i), float(s)) for i, s in zip(indices[:real], scores[:real]))
        return results


def to_host(array: jax.Array) -> np.ndarray:
    """The whole value of a jitted output as numpy, also when it spans other processes' devices (then
    every process gets all of it: parameters sharded over a multi-process mesh make such outputs)."""
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def decode_tokens(vocabulary, ids) -> str:
    """Text of token ids up to (not including) the first EOS, padding (0) dropped."""
    kept = []
    for token in (int(t) for t in ids):
        if token == vocabulary.eos_id:
            break
        if token != 0:
            kept.append(token)
    return vocabulary.decode(kept)
