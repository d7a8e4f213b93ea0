"""VQA accuracy under the official VQA v2 evaluation rules, as a SeqIO metric function.

Reference: GT-Vision-Lab/VQA, `PythonEvaluationTools/vqaEvaluation/vqaEval.py` at commit a013f00
("Fixed processing answers bug", March 2021), the version the EvalAI VQA v2 server follows. This module
re-implements its rules; the golden cases in the tests come from that version.

Per question, with the annotators' answers and one predicted answer:

1. Every answer and the prediction: newlines and tabs become spaces, then surrounding whitespace is
   stripped. Nothing else happens yet (no lower-casing).
2. Only if the stripped answers are NOT all identical, each answer AND the prediction are normalised
   (`normalize_answer`). When all annotators agree the comparison is an exact, case-sensitive string
   match: ten "yes" against "Yes." scores 0, and ten "2" against "two" scores 0.
3. Leave-one-out: for each annotator i, count the OTHER annotators whose answer equals the prediction;
   that subset scores min(1, count / 3). The question scores the mean over the annotators (each answer
   is left out once by position, so equal answers are still counted separately): red x2 + blue x8 with
   prediction "red" scores (2 * 1/3 + 8 * 2/3) / 10 = 0.6, red x3 + blue x7 scores 0.9.

The split scores the mean over questions, x100. The official script rounds to two decimals; we don't.

`normalize_answer` (the official `processPunctuation` then `processDigitArticle`):
- Punctuation: the characters ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! are each deleted when that
  character appears next to a space anywhere in the text, or when the text contains a digit-comma-digit
  sequence anywhere ("1,000"); otherwise each is replaced by a space. Both tests look at the text as it
  was before any replacement. Colons, apostrophes, #, $, % and other characters are kept.
- Periods: a "." not followed by a digit is deleted, so "3.5" keeps its point and "yes." loses it. The
  official call passes `re.UNICODE` (= 32) where `re.sub` expects its count, so only the first 32 such
  periods are deleted; we keep that limit.
- Lower-casing, then splitting on whitespace; the number words zero..ten become digits and "none"
  becomes "0"; the articles a, an, the are dropped; contractions written without their apostrophe are
  restored ("dont" -> "don't", "youre" -> "you're", "couldntve" is not in the table, but "couldnt've"
  and "couldn'tve" -> "couldn't've"); tokens are joined by single spaces.
- The contraction table is the official one as seen after lower-casing (its keys "Im", "Ive", "Id've"
  and "I'dve" contain capitals and can never match). It keeps one odd entry, "somebody'd" ->
  "somebodyd", which goes the other way round.

Answer counts other than ten (VQA v2 always has ten): with n >= 4 answers the rules above apply
unchanged (the official loop does not depend on n). With 2 or 3 answers the official formula cannot
reach 1 even when everybody agrees (it would give at most 1/3 or 2/3), so the divisor 3 becomes n - 1:
a prediction is fully right when all the other annotators gave it. With a single answer (e.g.
easy-vqa) the question scores 1 for an exact match of the stripped strings and 0 otherwise; step 2
never normalises a single answer, exactly as for ten identical ones. No answers at all is an error.

How popular copies differ:
- LAVIS (`lavis/common/vqa_tools/vqa_eval.py`) and other copies of the 2017 version ALWAYS normalise
  the prediction, and when the answers disagree they apply only the punctuation step to the answers
  (no lower-casing, number words or articles on the ground truth). Ten "yes" vs "Yes." and ten "2" vs
  "two" score 100 there.
- lmms-eval (`tasks/vqav2/utils.py`) follows the 2021 logic but first runs the prediction through
  mmf's `EvalAIAnswerProcessor` (lower-case, drop "," and "?", split "'s", then both normalisation
  steps) unconditionally, so it also scores 100 on both of those cases.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from simvlm_jax.metrics import _inputs

# ----------------------------------------------------------------------------------------------------
# Normalisation tables (the official values, rebuilt rather than copied)
# ----------------------------------------------------------------------------------------------------

_PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official pattern starts with "(?!<=\d)", a look-AHEAD for the text "<=" and a digit, which can
# never match in front of a period; what remains is "a period not followed by a digit".
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_MAX_PERIODS_DELETED = 32  # re.UNICODE's value, passed as `count` by the official code

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})

# Contractions with one apostrophe: the key is the word with the apostrophe removed ("dont").
_ONE_APOSTROPHE = """
    ain't aren't can't could've couldn't didn't doesn't don't hadn't hasn't haven't he'd he's how'd how'll
    how's isn't it'd it'll ma'am mightn't might've mustn't must've needn't not've o'clock oughtn't shan't
    should've shouldn't somebody'll somebody's someone'd someone'll someone's something'd something'll
    that's there'd there're there's they'd they'll they're they've 'twas wasn't we've weren't what'll
    what're what's what've when's where'd where's where've who'd who'll who's who've why'll why're why's
    won't would've wouldn't y'all you'd you'll you're you've
