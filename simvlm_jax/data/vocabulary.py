"""Deterministic SentencePiece training with the T5 id convention.

Models trained here use pad=0, eos=1, unk=2 and no bos, the layout that
`seqio.SentencePieceVocabulary` expects. Training is reproducible: the same texts and options give a
byte-identical `.model` file (every line is used, in the given order, on one thread, and no file
path enters the model proto).

Command line, to build a vocabulary from your own text files (one sentence or document per line), from
the raw records of a registered SeqIO task or mixture, or both:

    python -m simvlm_jax.data.vocabulary --input=a.txt --input=b.txt \
        --model_prefix=/tmp/my_vocab --vocab_size=32000
    python -m simvlm_jax.data.vocabulary --task=my_pairs --task_module=my_tasks --text_key=text \
        --max_texts=2000000 --model_prefix=/tmp/my_vocab --vocab_size=32000

Then `export SIMVLM_SPM_MODEL=/tmp/my_vocab.model` for the full-size gins (docs/data.md).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece as spm

PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, -1  # T5's layout; -1 means "no bos".
MODEL_TYPES = ("unigram", "bpe", "char", "word")


def _clean(texts: Iterable[str]) -> Iterator[str]:
    """One line per text: whitespace (newlines included) collapsed, empty texts dropped."""
    for text in texts:
        line = " ".join(text.split())
        if line:
            yield line


def atomic_write(path: str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        with open(tmp_path, "xb") as f:  # Created with the usual permissions (umask).
            f.write(data)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str,
    vocab_size: int,
    *,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    **trainer_options,
) -> str:
    """Trains a SentencePiece model on `texts` and writes `<model_prefix>.model`.

    Args:
      texts: sentences or documents; each becomes one training line (its newlines and runs of
        whitespace become single spaces).
      model_prefix: output path without extension. `<prefix>.model` and `<prefix>.vocab`
        (piece<TAB>score per line, for reading) are each written atomically.
      vocab_size: number of pieces, the 3 special ones included.
      model_type: "unigram" (T5's choice), "bpe", "char" or "word".
      character_coverage: fraction of characters covered by pieces; 1.0 keeps every character
        seen, so no training text maps to unk.
      **trainer_options: further `spm.SentencePieceTrainer.train` options (override ours).

    Returns:
      The path of the `.model` file.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"Unknown model_type {model_type!r}; expected one of {MODEL_TYPES}.")
    lines = list(_clean(texts))
    if not lines:
        raise ValueError("train_sentencepiece needs at least one non-empty text.")
    longest = max(len(line.encode("utf-8")) for line in lines)
    options = dict(
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        # Determinism: every line, in order, on one thread.
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        max_sentence_length=max(4192, longest + 1),  # Longer lines would be skipped silently.
        minloglevel=2,  # Warnings and errors only.
    )
    options.update(trainer_options)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, **options)
    model_bytes = model.getvalue()

    processor = spm.SentencePieceProcessor(model_proto=model_bytes)
    vocab_text = "".join(
        f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n" for i in range(processor.get_piece_size())
    )
    model_path = model_prefix + ".model"
    atomic_write(model_prefix + ".vocab", vocab_text.encode("utf-8"))
    atomic_write(model_path, model_bytes)
    return model_path


def _read_lines(paths: Sequence[str]) -> Iterator[str]:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield from f


def task_texts(name: str, split: str = "train", text_key: str = "text", module: str | None = None) -> Iterator[str]:
    """The `text_key` field of the raw records of SeqIO task or mixture `name` (its sources, in order, before
    any preprocessing), decoded as UTF-8; records whose field is not valid UTF-8 are skipped."""
    import importlib

    import seqio

    if module:
        importlib.import_module(module)
    provider = seqio.get_mixture_or_task(name)
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    for task in tasks:
        if split not in task.source.splits:
            continue
        dataset = task.source.get_dataset(split=split, shuffle=False)
        if text_key not in dataset.element_spec:
            raise ValueError(
                f"Task {task.name!r} has no field {text_key!r}; its fields: {sorted(dataset.element_spec)}"
            )
        for record in dataset.as_numpy_iterator():
            try:
                yield record[text_key].decode("utf-8")
            except UnicodeDecodeError:
                continue


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simvlm_jax.data.vocabulary",
        description="Train a T5-style (pad=0, eos=1, unk=2, no bos) SentencePiece vocabulary.",
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        help="UTF-8 text file, one text a line; repeat the flag for more files.",
    )
    parser.add_argument("--task", action="append", default=[], help="A SeqIO task or mixture to read texts from.")
    parser.add_argument("--task_module", default=None, help="Module that registers --task (e.g. my_tasks).")
    parser.add_argument("--split", default="train", help="Split of --task.")
    parser.add_argument("--text_key", default="text", help="Field of --task's raw records that holds the text.")
    parser.add_argument("--max_texts", type=int, default=None, help="Use at most this many texts in all.")
    parser.add_argument("--model_prefix", required=True, help="Output path without extension.")
    parser.add_argument("--vocab_size", type=int, required=True, help="Number of pieces.")
    parser.add_argument("--model_type", default="unigram", choices=MODEL_TYPES)
    args = parser.parse_args(argv)
    if not args.input and not args.task:
        parser.error("give --input files and/or --task names")
    texts = itertools.chain(
        _read_lines(args.input),
        *(task_texts(name, args.split, args.text_key, args.task_module) for name in args.task),
    )
    if args.max_texts:
        texts = itertools.islice(texts, args.max_texts)
    path = train_sentencepiece(texts, args.model_prefix, args.vocab_size, model_type=args.model_type)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
