"""COCO captioning metrics (pycocoevalcap 1.2) and exact match, as SeqIO metric functions.

`coco_caption_metrics` reproduces the COCO caption evaluation server's numbers for BLEU-4, METEOR,
ROUGE-L and CIDEr (coco-caption's `Cider`, i.e. the CIDEr-D variant papers report as "CIDEr"):
captions and references go through pycocoevalcap's `PTBTokenizer` (Stanford CoreNLP 3.4.1's PTB
tokeniser, lower-cased, punctuation tokens dropped), exactly as `COCOEvalCap` does. That tokeniser and
METEOR run in Java (`java` must be on PATH); both jars ship inside the pycocoevalcap wheel, so nothing
is downloaded. SPICE is added when Stanford CoreNLP 3.6.0's two jars are already in pycocoevalcap's
`spice/lib` folder (`spice_available()`): pycocoevalcap's SPICE scorer would otherwise download them
(~400 MB) at run time, which is never done here. Fetch them once where the internet is reachable with
`python -c "from pycocoevalcap.spice.get_stanford_models import get_stanford_models as g; g()"`.

Notes:
- CIDEr takes its document frequencies from the evaluated set itself, so a single image always scores
  0 and scores are only comparable on the same (reasonably large) set of images.
- The PTB tokeniser writes a temporary file next to its jar, inside the installed pycocoevalcap
  package: that folder must be writable.
- The METEOR scorer (a JVM that loads paraphrase tables, ~10 s) is started on first use and kept for
  later calls; a failed call discards it and the next call starts a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import threading
from typing import Any, Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import get_stanford_models as spice_models
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from simvlm_jax.metrics import _inputs

# ----------------------------------------------------------------------------------------------------
# The METEOR process, shared between calls
# ----------------------------------------------------------------------------------------------------

_meteor: Meteor | None = None
_meteor_guard = threading.Lock()


def _close_meteor() -> None:
    """Stops the shared METEOR process, if any (also at interpreter exit)."""
    global _meteor
    scorer, _meteor = _meteor, None
    if scorer is None:
        return
    if scorer.lock.locked():  # a call died half-way; its `__del__` would otherwise wait forever
        scorer.lock.release()
    scorer.meteor_p.kill()
    scorer.meteor_p.wait()


atexit.register(_close_meteor)


def _meteor_score(refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> float:
    global _meteor
    with _meteor_guard:
        if _meteor is None:
            _meteor = Meteor()
        try:
            score, _ = _meteor.compute_score(refs, hyps)
        except Exception:
            _close_meteor()  # its pipes may be out of step now: start afresh next time
            raise
    return float(score)


# ----------------------------------------------------------------------------------------------------
# Metric functions
# ----------------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Collapses all whitespace (line breaks included): the tokeniser and METEOR read one line each."""
    return " ".join(text.split())


@contextlib.contextmanager
def _java_stderr_kept_for_errors():
    """The tokeniser's Java process reports "PTBTokenizer tokenized N tokens ..." on the inherited stderr
    at every evaluation: keep that off the terminal (file descriptor 2 goes to a temporary file), and
    show it only when the tokeniser fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """PTB-tokenises {image: [caption, ...]}, checking that no caption was lost or split."""
    request = {key: [{"caption": _one_line(c)} for c in caps] for key, caps in captions.items()}
    with _java_stderr_kept_for_errors():
        tokenized = PTBTokenizer().tokenize(request)
    for key, caps in captions.items():
        if len(tokenized.get(key, [])) != len(caps):
            raise RuntimeError(
                f"PTBTokenizer returned {len(tokenized.get(key, []))} captions for example {key}, expected {len(caps)}"
            )
    return tokenized


def spice_available() -> bool:
    """Whether SPICE can run without a download: CoreNLP 3.6.0's jar and models jar in spice/lib."""
    lib = os.path.join(spice_models.SPICEDIR, spice_models.SPICELIB)
    return all(os.path.exists(os.path.join(lib, f"{spice_models.JAR}{suffix}.jar")) for suffix in ("", "-models"))


def _spice_score(refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> float:
    from pycocoevalcap.spice.spice import Spice

    score, _ = Spice().compute_score(refs, hyps)
    return float(score)


def coco_caption_metrics(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """SeqIO metric: {"bleu_4", "meteor", "rouge_l", "cider"} and, where `spice_available()`, "spice";
    each x100 as papers report them.

    Args:
      targets: per image, one reference caption or a list of them (COCO has about five).
      predictions: per image, the decoded caption.
    """
    _inputs.check_pairs(targets, predictions)
    if shutil.which("java") is None:
        raise RuntimeError("coco_caption_metrics needs Java (`java` on PATH) for the PTB tokeniser and METEOR")
    refs = {i: _inputs.as_references(target) for i, target in enumerate(targets)}
    if any(not r for r in refs.values()):
        raise ValueError("every caption target needs at least one reference")
    refs = _tokenize(refs)
    hyps = _tokenize({i: [_inputs.as_text(p)] for i, p in enumerate(predictions)})
    # METEOR's text protocol separates fields with "|||"; pycocoevalcap removes it from hypotheses only.
    meteor_refs = {i: [r.replace("|||", " ") for r in rs] for i, rs in refs.items()}

    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)  # [BLEU-1, ..., BLEU-4]
    rouge, _ = Rouge().compute_score(refs, hyps)
    cider, _ = Cider().compute_score(refs, hyps)
    scores = {
        "bleu_4": 100.0 * float(bleu[3]),
        "meteor": 100.0 * _meteor_score(meteor_refs, hyps),
        "rouge_l": 100.0 * float(rouge),
        "cider": 100.0 * float(cider),
    }
    if spice_available():  # as COCOEvalCap: on the PTB-tokenised captions
        scores["spice"] = 100.0 * _spice_score(refs, hyps)
    return scores


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def exact_match(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """SeqIO metric: {"exact_match": percent of predictions equal to any of their references}.

    Both sides are lower-cased and their whitespace collapsed; punctuation counts.
    """
    _inputs.check_pairs(targets, predictions)
    hits = [
        _normalize(_inputs.as_text(p)) in {_normalize(r) for r in _inputs.as_references(t)}
        for t, p in zip(targets, predictions)
    ]
    return {"exact_match": 100.0 * float(np.mean(hits))}
