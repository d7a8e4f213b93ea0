"""Bad input records: robust image decoding, text checks, the skip/fail policy and the skip counters.

A record is bad when

    reason            what is wrong
    corrupt_image     the bytes are not a decodable image (truncated, garbage, unknown format)
    empty_image       no bytes, or an image with zero width or height (a header PIL cannot even
                      identify, such as a zero-width PNG, counts as corrupt_image)
    too_large         more than `max_pixels` pixels (decompression bombs are refused from the header,
                      before any pixel is decoded)
    invalid_utf8      the text is not valid UTF-8
    empty_text        the text is empty or only whitespace
    overlong_text     the text has more than `max_text_bytes` bytes (not a caption or a document;
                      ordinary long texts are kept and cropped to TASK_FEATURE_LENGTHS by the split)

Images in any PIL mode become RGB uint8: grayscale and palette images are expanded, alpha (RGBA, LA,
transparent palettes) is composited onto white, CMYK is converted, 16-bit and 32-bit integer images are
scaled to 8 bits (not clipped).

Policy (`RecordPolicy.on_bad`; `train(bad_record_policy=...)` applies it to the datasets it builds):

    'skip' (default)  the record is dropped and counted under its reason; the counts since the process
                      started are logged and written to TensorBoard as data/skipped_records/<reason>
    'fail'            the input pipeline stops with `BadRecordError` naming the record and the reason

A pipeline takes the policy that is active when it is built (`with bad_records.applied(policy):` around
`get_dataset`); the preprocessors bind it into their checks, so it holds however late the records are read.

The checks run as `tf.numpy_function`s inside the SeqIO preprocessors (see preprocessors.py).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import io
import threading
import warnings
from typing import Iterator, Optional

import numpy as np

POLICIES = ("skip", "fail")
REASONS = ("corrupt_image", "empty_image", "too_large", "invalid_utf8", "empty_text", "overlong_text")
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024  # 64 Mpx: far above any photo we train on, far below a bomb
DEFAULT_MAX_TEXT_BYTES = 1 << 20
DEFAULT_MAX_BAD_IN_A_ROW = 10_000  # far above any bad stretch of real data, reached in seconds by bad data

_lock = threading.Lock()
_counts: collections.Counter = collections.Counter()


class BadRecordError(ValueError):
    """A bad record under policy 'fail'."""


@dataclasses.dataclass(frozen=True)
class RecordPolicy:
    """What a pipeline does with a bad record (`on_bad`: 'skip' or 'fail'), the size limits, and how many
    bad records in a row one check may skip before it stops the pipeline (`max_bad_in_a_row`): a source with
    no good record would otherwise be read forever (a repeated dataset) without yielding a batch."""

    on_bad: str = "skip"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    max_bad_in_a_row: int = DEFAULT_MAX_BAD_IN_A_ROW

    def __post_init__(self):
        if self.on_bad not in POLICIES:
            raise ValueError(
                f"bad_record_policy must be one of {POLICIES}, got {self.on_bad!r}: set "
                "--gin.train.bad_record_policy=\"'skip'\" (or 'fail')."
            )
        if not isinstance(self.max_bad_in_a_row, int) or self.max_bad_in_a_row < 1:
            raise ValueError(f"max_bad_records_in_a_row must be a positive integer, got {self.max_bad_in_a_row!r}.")


_active: contextvars.ContextVar[RecordPolicy] = contextvars.ContextVar("bad_record_policy", default=RecordPolicy())


@contextlib.contextmanager
def applied(policy: RecordPolicy) -> Iterator[RecordPolicy]:
    """Pipelines built inside the block take `policy`."""
    token = _active.set(policy)
    try:
        yield policy
    finally:
        _active.reset(token)


def active() -> RecordPolicy:
    """The policy a pipeline built now takes (the default `RecordPolicy()` outside `applied`)."""
    return _active.get()


def skipped_counts() -> dict[str, int]:
    """{reason: records skipped since the process started} (only reasons that occurred)."""
    with _lock:
        return dict(_counts)


def reset_counts() -> None:
    with _lock:
        _counts.clear()


def describe_record(image: Optional[bytes], text: Optional[bytes]) -> str:
    """A short, printable identification of a record: its text's start and its image's size and hash."""
    parts = []
    if text is not None:
        shown = text[:60].decode("utf-8", errors="backslashreplace")
        parts.append(f"text {shown!r}{'...' if len(text) > 60 else ''}")
    if image is not None:
        parts.append(f"image of {len(image)} bytes, sha1 {hashlib.sha1(image).hexdigest()[:12]}")
    return "record with " + ", ".join(parts)


def reject(policy: RecordPolicy, reason: str, image: Optional[bytes], text: Optional[bytes], detail: str = "") -> None:
    """Counts a bad record (policy 'skip') or raises BadRecordError naming it (policy 'fail')."""
    if policy.on_bad == "fail":
        raise BadRecordError(
            f"Bad input {describe_record(image, text)}: {reason}{' (' + detail + ')' if detail else ''}. "
            "Fix or remove the record, or set --gin.train.bad_record_policy=\"'skip'\" to drop such records."
        )
    with _lock:
        _counts[reason] += 1


# --------------------------------------------------------------------------------------------------
# Checks, as plain functions of bytes (the tf.numpy_function bodies).
# --------------------------------------------------------------------------------------------------
def text_problem(text: bytes, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> Optional[str]:
    """The reason `text` is unusable, or None."""
    if len(text) > max_text_bytes:
        return "overlong_text"
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    if not decoded.strip():
        return "empty_text"
    return None


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Optional[np.ndarray], Optional[str], str]:
    """Encoded image bytes -> (uint8 [H, W, 3], None, '') or (None, reason, detail)."""
    from PIL import Image

    if not data:
        return None, "empty_image", "no bytes"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width == 0 or height == 0:
                return None, "empty_image", f"{width}x{height}"
            if width * height > max_pixels:
                return None, "too_large", f"{width}x{height} > {max_pixels} pixels"
            image.load()
            return to_rgb(image), None, ""
    except Image.DecompressionBombError as error:
        return None, "too_large", str(error)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        return None, "corrupt_image", f"{type(error).__name__}: {error}"


def to_rgb(image) -> np.ndarray:
    """A loaded PIL image in any mode -> uint8 [H, W, 3]."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grayscale
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            top = 65535.0 if values.max(initial=0) <= 65535 else values.max()
            values = values * (255.0 / top)
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = "A" in mode or "a" in mode or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return rgb.reshape(rgb.shape[0], rgb.shape[1], 3)


