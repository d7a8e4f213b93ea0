"""SeqIO metric functions: VQA v2 accuracy (official rules), COCO caption metrics, BLEU, exact match.

The VQA expectations are derived by hand from the official 2021 vqaEval.py rules (see
simvlm_jax/metrics/vqa.py); the first four are the golden values in /work/shared/OFFLINE_DATA.md.
The COCO tests start Java (PTB tokeniser, METEOR): about 15 s for the first call.
"""

import pytest
import sacrebleu

from simvlm_jax import metrics as metrics_lib
from simvlm_jax.metrics import vqa


def vqa_score(answers, prediction):
    return metrics_lib.vqa_accuracy([answers], [prediction])["vqa_accuracy"]


# ----------------------------------------------------------------------------------------------------
# Package layout
# ----------------------------------------------------------------------------------------------------


def test_importing_the_model_pulls_in_no_scorer():
    """The model layer does not depend on the evaluation scorers (pycocoevalcap, sacrebleu)."""
    import subprocess
    import sys

    code = (
        "import sys, simvlm_jax.model.simvlm_model, simvlm_jax.training.trainer; "
        "print(sorted(m for m in ('pycocoevalcap', 'sacrebleu', 'simvlm_jax.metrics') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ----------------------------------------------------------------------------------------------------
# VQA accuracy
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answers, prediction, expected",
    [
        # Golden cases (official 2021 version).
        (["yes"] * 10, "Yes.", 0.0),  # all agree: no normalisation, exact string match
        (["2"] * 10, "two", 0.0),
        (["red"] * 2 + ["blue"] * 8, "red", 60.0),  # (2 * 1/3 + 8 * 2/3) / 10
        (["red"] * 3 + ["blue"] * 7, "red", 90.0),  # (3 * 2/3 + 7 * 1) / 10
        # Answers disagree, so everything is normalised.
        (["yes"] * 9 + ["no"], "Yes.", 100.0),  # lower-cased, final period deleted
        (["a dog"] * 5 + ["dog"] * 5, "the dog", 100.0),  # articles dropped on both sides
        (["dont"] * 4 + ["don't"] * 6, "Dont", 100.0),  # contraction restored
        (["dont"] * 4 + ["don't"] * 6, "do not", 0.0),
        (["two"] * 3 + ["2"] * 3 + ["3"] * 4, "Two", 100.0),  # number words -> digits
        (["none"] + ["0"] + ["many"] * 8, "zero", 60.0),  # none, zero -> 0: two matches, as red x2
        (["1,000"] * 4 + ["1000"] * 6, "1000", 100.0),  # digit,digit: the comma is deleted
        (["red,blue"] * 5 + ["red blue"] * 5, "redblue", 0.0),  # otherwise a lone comma becomes a space
        (["red, blue"] * 3 + ["x"] * 7, "red blue", 90.0),  # a comma next to a space is deleted
        (["3.5"] * 4 + ["3"] * 6, "35", 0.0),  # a period before a digit stays
        (["3.5"] * 4 + ["3"] * 6, "3.5", 100.0),
        (["(red)"] * 3 + ["blue"] * 7, "red", 90.0),  # brackets become spaces, then split away
        (["yes\n"] * 10, "\tyes ", 100.0),  # newlines, tabs and outer spaces always go
        # Fewer than ten annotators.
        (["Yes"], "yes", 0.0),  # one answer: exact match of the stripped strings
        (["yes"], "yes", 100.0),
        (["red", "red"], "red", 100.0),  # divisor min(3, n - 1) = 1
        (["red", "red", "blue"], "red", 200.0 / 3),  # divisor 2: (1/2 + 1/2 + 1) / 3
        (["red"] * 3 + ["blue"] * 2, "red", 80.0),  # n = 5, official rule: (3 * 2/3 + 2 * 1) / 5
    ],
)
def test_vqa_accuracy_official_rules(answers, prediction, expected):
    assert vqa_score(answers, prediction) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Dog's bone!", "dog's bone"),  # "!" -> space; apostrophes are kept
        ("Couldnt've", "couldn't've"),
        ("couldntve", "couldntve"),  # not in the official table
        ("somebody'd", "somebodyd"),  # the official table's reversed entry
        ("Ten apples, please", "10 apples please"),
        ("e.g. 1.5", "eg 1.5"),
        ("a / b", "b"),  # "/" next to a space is deleted; "a" is an article
        ("4:30", "4:30"),  # colons are not punctuation here
    ],
)
def test_vqa_normalize_answer(text, expected):
    assert vqa.normalize_answer(text) == expected


def test_vqa_accuracy_averages_questions_and_decodes_bytes():
    targets = [[b"red"] * 2 + [b"blue"] * 8, ["yes"] * 10]
    assert metrics_lib.vqa_accuracy(targets, ["red", b"yes"]) == {"vqa_accuracy": pytest.approx(80.0)}


def test_vqa_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one answer"):
        metrics_lib.vqa_accuracy([[]], ["yes"])
    with pytest.raises(ValueError, match="1 targets but 2 predictions"):
        metrics_lib.vqa_accuracy([["yes"]], ["yes", "no"])


