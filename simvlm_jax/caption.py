r"""Caption your own images (or answer a question about them) with a trained SimVLM checkpoint.

    python -m simvlm_jax.caption --checkpoint=/tmp/simvlm_tiny photo.jpg scan.png
    python -m simvlm_jax.caption --checkpoint=/tmp/simvlm_tiny photos/ [--recursive]
    python -m simvlm_jax.caption --checkpoint=/tmp/simvlm_tiny/checkpoint_1200 --prompt="a picture of" a.jpg
    python -m simvlm_jax.caption --checkpoint=/tmp/simvlm_tiny --question="what colour is the circle?" a.png
    python -m simvlm_jax.caption --checkpoint=/tmp/simvlm_tiny --beam_size=4 --max_decode_length=20 a.jpg
    python -m simvlm_jax.caption --checkpoint=/tmp/simvlm_tiny --attention=where_it_looked/ photos/

--checkpoint is a model directory written by `python -m simvlm_jax.train` (its newest checkpoint is
used) or one of its checkpoint_<step> folders; the model is rebuilt from the directory's config.gin.

A directory stands for the image files in it (by extension: .jpg .jpeg .png .gif .bmp .webp .tif .tiff
.ppm .pgm .pbm, any case), sorted by name; --recursive adds those in its sub-directories. A directory
without image files gets an "error" line.

Output (stdout): one JSON object per image, one per line, in the order given:
    {"image": "photo.jpg", "text": "..."}
    {"image": "notes.txt", "error": "not an image: ..."}
An unreadable file gets an "error" line and the other images are still captioned. Logs go to stderr.
With --attention=DIR, each captioned image is also written to DIR with the decoder's cross-attention over
its patches (averaged over layers, heads and the written tokens) drawn on it as a heat map, and its line
names that file: {"image": "photo.jpg", "text": "...", "attention": "DIR/0000_photo.attention.png"}.
Exit status: 0 when at least one image was captioned, 1 when none was, 2 for bad flags.

Images are read with PIL in any size and mode: grayscale, RGBA / LA and palette images with
transparency (composited onto white), 16-bit and 32-bit integer images (scaled to 8 bits), float
images, CMYK; the EXIF orientation is applied and an animation contributes its first frame. They
are then resized and normalised exactly as in training (`preprocessors.resize_normalize`).

By default the text prefix is empty (the plain captioning set-up the embedded tiny model is trained
with); --prompt gives the encoder a text prefix to continue (SimVLM's zero-shot "a picture of"),
--question puts a question there instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Optional, Sequence

if __name__ == "__main__":
    from simvlm_jax.cli import startup

    startup.begin()  # before TensorFlow and JAX load: quiet logs, huge pages on the CPU backend

import numpy as np


class ImageReadError(Exception):
    """A file that cannot be used as an image; the message says why."""


# ------------------------------------------------------------------------------------------------
# Reading images.
# ------------------------------------------------------------------------------------------------
def _scale_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """A single-channel integer or float array (modes I;16*, I, F) -> uint8 of the same shape."""
    if mode.startswith("I;16"):
        return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)  # 65535 -> 255
    values = array.astype(np.float64)
    if mode == "F":
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if lo >= 0.0 and hi <= 1.0:
            scaled = values * 255.0  # already on [0, 1]
        elif hi > lo:
            scaled = (values - lo) / (hi - lo) * 255.0
        else:
            scaled = np.zeros_like(values)
        return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
    # Mode "I" (32-bit signed): PIL also opens many 16-bit PNGs/TIFFs this way.
    hi = float(values.max()) if values.size else 0.0
    lo = float(values.min()) if values.size else 0.0
    if lo >= 0 and hi <= 255:
        scaled = values
    elif lo >= 0 and hi <= 65535:
        scaled = values / 257.0
    else:
        scaled = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def _composite_on_white(image) -> "Any":
    """An RGBA PIL image -> RGB, transparent areas white."""
    from PIL import Image

    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image).convert("RGB")


def _pil_to_rgb(image) -> np.ndarray:
    """Any PIL image (already loaded) -> uint8 [H, W, 3]."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        gray = _scale_to_uint8(np.asarray(image), mode)
        if gray.ndim == 3:  # defensive: some plugins hand back a trailing channel
            gray = gray[..., 0]
        return np.repeat(gray[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    if has_alpha:
        image = _composite_on_white(image.convert("RGBA"))
    elif mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX, ...
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ImageReadError(f"cannot convert image mode {mode!r} to RGB")
    return array


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def expand_inputs(paths: Sequence[str], recursive: bool = False) -> list[tuple[str, Optional[str]]]:
    """(path, error or None) for each image to caption: files as given, directories replaced by their
    image files (sorted; sub-directories too when `recursive`), an empty directory by an error entry."""
    expanded: list[tuple[str, Optional[str]]] = []
    for path in paths:
        if not os.path.isdir(path):
            expanded.append((path, None))
            continue
        if recursive:
            found = [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
        else:
            found = [os.path.join(path, name) for name in os.listdir(path)]
        images = sorted(p for p in found if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p))
        if images:
            expanded.extend((image, None) for image in images)
        else:
            where = "or below it " if recursive else ""
            expanded.append((path, f"a directory with no image files in it {where}({', '.join(IMAGE_EXTENSIONS)})"))
    return expanded


def read_image(path: str) -> np.ndarray:
    """The image at `path` as uint8 [H, W, 3]; raises ImageReadError with a readable reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from simvlm_jax.data import bad_records

    if not os.path.exists(path):
        raise ImageReadError("not found: no such file")
    if os.path.isdir(path):
        raise ImageReadError("is a directory, not an image file")
    if os.path.getsize(path) == 0:
        raise ImageReadError("empty file (0 bytes), not an image")
    try:
        with Image.open(path) as image:
            image_format = image.format or "image"
            width, height = image.size  # from the header: a decompression bomb is refused before decoding
            if width * height > bad_records.DEFAULT_MAX_PIXELS:
                raise ImageReadError(
                    f"too large: {width}x{height} > {bad_records.DEFAULT_MAX_PIXELS} pixels (training's limit too)"
                )
            try:
                image.load()
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise ImageReadError(f"truncated or corrupt {image_format} file: {e}") from e
            try:
                image = ImageOps.exif_transpose(image)
            except Exception:  # a malformed EXIF block: keep the pixels as stored
                pass
            return _pil_to_rgb(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageReadError("not an image: the file is not in a format PIL can read") from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image too large to decode safely: {e}") from e
    except PermissionError as e:
        raise ImageReadError(f"permission denied: {e.strerror or e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"unreadable or corrupt image: {e}") from e
    except MemoryError as e:
        raise ImageReadError("out of memory while decoding the image") from e


def preprocess(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [size, size, 3], resized and normalised as in training."""
    import tensorflow as tf

    from simvlm_jax.data.preprocessors import resize_normalize

    return resize_normalize(tf.constant(rgb, tf.uint8), size).numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------------
# The model.
# ------------------------------------------------------------------------------------------------
class Captioner:
    """A restored model with a compiled predict function over fixed-size batches."""

    def __init__(self, checkpoint: str, max_decode_length: Optional[int], beam_size: int, batch_size: int):
        import jax
        import jax.numpy as jnp

        from simvlm_jax.cli import model_dir as restore
        from simvlm_jax.training import checkpoints

        checkpoint_path = checkpoints.resolve_checkpoint_path(checkpoint)
        model_dir = checkpoints.model_dir_of(checkpoint_path)
        self.model, lengths = restore.load_model(model_dir)
        print(f"Restoring {checkpoint_path}", file=sys.stderr)
        self.params = checkpoints.load_params(checkpoint_path)
        config = self.model.module.config
        self.image_size = int(lengths.get("image", config.image_size))
        self.max_text_length = int(config.max_text_length)
        self.input_length = int(lengths.get("inputs", 0)) or 1
        self.decode_length = int(max_decode_length or lengths.get("targets", 32))
        if self.decode_length > self.max_text_length:
            raise ValueError(
                f"--max_decode_length={self.decode_length} is more than this model's "
                f"max_text_length ({self.max_text_length})"
            )
        self.batch_size = batch_size
        if beam_size > 1:
            decoder_params = {"method": "beam", "num_decodes": beam_size}
        else:
            decoder_params = {"method": "greedy", "num_decodes": 1}
        model = self.model

        def predict(params, batch):
            return model.predict_batch_with_aux(params, batch, decoder_params=decoder_params)[0]

        self._predict = jax.jit(predict)
        self._jnp = jnp

    def encode_text(self, text: str) -> np.ndarray:
        """The encoder prefix tokens for `text`, padded with 0 to the input length."""
        ids = list(self.model.input_vocabulary.encode(text)) if text else []
        if len(ids) > self.max_text_length:
            raise ValueError(
                f"the prompt/question is {len(ids)} tokens; this model takes at most {self.max_text_length}"
            )
        length = max(self.input_length, len(ids))
        tokens = np.zeros((length,), np.int32)
        tokens[: len(ids)] = ids
        return tokens

    def caption(self, images: Sequence[np.ndarray], prefix: np.ndarray) -> list[str]:
        """Texts for preprocessed images (each [S, S, 3]), `batch_size` at a time (last batch padded)."""
        texts, rows = [], []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start : start + self.batch_size])
            real = len(chunk)
            chunk += [np.zeros_like(chunk[0])] * (self.batch_size - real)
            b = self.batch_size
            batch = {
                "encoder_image": np.stack(chunk).astype(np.float32),
                "encoder_image_mask": np.ones((b,), np.float32),
                "encoder_input_tokens": np.tile(prefix[None], (b, 1)),
                "decoder_input_tokens": np.zeros((b, self.decode_length), np.int32),
                "decoder_target_tokens": np.zeros((b, self.decode_length), np.int32),
                "decoder_loss_weights": np.zeros((b, self.decode_length), np.int32),
            }
            tokens = np.asarray(self._predict(self.params, {k: self._jnp.asarray(v) for k, v in batch.items()}))
            texts.extend(self.detokenize(row) for row in tokens[:real])
            rows.append(tokens[:real])
        self.last_tokens = np.concatenate(rows)  # [len(images), L]: what `attention` redraws
        return texts

    def attention(self, images: Sequence[np.ndarray], prefix: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """float32 [N, h, w]: the decoder's cross-attention over each image's patches while it wrote `tokens`
        (model/attention_maps.py)."""
        from simvlm_jax.model.attention_maps import cross_attention_maps

        features = {
            "encoder_image": np.stack(images).astype(np.float32),
            "encoder_image_mask": np.ones((len(images),), np.float32),
            "encoder_input_tokens": np.tile(prefix[None], (len(images), 1)),
        }
        return cross_attention_maps(self.model, self.params, features, tokens)[:, 0]

    def detokenize(self, row: np.ndarray) -> str:
        from simvlm_jax.model.inference import decode_tokens

        return decode_tokens(self.model.output_vocabulary, np.asarray(row).tolist())


# ------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------
def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simvlm_jax.caption", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of them")
    parser.add_argument("--recursive", action="store_true", help="include images in sub-directories of a directory")
    parser.add_argument(
        "--checkpoint", required=True, help="a model directory (newest checkpoint) or a checkpoint_<step> folder"
    )
    text = parser.add_mutually_exclusive_group()
    text.add_argument("--prompt", default="", help='text prefix to continue, e.g. "a picture of" (default: none)')
    text.add_argument("--question", default=None, help="a question about each image, answered instead of a caption")
    parser.add_argument(
        "--max_decode_length",
        type=int,
        default=None,
        help="most tokens to generate (default: TASK_FEATURE_LENGTHS['targets'] of the run)",
    )
    parser.add_argument("--beam_size", type=int, default=1, help="beam search width; 1 = greedy (default)")
    parser.add_argument("--batch_size", type=int, default=8, help="images per model call (default 8)")
    parser.add_argument(
        "--attention",
        metavar="DIR",
        default=None,
        help="also write each image with the decoder's cross-attention over it as a heat map into DIR",
    )
    args = parser.parse_args(argv)
    if args.beam_size < 1:
        parser.error("--beam_size must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")
    if args.max_decode_length is not None and args.max_decode_length < 1:
        parser.error("--max_decode_length must be at least 1")
    return args


