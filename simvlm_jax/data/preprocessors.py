"""SeqIO preprocessors for SimVLM's PrefixLM data (tf.data, no JAX).

The pipeline for an image-text task is

    source -> rekey_image_text -> check_text -> decode_image -> resize_and_normalize_image
           -> tokenize_text -> prefix_lm_split -> seqio.preprocessors.append_eos_after_trim

and for a text-only task

    source -> rekey_text -> check_text -> add_blank_image -> tokenize_text -> prefix_lm_split
           -> append_eos_after_trim

`check_text` and `decode_image` drop (and count) or reject bad records by the policy of
`simvlm_jax.data.bad_records` (corrupt or huge images, empty or non-UTF-8 text).

Every example that leaves these preprocessors has the same four output features, so image-text and
text-only tasks mix in one seqio.Mixture:

    inputs      int32 [k]          the text prefix (first k caption/document tokens), no EOS
    targets     int32 [n - k]      the rest of the text (EOS appended later)
    image       float32 [S, S, C]  the normalised image; zeros for text-only examples
    image_mask  float32 [1]        1.0 when `image` is a real image, 0.0 for text-only examples (one
                                   entry per image: multi-image tasks carry [N])

The image resolution S is read from `sequence_length["image"]` (TASK_FEATURE_LENGTHS), so a run at a
higher resolution changes one number in the gin file.
"""

from __future__ import annotations

from typing import Mapping, Optional

import seqio
import tensorflow as tf

from simvlm_jax.data import bad_records

# ImageNet statistics on the [0, 1] scale: the conventional normalisation for a ResNet stem.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
NUM_CHANNELS = 3


def _get(features, path: str):
    """A '/'-separated path into nested TFDS features (e.g. "captions/text")."""
    for part in path.split("/"):
        features = features[part]
    return features


def example_id(features, id_key: Optional[str]) -> dict:
    """{"example_id": the record's id as a string} when `id_key` names one, else {}: carried through the
    preprocessors so that predictions can name their input (infer's and eval's JSONL)."""
    if not id_key:
        return {}
    value = _get(features, id_key)
    return {"example_id": value if value.dtype == tf.string else tf.strings.as_string(value)}