# ----------------------------------------------------------------------------------------------------
# COCO caption metrics
# ----------------------------------------------------------------------------------------------------

COCO_REFS = [
    ["A man riding a horse on a beach.", "A person rides a brown horse along the sand."],
    ["Two dogs playing in the snow.", "A pair of dogs run through snow."],
    ["A plate of food with broccoli and rice.", "A dinner plate with rice and vegetables."],
    ["A red bus parked on the street.", "A double decker bus on a city road."],
    "A cat sleeping on a laptop keyboard.",  # a single reference string
]


def test_coco_perfect_and_garbage_captions():
    perfect = metrics_lib.coco_caption_metrics(COCO_REFS, [r[0] if isinstance(r, list) else r for r in COCO_REFS])
    assert set(perfect) == {"bleu_4", "meteor", "rouge_l", "cider"}
    assert perfect["bleu_4"] == pytest.approx(100.0, abs=1e-6)
    assert perfect["rouge_l"] == pytest.approx(100.0)
    assert perfect["meteor"] > 90.0
    assert perfect["cider"] > 100.0

    garbage = metrics_lib.coco_caption_metrics(COCO_REFS, ["quantum zebra spoon"] * len(COCO_REFS))
    for name, value in garbage.items():
        assert value < 1.0, name


def test_spice_only_where_its_models_are_present(monkeypatch):
    """No CoreNLP jars here (pycocoevalcap would download them): no "spice" key, nothing downloaded. With the
    jars present, SPICE gets the same PTB-tokenised captions as the other scorers and reports x100 (the
    scorer's JVM run itself needs the jars: replaced here by a recording stand-in)."""
    from simvlm_jax.metrics import captioning

    assert not captioning.spice_available()  # this machine cannot fetch them
    seen = {}

    def fake_spice(refs, hyps):
        seen.update(refs=refs, hyps=hyps)
        return 0.25

    monkeypatch.setattr(captioning, "spice_available", lambda: True)
    monkeypatch.setattr(captioning, "_spice_score", fake_spice)
    scores = metrics_lib.coco_caption_metrics(COCO_REFS[:2], ["A man, riding a HORSE.", "two dogs"])
    assert scores["spice"] == pytest.approx(25.0) and {"bleu_4", "meteor", "rouge_l", "cider"} < set(scores)
    assert seen["hyps"] == {0: ["a man riding a horse"], 1: ["two dogs"]}  # tokenised, lower-cased
    assert seen["refs"][1] == ["two dogs playing in the snow", "a pair of dogs run through snow"]


def test_coco_closer_caption_scores_higher():
    base = ["a man on a horse", "dogs in the snow", "a plate of food", "a bus on a road", "a cat on a laptop"]
    closer = ["a man riding a horse on a beach"] + base[1:]
    farther = ["a man standing"] + base[1:]
    near, far = (metrics_lib.coco_caption_metrics(COCO_REFS, preds) for preds in (closer, farther))
    for name in near:
        assert near[name] > far[name], name


def test_exact_match():
    targets = [["A dog.", "a puppy"], "two  cats", "red"]
    predictions = ["a  PUPPY", "Two cats", "red."]  # the last one differs by punctuation
    assert metrics_lib.exact_match(targets, predictions) == {"exact_match": pytest.approx(200.0 / 3)}


# ----------------------------------------------------------------------------------------------------
# BLEU and accuracy
# ----------------------------------------------------------------------------------------------------


def test_bleu_equals_sacrebleu_corpus_bleu():
    hyps = ["The cat sits on the mat.", "A man plays a guitar on stage.", "Two children run in a park."]
    refs_a = [
        "The cat is sitting on the mat.",
        "A man is playing guitar on a stage.",
        "Two kids are running in the park.",
    ]
    refs_b = ["A cat sits on a mat.", "Someone plays the guitar.", "Children running through a park."]
    ours = metrics_lib.bleu([[a, b] for a, b in zip(refs_a, refs_b)], hyps)
    assert ours == {"bleu": pytest.approx(sacrebleu.corpus_bleu(hyps, [refs_a, refs_b], tokenize="13a").score)}

    single = metrics_lib.bleu(refs_a, hyps)  # one reference string per example
    assert single["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs_a]).score)
    assert single["bleu"] < ours["bleu"]  # a second reference can only add matches

    # Varying reference counts: the missing ones are sacrebleu's None.
    varying = metrics_lib.bleu([[refs_a[0], refs_b[0]], [refs_a[1]], [refs_a[2], refs_b[2]]], hyps)
    expected = sacrebleu.corpus_bleu(hyps, [refs_a, [refs_b[0], None, refs_b[2]]]).score
    assert varying["bleu"] == pytest.approx(expected)
    assert metrics_lib.bleu(refs_a, refs_a)["bleu"] == pytest.approx(100.0)


def test_accuracy():
    targets = ["entailment", b"Neutral", "contradiction", ["yes", "no"]]
    predictions = [" Entailment ", "neutral", "entailment", "no"]
    assert metrics_lib.accuracy(targets, predictions) == {"accuracy": pytest.approx(75.0)}
    with pytest.raises(ValueError, match="no examples"):
        metrics_lib.accuracy([], [])