""".split()
# Contractions with several apostrophes: each key drops exactly one of them ("couldnt've", "couldn'tve");
# dropping all of them ("couldntve") is not in the official table.
_SEVERAL_APOSTROPHES = """
    couldn't've hadn't've he'd've it'd've mightn't've she'd've shouldn't've somebody'd've someone'd've
    something'd've there'd've they'd've we'd've who'd've wouldn't've y'all'll y'all'd've you'd've 'ow's'at
""".split()


def _contraction_table() -> dict[str, str]:
    table = {word.replace("'", ""): word for word in _ONE_APOSTROPHE}
    for word in _SEVERAL_APOSTROPHES:
        positions = [i for i, char in enumerate(word) if char == "'"]
        for i in positions:
            table[word[:i] + word[i + 1 :]] = word
    table["somebody'd"] = "somebodyd"  # the official table's reversed entry
    return table


_CONTRACTIONS = _contraction_table()


# ----------------------------------------------------------------------------------------------------
# Normalisation and per-question score
# ----------------------------------------------------------------------------------------------------


def _strip_answer(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        next_to_space = f"{mark} " in text or f" {mark}" in text  # tested on the input, not on `out`
        out = out.replace(mark, "" if (delete_all or next_to_space) else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_DELETED)


def _process_words(text: str) -> str:
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """The official answer normalisation (punctuation, then number words, articles and contractions).

    Note that `vqa_accuracy` applies it only to questions whose answers disagree.
    """
    return _process_words(_process_punctuation(text))


def question_accuracy(answers: Sequence[str], prediction: str) -> float:
    """One question's accuracy in [0, 1] under the official rules (module docstring), given n answers."""
    answers = [_strip_answer(answer) for answer in answers]
    prediction = _strip_answer(prediction)
    if not answers:
        raise ValueError("a VQA target needs at least one answer")
    if len(set(answers)) > 1:
        answers = [normalize_answer(answer) for answer in answers]
        prediction = normalize_answer(prediction)
    matches = np.array([answer == prediction for answer in answers], dtype=np.float64)  # [n]
    if len(answers) == 1:
        return float(matches[0])
    divisor = min(3, len(answers) - 1)
    others_matching = matches.sum() - matches  # [n] matches among the other n - 1 annotators
    return float(np.mean(np.minimum(1.0, others_matching / divisor)))


def vqa_accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """SeqIO metric: {"vqa_accuracy": mean official VQA v2 accuracy, x100}.

    Args:
      targets: per question, the list of annotators' answers (usually ten); a single string counts as
        one answer. Bytes are decoded as UTF-8.
      predictions: per question, the decoded predicted answer.
    """
    _inputs.check_pairs(targets, predictions)
    scores = [
        question_accuracy(_inputs.as_references(target), _inputs.as_text(prediction))
        for target, prediction in zip(targets, predictions)
    ]
    return {"vqa_accuracy": 100.0 * float(np.mean(scores))}
