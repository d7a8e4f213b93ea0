"""The project's embedded default data: prepared locally, deterministically, with no download.

Layout under the data directory (`default_data_dir()` unless given):

    <data_dir>/tfds/embedded_scenes/1.0.0/...   TFDS builder `embedded_scenes`
    <data_dir>/tfds/pydoc_text/1.0.0/...        TFDS builder `pydoc_text`
    <data_dir>/vocab/simvlm_embedded.model      SentencePiece, pad=0 eos=1 unk=2, no bos

The vocabulary is trained on the captions of the `embedded_scenes` train split and the paragraphs
of the `pydoc_text` train documents. It is a BPE model: with unigram, some colour words ("green",
"purple") come out as two pieces; BPE keeps every caption word a single piece at a similar cost
on the prose. `embedded_vocabulary()` can be built before any of this exists (e.g. by a SeqIO
task registered at import time): its model file is trained on first use.

Command line, which prepares everything and prints the paths and split sizes:

    python -m simvlm_jax.data.embedded [--data_dir=DIR] [--vocab_size=N]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import sentencepiece as spm
import seqio

from simvlm_jax.data import scenes, text_corpus, vocabulary
from simvlm_jax.data.builders import EmbeddedScenes, PydocText
from simvlm_jax.data.data_dirs import DATA_DIR_ENV, prepare_builder, resolve, tfds_data_dir

DEFAULT_VOCAB_SIZE = 2000  # Small softmax for tiny models; still covers the pydoc prose.
VOCAB_NAME = "simvlm_embedded"
SPM_MODEL_ENV = "SIMVLM_SPM_MODEL"
VOCAB_MODEL_TYPE = "bpe"  # See the module docstring.
BUILDERS = (EmbeddedScenes, PydocText)


def vocabulary_path(data_dir: str | None = None) -> str:
    """The embedded vocabulary's model file: `<data_dir>/vocab/simvlm_embedded.model`."""
    return os.path.join(resolve(data_dir), "vocab", VOCAB_NAME + ".model")


def vocabulary_texts(num_captions: int = scenes.SPLIT_SIZES["train"]) -> list[str]:
    """The training texts of the embedded vocabulary, in a fixed order: the pydoc training documents and
    the captions of the first `num_captions` training scenes."""
    return text_corpus.vocabulary_texts("train") + list(scenes.split_captions("train", num_captions))


def prepare_vocabulary(
    data_dir: str | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE, split_sizes: Mapping[str, int] | None = None
) -> str:
    """Trains the embedded vocabulary unless present (on the captions of the scene training split of
    `split_sizes`); returns its path.

    Raises:
      ValueError: the file exists with another number of pieces than `vocab_size`.
    """
    path = vocabulary_path(data_dir)
    if not os.path.exists(path):
        # train_sentencepiece writes to a temporary name, then renames.
        vocabulary.train_sentencepiece(
            vocabulary_texts(scenes.split_sizes(split_sizes)["train"]),
            path[: -len(".model")],
            vocab_size,
            model_type=VOCAB_MODEL_TYPE,
        )
    found = spm.SentencePieceProcessor(model_file=path).get_piece_size()
    if found != vocab_size:
        raise ValueError(f"{path} has {found} pieces, not vocab_size={vocab_size}; delete it or use another data_dir.")
    return path


def prepare_datasets(data_dir: str | None = None, split_sizes: Mapping[str, int] | None = None) -> dict[str, str]:
    """Generates both TFDS datasets unless present; returns {builder name: dataset folder}."""
    return {
        EmbeddedScenes.name: prepare_builder(EmbeddedScenes, data_dir, split_sizes=split_sizes),
        PydocText.name: prepare_builder(PydocText, data_dir),
    }


def prepare(
    data_dir: str | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE, split_sizes: Mapping[str, int] | None = None
) -> dict[str, str]:
    """Prepares the datasets and the vocabulary (idempotent). `split_sizes`: the scene splits' sizes
    ({"train", "validation", "heldout"}: count; default `scenes.SPLIT_SIZES`), used when generating.

    Returns:
      {"data_dir", "tfds_data_dir", "embedded_scenes", "pydoc_text", "vocabulary"}: paths.
    """
    paths = {"data_dir": resolve(data_dir), "tfds_data_dir": tfds_data_dir(data_dir)}
    paths.update(prepare_datasets(data_dir, split_sizes))
    paths["vocabulary"] = prepare_vocabulary(data_dir, vocab_size, split_sizes)
    return paths


def split_counts(data_dir: str | None = None) -> dict[str, dict[str, int]]:
    """{builder name: {split: number of examples}} of prepared datasets."""
    counts = {}
    for builder_cls in BUILDERS:
        builder = builder_cls(data_dir=tfds_data_dir(data_dir))
        counts[builder.name] = {name: s.num_examples for name, s in builder.info.splits.items()}
    return counts


class EmbeddedVocabulary(seqio.SentencePieceVocabulary):
    """The embedded SentencePiece vocabulary, trained on first use if its file is missing."""

    def __init__(
        self,
        data_dir: str | None = None,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        extra_ids: int = 0,
    ):
        self._data_dir = resolve(data_dir)  # Fixed now, so the model path is stable.
        self._prepare_vocab_size = vocab_size
        super().__init__(vocabulary_path(self._data_dir), extra_ids=extra_ids)

    @property
    def pieces(self) -> int:
        """The number of SentencePiece pieces it is (or will be) trained with."""
        return self._prepare_vocab_size

    def _model_context(self):
        if self._model is None and not os.path.exists(self.sentencepiece_model_file):
            prepare_vocabulary(self._data_dir, self._prepare_vocab_size)
        return super()._model_context()


def embedded_vocabulary(
    data_dir: str | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE, extra_ids: int = 0
) -> EmbeddedVocabulary:
    """A `seqio.SentencePieceVocabulary` over `vocabulary_path(data_dir)`, prepared lazily.

    The data directory is resolved now (argument, else $SIMVLM_DATA_DIR, else the cache folder);
    the model is trained the first time the vocabulary is used, if the file does not exist.
    """
    return EmbeddedVocabulary(data_dir, vocab_size=vocab_size, extra_ids=extra_ids)


def default_vocabulary() -> seqio.Vocabulary:
    """The vocabulary of every task but the embedded ones: the SentencePiece model at $SIMVLM_SPM_MODEL when
    set (a vocabulary of your own, e.g. for Base runs), else the embedded vocabulary (the tiny runs)."""
    path = os.environ.get(SPM_MODEL_ENV)
    return seqio.SentencePieceVocabulary(path) if path else embedded_vocabulary()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simvlm_jax.data.embedded",
        description="Prepare the embedded datasets and vocabulary of simvlm-jax (no download).",
    )
    parser.add_argument("--data_dir", default=None, help=f"Default: ${DATA_DIR_ENV} or ~/.cache.")
    parser.add_argument("--vocab_size", type=int, default=DEFAULT_VOCAB_SIZE)
    args = parser.parse_args(argv)
    paths = prepare(args.data_dir, args.vocab_size)
    counts = split_counts(args.data_dir)
    for key, path in paths.items():
        sizes = " ".join(f"{split}={n}" for split, n in sorted(counts.get(key, {}).items()))
        print(f"{key}: {path}" + (f"  ({sizes})" if sizes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
