"""Input checks shared by the SeqIO metric functions (`fn(targets, predictions) -> {name: float}`).

SeqIO hands a metric function the postprocessed targets and the decoded predictions of a whole eval
split. Targets read straight from a `tf.data` pipeline arrive as `bytes` (or numpy arrays of them), so
every text value is decoded here before scoring.
"""

from __future__ import annotations

from typing import Any, Sequence


def as_text(value: Any) -> str:
    """A str from a str, bytes or numpy string scalar (UTF-8)."""
    if isinstance(value, bytes):  # also numpy.bytes_
        return value.decode("utf-8")
    if isinstance(value, str):  # also numpy.str_
        return str(value)
    raise TypeError(f"expected a string or bytes, got {type(value).__name__}: {value!r}")


def as_references(target: Any) -> list[str]:
    """One example's references as a list: a single string becomes a one-element list."""
    if isinstance(target, (str, bytes)):
        return [as_text(target)]
    return [as_text(ref) for ref in target]


def check_pairs(targets: Sequence[Any], predictions: Sequence[Any]) -> None:
    """Raises ValueError unless targets and predictions are non-empty and of the same length."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    if len(targets) == 0:
        raise ValueError("no examples to score")
