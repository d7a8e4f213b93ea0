"""The real pretraining data: web image/alt-text pairs and C4 text, mixed 8:1.

    laion400m_prefixlm         TFDS `laion400m/images` (images must be downloaded by the user, as
                               TFDS's manual instructions say); LAION has only a train split, so
                               training evaluation reports C4 (and any validation split you register)
    c4_en_prefixlm             TFDS `c4/en` (text-only)
    simvlm_pretrain_laion_c4   the two mixed 8:1 (the paper: 4,096 pairs + 512 documents per step)

ALIGN's data is private; `register_web_pairs_task` reads your own TFRecord files instead, one
`tf.train.Example` per pair with features `image` (bytes: an encoded JPEG/PNG) and `text` (bytes:
UTF-8 alt-text), e.g. from `write_web_pairs` below. Call it from your own task module and name that
module with `--gin.MIXTURE_OR_TASK_MODULE=...`.

The vocabulary is $SIMVLM_SPM_MODEL (a SentencePiece .model of your own, e.g. trained with
`python -m simvlm_jax.data.vocabulary`), falling back to the small embedded vocabulary.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Union

import seqio
import tensorflow as tf

from simvlm_jax.data import embedded as embedded_data
from simvlm_jax.tasks import common

IMAGE_TEXT_RATE = 4096.0
TEXT_ONLY_RATE = 512.0
WEB_PAIRS_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "text": tf.io.FixedLenFeature([], tf.string),
}


def register_web_pairs_task(
    name: str,
    split_to_filepattern: Mapping[str, Union[str, Iterable[str]]],
    vocabulary: Optional[seqio.Vocabulary] = None,
    **split_kwargs,
) -> seqio.Task:
    """A PrefixLM task over TFRecord files of (image bytes, text) pairs, e.g. {'train': 'gs://b/*.tfrecord'}."""
    return common.add_task(
        name,
        seqio.TFExampleDataSource(split_to_filepattern, feature_description=WEB_PAIRS_FEATURES),
        vocabulary or embedded_data.default_vocabulary(),
        common.image_text_preprocessors(image_key="image", text_key="text", **split_kwargs),
    )


def write_web_pairs(path: str, pairs: Iterable[tuple[bytes, Union[str, bytes]]]) -> int:
    """Writes (encoded image bytes, text) pairs as a TFRecord file in the format above; returns the count.

    A str text is encoded as UTF-8; bytes are written as given (e.g. to test the bad-record checks).
    """
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for image_bytes, text in pairs:
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
                        "text": tf.train.Feature(
                            bytes_list=tf.train.BytesList(
                                value=[text.encode("utf-8") if isinstance(text, str) else text]
                            )
                        ),
                    }
                )
            )
            writer.write(example.SerializeToString())
            count += 1
    return count


VOCABULARY = embedded_data.default_vocabulary()

common.add_task(
    "laion400m_prefixlm",
    seqio.TfdsDataSource("laion400m/images:1.0.0", splits=["train"]),
    VOCABULARY,
    common.image_text_preprocessors(image_key="image", text_key="caption"),
)
common.add_task(
    "c4_en_prefixlm",
    seqio.TfdsDataSource("c4/en:3.1.0", splits=["train", "validation"]),
    VOCABULARY,
    common.text_only_preprocessors(text_key="text"),
)
common.add_mixture(
    "simvlm_pretrain_laion_c4",
    [("laion400m_prefixlm", IMAGE_TEXT_RATE), ("c4_en_prefixlm", TEXT_ONLY_RATE)],
)
