"""Text-only documents from the Python language reference shipped with CPython.

`pydoc_data.topics.topics` maps each help topic ("if", "class", "specialnames",
...) to a section of the Python reference manual: human-written English prose
with some grammar rules and code examples. It is part of every CPython install,
so this corpus needs no download; its exact content follows the Python version
(the project pins 3.11).

Documents:
* A topic's text is split into paragraphs at blank lines; reST heading
  underlines ("*****", "=====", ...) are dropped, the heading text is kept.
* Long topics are cut into documents of about `TARGET_WORDS` words at paragraph
  boundaries; a short tail is merged into the document before it.
* Split: a topic goes to `validation` when a stable hash of its name falls in
  the first `VALIDATION_PERCENT` of 100 buckets, else to `train` (Python 3.11:
  7 of 79 topics). Topics overlap ("compound" contains "if"), so paragraphs of
  at least `DEDUP_MIN_WORDS` words are kept only at their first occurrence in a
  split, and validation drops those that train holds (in 3.11, 5 validation
  topics keep text: 9 documents, ~4% of the words).
* Documents shorter than `MIN_WORDS` words after that are dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

SPLITS: tuple[str, ...] = ("train", "validation")
TARGET_WORDS = 300  # Documents are cut once they reach this many words.
MIN_TAIL_WORDS = 100  # A shorter last piece joins the previous document.
MIN_WORDS = 20  # Shorter documents are dropped.
DEDUP_MIN_WORDS = 8  # Paragraphs this long are de-duplicated (see module doc).
VALIDATION_PERCENT = 5

_UNDERLINE = re.compile(r"^\s*([*=\-^~#+])\1{2,}\s*$")


@dataclasses.dataclass(frozen=True)
class Document:
    """One document: `id` is "<topic>/<part>", unique and stable."""

    id: str
    topic: str
    text: str


def _topics() -> dict[str, str]:
    from pydoc_data import topics  # pylint: disable=import-outside-toplevel

    return topics.topics


def topic_split(topic: str) -> str:
    """The split ("train" or "validation") of a topic, from a stable hash of its name."""
    bucket = int.from_bytes(hashlib.sha256(topic.encode("utf-8")).digest()[:8], "big") % 100
    return "validation" if bucket < VALIDATION_PERCENT else "train"


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a topic: blank-line separated, headings underlines removed."""
    result = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.rstrip() for line in block.split("\n") if not _UNDERLINE.match(line)]
        while lines and not lines[0].strip():
            lines.pop(0)
        block = "\n".join(lines).rstrip()
        if block.strip():
            result.append(block)
    return result


def _word_count(text: str) -> int:
    return len(text.split())


def _chunk(paras: list[str]) -> list[list[str]]:
    """Groups consecutive paragraphs into pieces of about TARGET_WORDS words."""
    chunks: list[list[str]] = []
    current: list[str] = []
    words = 0
    for para in paras:
        current.append(para)
        words += _word_count(para)
        if words >= TARGET_WORDS:
            chunks.append(current)
            current, words = [], 0
    if current:
        if chunks and words < MIN_TAIL_WORDS:
            chunks[-1].extend(current)
        else:
            chunks.append(current)
    return chunks


def _split_paragraphs() -> dict[str, list[tuple[str, list[str]]]]:
    """{split: [(topic, de-duplicated paragraphs)]}, topics in sorted order."""
    topics = _topics()
    seen: dict[str, set[str]] = {split: set() for split in SPLITS}
    result: dict[str, list[tuple[str, list[str]]]] = {split: [] for split in SPLITS}
    # Train first, so validation can drop what train already holds.
    for split in SPLITS:
        for topic in sorted(topics):
            if topic_split(topic) != split:
                continue
            kept = []
            for para in paragraphs(topics[topic]):
                key = " ".join(para.split())
                if _word_count(para) >= DEDUP_MIN_WORDS:
                    if any(key in seen[s] for s in SPLITS[: SPLITS.index(split) + 1]):
                        continue
                    seen[split].add(key)
                kept.append(para)
            result[split].append((topic, kept))
    return result


def documents(split: str) -> list[Document]:
    """The documents of `split` ("train" or "validation"), in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    docs = []
    for topic, paras in _split_paragraphs()[split]:
        for part, chunk in enumerate(_chunk(paras)):
            text = "\n\n".join(chunk)
            if _word_count(text) >= MIN_WORDS:
                docs.append(Document(id=f"{topic}/{part}", topic=topic, text=text))
    return docs


def vocabulary_texts(split: str = "train") -> list[str]:
    """The paragraphs of `split`'s documents, whitespace collapsed (for tokenizers)."""
    return [" ".join(para.split()) for doc in documents(split) for para in doc.text.split("\n\n")]