def rekey_image_text(
    dataset: tf.data.Dataset, image_key: str = "image", text_key: str = "text", id_key: Optional[str] = None
) -> tf.data.Dataset:
    """Keeps only the image and the text of each record, renamed to `image` and `text` (and the record's
    id as `example_id` when `id_key` is given).

    The keys may be '/'-separated paths into nested TFDS features (e.g. "captions/text").
    """
    return dataset.map(
        lambda ex: {"image": _get(ex, image_key), "text": _get(ex, text_key), **example_id(ex, id_key)},
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def rekey_text(dataset: tf.data.Dataset, text_key: str = "text", id_key: Optional[str] = None) -> tf.data.Dataset:
    """Keeps only the document text, renamed to `text` (and its id as `example_id` when `id_key` is given)."""
    return dataset.map(
        lambda ex: {"text": _get(ex, text_key), **example_id(ex, id_key)}, num_parallel_calls=tf.data.AUTOTUNE
    )


def check_text(dataset: tf.data.Dataset, task: str = "") -> tf.data.Dataset:
    """Drops (policy 'skip') or rejects (policy 'fail') records whose `text` is empty, not UTF-8 or
    absurdly long; see `bad_records`. `task` names the task in the error of a source with no good record."""
    if dataset.element_spec["text"].dtype != tf.string:
        return dataset

    check = bad_records.check_text_fn(bad_records.active(), task)

    def keep(ex):
        ok = tf.numpy_function(check, [ex["text"]], tf.bool, stateful=False)
        ok.set_shape(())
        return ok

    return dataset.filter(keep)


def decode_image(dataset: tf.data.Dataset, task: str = "") -> tf.data.Dataset:
    """Decodes encoded image bytes to uint8 [H, W, 3]; already decoded images pass through.

    Any format and mode PIL reads (JPEG, PNG, GIF: its first frame, BMP, TIFF, WebP; grayscale, palette,
    RGBA, CMYK, 16-bit) becomes RGB; corrupt, empty and oversized images are dropped and counted
    (policy 'skip') or stop the run naming the record (policy 'fail'); see `bad_records`.
    """
    if dataset.element_spec["image"].dtype != tf.string:
        return dataset.map(lambda ex: {**ex, "image": _to_rgb(ex["image"])}, num_parallel_calls=tf.data.AUTOTUNE)

    decode_rgb = bad_records.decode_image_fn(bad_records.active(), task)

    def decode(ex):
        text = ex["text"] if "text" in ex and ex["text"].dtype == tf.string else tf.constant(b"")
        image, ok = tf.numpy_function(decode_rgb, [ex["image"], text], (tf.uint8, tf.bool), stateful=False)
        image.set_shape((None, None, NUM_CHANNELS))
        ok.set_shape(())
        return {**ex, "image": image}, ok

    decoded = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return decoded.filter(lambda ex, ok: ok).map(lambda ex, ok: ex)


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
    """[H, W, 1|3|4] -> [H, W, 3] (grayscale repeated, alpha dropped); static channel count only."""
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    return image


def resize_normalize(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [size, size, 3], bilinear with antialiasing, ImageNet-normalised."""
    image = tf.image.convert_image_dtype(image, tf.float32)  # [0, 1]
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    image = (image - tf.constant(IMAGE_MEAN)) / tf.constant(IMAGE_STD)
    image.set_shape((size, size, NUM_CHANNELS))
    return image


def resize_and_normalize_image(dataset: tf.data.Dataset, sequence_length: Mapping[str, int]) -> tf.data.Dataset:
    """Resizes `image` to S x S (S = sequence_length['image']), normalises it and sets image_mask = 1."""
    size = image_size(sequence_length)
    return dataset.map(
        lambda ex: {**ex, "image": resize_normalize(ex["image"], size), "image_mask": tf.constant([1.0])},
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def add_blank_image(dataset: tf.data.Dataset, sequence_length: Mapping[str, int]) -> tf.data.Dataset:
    """Gives a text-only example an all-zero S x S image and image_mask = 0 (the network masks it out)."""
    size = image_size(sequence_length)
    blank = tf.zeros((size, size, NUM_CHANNELS), tf.float32)
    return dataset.map(
        lambda ex: {**ex, "image": blank, "image_mask": tf.constant([0.0])},
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def image_size(sequence_length: Optional[Mapping[str, int]]) -> int:
    """The image side S from a task's sequence_length; a clear error when it is missing."""
    if not sequence_length or "image" not in sequence_length:
        raise ValueError(
            "The image resolution comes from TASK_FEATURE_LENGTHS['image'] (e.g. {'inputs': 32, "
            "'targets': 32, 'image': 224}); this task was given sequence_length=%r." % (sequence_length,)
        )
    return int(sequence_length["image"])


def tokenize_text(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    """Tokenises `text` with the targets vocabulary into `text_tokens` int32 [n] (no EOS).

    `text` is kept (as the pretokenized string) for logging and evaluation.
    """
    vocabulary = output_features["targets"].vocabulary

    def tokenize(ex):
        return {**ex, "text_tokens": tf.cast(vocabulary.encode_tf(ex["text"]), tf.int32)}

    return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)


def prefix_split_bounds(
    num_tokens: tf.Tensor,
    max_inputs: int,
    max_targets: int,
    min_prefix_tokens: int = 0,
    max_prefix_tokens: Optional[int] = None,
    min_target_tokens: int = 1,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Inclusive bounds [low, high] of the prefix length k for a text of `num_tokens` tokens.

    `num_tokens` must already be cropped to at most max_inputs + max_targets - 1 (one target slot is
    kept for EOS). The bounds guarantee that the prefix fits the encoder (k <= max_inputs), the suffix
    fits the decoder with its EOS (n - k <= max_targets - 1), at least `min_target_tokens` text tokens
    are left to predict (when the text has that many), and the user's bounds hold where they can.
    """
    n = tf.cast(num_tokens, tf.int32)
    # Hard limits: the prefix fits the encoder and the suffix (plus EOS) fits the decoder.
    hard_low = tf.maximum(0, n - (max_targets - 1))
    hard_high = tf.minimum(max_inputs, n)
    # The user's bounds, kept wherever the hard limits allow.
    high = tf.minimum(hard_high, tf.maximum(n - min_target_tokens, 0))
    if max_prefix_tokens is not None:
        high = tf.minimum(high, max_prefix_tokens)
    high = tf.maximum(high, hard_low)
    low = tf.minimum(tf.maximum(hard_low, min_prefix_tokens), high)
    return low, high


def prefix_lm_split(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    min_prefix_tokens: int = 0,
    max_prefix_tokens: Optional[int] = None,
    min_target_tokens: int = 1,
    random_window: bool = False,
) -> tf.data.Dataset:
    """The PrefixLM split: k text tokens join the image (if any) in the encoder, the text after them is the
    target.

    A text that fits (at most inputs + targets - 1 tokens, one target slot being EOS's) is split at its
    beginning: k is drawn uniformly from `prefix_split_bounds`, inputs = its first k tokens, targets = the
    rest. A longer text is handled by `random_window`:

    - False (captions, and any text whose beginning matters): cropped to its first inputs + targets - 1
      tokens, then split as above (for a long text k is then forced to fill the encoder).
    - True (text-only documents, the paper's "same random split" on C4): k is drawn uniformly from
      [min_prefix_tokens, min(inputs, max_prefix_tokens, n - min_target_tokens)], then the window's start s
      uniformly among the positions that leave k prefix tokens and a full target (targets - 1 tokens) in the
      text; inputs = tokens[s : s + k], targets = the next targets - 1 tokens. Every prefix length is as
      likely for a long document as for a short text, and every part of the document is used.

    All draws use stateless RNGs whose seed SeqIO derives from the dataset seed, so the split is
    deterministic given `seed` (and random when seed is None). `max_prefix_tokens=0` gives plain
    captioning / plain language modelling (the whole text is the target).

    Emits `inputs` int32 [k] and `targets` int32; drops `text_tokens`.
    """
    max_inputs = int(sequence_length["inputs"])
    max_targets = int(sequence_length["targets"])
    if max_targets < 2:
        raise ValueError(f"TASK_FEATURE_LENGTHS['targets'] must be >= 2 (a token and EOS), got {max_targets}.")
    fits = max_inputs + max_targets - 1

    def split_beginning(tokens, seed):
        tokens = tokens[:fits]
        low, high = prefix_split_bounds(
            tf.size(tokens), max_inputs, max_targets, min_prefix_tokens, max_prefix_tokens, min_target_tokens
        )
        k = tf.random.stateless_uniform((), seed=seed, minval=low, maxval=high + 1, dtype=tf.int32)
        return tokens[:k], tokens[k:]

    def split_window(tokens, seed):
        n = tf.size(tokens)
        high = tf.minimum(max_inputs, n - min_target_tokens)
        if max_prefix_tokens is not None:
            high = tf.minimum(high, max_prefix_tokens)
        low = tf.minimum(min_prefix_tokens, high)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        k = tf.random.stateless_uniform((), seed=seeds[0], minval=low, maxval=high + 1, dtype=tf.int32)
        last_start = tf.maximum(n - k - (max_targets - 1), 0)
        start = tf.random.stateless_uniform((), seed=seeds[1], minval=0, maxval=last_start + 1, dtype=tf.int32)
        return tokens[start : start + k], tokens[start + k : start + k + max_targets - 1]

    @seqio.map_over_dataset(num_seeds=1)
    def split(ex, seed):
        tokens = ex.pop("text_tokens")
        if random_window:
            inputs, targets = tf.cond(
                tf.size(tokens) > fits, lambda: split_window(tokens, seed), lambda: split_beginning(tokens, seed)
            )
        else:
            inputs, targets = split_beginning(tokens, seed)
        return {**ex, "inputs": inputs, "targets": targets}

    return split(dataset)


def captioning_prompt(
    dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature], prompt: str
) -> tf.data.Dataset:
    """Puts a fixed text prompt (e.g. "a picture of") in the encoder after the image; targets = caption.

    Expects `text_tokens` (from tokenize_text); emits `inputs` = prompt tokens, `targets` = caption tokens.
    """
    vocabulary = output_features["inputs"].vocabulary
    prompt_tokens = tf.cast(vocabulary.encode_tf(tf.constant(prompt)), tf.int32)

    def apply(ex):
        ex = dict(ex)
        return {**ex, "inputs": prompt_tokens, "targets": ex.pop("text_tokens")}

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
