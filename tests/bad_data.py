"""A generated web-pairs dataset full of bad records mixed with good ones (for test_bad_records.py).

`write_dataset(path)` writes it with `write_web_pairs` and returns the expected skip counts of one pass.
`TASK_MODULE_SOURCE` is a user task module registering it, as `MIXTURE_OR_TASK_MODULE` names one.
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image

TASK_NAME = "bad_web_pairs"
TASK_MODULE_SOURCE = """
import os
from simvlm_jax.tasks import pretraining
pretraining.register_web_pairs_task({name!r}, {{"train": os.environ["BAD_PAIRS_PATH"]}})
""".format(name=TASK_NAME)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny (wrong) data chunk: a bomb or a 0-size image."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def good_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    gray16 = Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    return [
        encode(rgb, "JPEG"),
        encode(rgb, "PNG"),
        encode(rgb.convert("L"), "PNG"),
        encode(rgb.convert("LA"), "PNG"),
        encode(rgb.convert("RGBA"), "PNG"),
        encode(palette, "PNG"),
        encode(rgb.convert("CMYK"), "JPEG"),
        encode(gray16, "PNG"),
        encode(rgb.convert("1"), "PNG"),
        encode(rgb, "GIF"),
        encode(rgb, "BMP"),
        encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
    ]


def records() -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    """(image bytes, text bytes) pairs: 24 good, 12 bad; and the skip counts by reason for one pass."""
    good = good_images()
    jpeg = good[0]
    bad = [
        (jpeg[: len(jpeg) // 2], b"a truncated jpeg", "corrupt_image"),
        (good[1][:100], b"a truncated png", "corrupt_image"),
        (b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3, b"garbage bytes", "corrupt_image"),
        (b"", b"no image bytes at all", "empty_image"),
        (png_header_only(0, 10), b"a zero-width png", "corrupt_image"),  # PIL cannot identify it
        (png_header_only(100000, 100000), b"a decompression bomb", "too_large"),
        (png_header_only(10000, 10000), b"100 Mpx: under PIL's own bomb limit", "too_large"),
        (jpeg, b"\xff\xfe not utf-8 \xc3\x28", "invalid_utf8"),
        (jpeg, b"", "empty_text"),
        (jpeg, b"   \n\t ", "empty_text"),
        (jpeg, b"x" * ((1 << 20) + 1), "overlong_text"),
        (jpeg, "caf\u00e9 ".encode("utf-8") * 1000, None),  # long but fine: cropped to the feature lengths
    ]
    pairs, expected = [], {}
    for i in range(24):
        pairs.append((good[i % len(good)], f"good picture number {i}".encode()))
        if i % 2 == 0 and bad:
            image, text, reason = bad.pop(0)
            pairs.append((image, text))
            if reason:
                expected[reason] = expected.get(reason, 0) + 1
    return pairs, expected


def write_dataset(path: str) -> dict[str, int]:
    from simvlm_jax.tasks import pretraining

    pairs, expected = records()
    pretraining.write_web_pairs(path, pairs)
    return expected