class BadStreak:
    """Bad records in a row seen by one check of one pipeline; stops the pipeline past the policy's bound."""

    def __init__(self, policy: RecordPolicy, check: str, task: str):
        self.policy, self.check, self.task = policy, check, task
        self._lock = threading.Lock()
        self._reasons: collections.Counter = collections.Counter()
        self._stop_message: str | None = None

    def good(self) -> None:
        if self._reasons:
            with self._lock:
                self._reasons.clear()

    def bad(self, reason: str) -> None:
        with self._lock:
            self._reasons[reason] += 1
            count = sum(self._reasons.values())
            if count >= self.policy.max_bad_in_a_row and self._stop_message is None:
                # The first crossing of the bound writes the message; records checked at the same time in
                # other threads of a parallel map repeat it, so the error names the bound whichever surfaces.
                reasons = ", ".join(f"{r} {n}" for r, n in sorted(self._reasons.items()))
                where = f"task {self.task!r}" if self.task else "a task of this pipeline"
                self._stop_message = (
                    f"{where} gave {count} bad records in a row at {self.check} ({reasons}) and no good one: its "
                    "source holds no usable record. Fix the data or its preprocessors, or remove the task from "
                    "the mixture (train.max_bad_records_in_a_row sets the bound)."
                )
            message = self._stop_message
        if message is not None:
            raise BadRecordError(message)


def _check_text(policy: RecordPolicy, streak: BadStreak, text: bytes) -> np.bool_:
    reason = text_problem(text, policy.max_text_bytes)
    if reason is None:
        streak.good()
        return np.bool_(True)
    reject(policy, reason, None, text)
    streak.bad(reason)
    return np.bool_(False)


def _decode_image(policy: RecordPolicy, streak: BadStreak, data: bytes, text: bytes) -> tuple[np.ndarray, np.bool_]:
    rgb, reason, detail = decode_rgb(data, policy.max_pixels)
    if reason is None:
        streak.good()
        return rgb, np.bool_(True)
    reject(policy, reason, data, text, detail)
    streak.bad(reason)
    return np.zeros((1, 1, 3), np.uint8), np.bool_(False)


def check_text_fn(policy: RecordPolicy, task: str = ""):
    """A numpy_function body under `policy`: text bytes -> True to keep the record."""
    return functools.partial(_check_text, policy, BadStreak(policy, "the text check", task))


def decode_image_fn(policy: RecordPolicy, task: str = ""):
    """A numpy_function body under `policy`: (image bytes, text bytes) -> (uint8 [H, W, 3], keep); a
    rejected record gives a 1x1 placeholder."""
    return functools.partial(_decode_image, policy, BadStreak(policy, "image decoding", task))