def _emit(record: dict, out=None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()


def _write_attention(folder: str, captioner: Captioner, pending, prefix, records, inputs) -> None:
    """`<folder>/<n>_<image name>.attention.png`: each image with the decoder's attention drawn over it,
    named in its output line as "attention"."""
    from PIL import Image

    from simvlm_jax import report
    from simvlm_jax.model.attention_maps import overlay

    os.makedirs(folder, exist_ok=True)
    maps = captioner.attention([image for _, image in pending], prefix, captioner.last_tokens)
    for (index, image), heat in zip(pending, maps):
        stem = os.path.splitext(os.path.basename(inputs[index][0]))[0]
        path = os.path.join(folder, f"{index:04d}_{stem}.attention.png")
        Image.fromarray(overlay(report.denormalize(image), heat)).save(path)
        records[index]["attention"] = path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    # stdout carries the JSON lines only: anything else printed on the way (progress bars, a
    # vocabulary being prepared) goes to stderr.
    json_out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args, lambda record: _emit(record, json_out))


def _warn_if_vocabulary_missing(vocabulary) -> None:
    path = getattr(vocabulary, "sentencepiece_model_file", None)
    if isinstance(path, str) and path and not os.path.exists(path):
        print(
            f"warning: the vocabulary file {path} does not exist (it will be rebuilt if it is the embedded "
            "one); point SIMVLM_DATA_DIR at the data folder the model was trained with",
            file=sys.stderr,
        )


def _run(args: argparse.Namespace, emit) -> int:
    from simvlm_jax.cli import startup

    startup.drop_known_library_noise()
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")  # TF only resizes images here; the GPU is JAX's
    except Exception:
        pass
    from simvlm_jax.training.logs import CountProgress

    inputs = expand_inputs(args.images, args.recursive)
    try:
        # One fixed batch shape (one compilation), no larger than the number of images.
        batch_size = min(args.batch_size, max(1, sum(error is None for _, error in inputs)))
        captioner = Captioner(args.checkpoint, args.max_decode_length, args.beam_size, batch_size)
        _warn_if_vocabulary_missing(captioner.model.input_vocabulary)
        prefix = captioner.encode_text(args.question if args.question is not None else args.prompt)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    # Results go out in argument order; an image's line waits only for its own batch.
    records: list[Optional[dict]] = [None] * len(inputs)
    progress = CountProgress("captioned", len(inputs), out=sys.stderr)
    pending: list[tuple[int, np.ndarray]] = []
    emitted = 0
    succeeded = 0

    def flush_ready():
        nonlocal emitted
        while emitted < len(records) and records[emitted] is not None:
            emit(records[emitted])
            emitted += 1

    def run_pending():
        nonlocal succeeded
        if not pending:
            return
        try:
            texts = captioner.caption([image for _, image in pending], prefix)
        except Exception as e:  # noqa: BLE001 - report per image, keep going
            for index, _ in pending:
                records[index] = {"image": inputs[index][0], "error": f"captioning failed: {e}"}
        else:
            for (index, _), text in zip(pending, texts):
                records[index] = {"image": inputs[index][0], "text": text}
                succeeded += 1
            if args.attention:
                _write_attention(args.attention, captioner, pending, prefix, records, inputs)
        progress.advance(len(pending))
        pending.clear()

    for index, (path, error) in enumerate(inputs):
        if error is not None:
            records[index] = {"image": path, "error": error}
            flush_ready()
            continue
        try:
            image = preprocess(read_image(path), captioner.image_size)
        except ImageReadError as e:
            records[index] = {"image": path, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - anything else about this one file
            records[index] = {"image": path, "error": f"could not process image: {type(e).__name__}: {e}"}
        else:
            pending.append((index, image))
            if len(pending) == captioner.batch_size:
                run_pending()
        flush_ready()
    run_pending()
    flush_ready()
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
