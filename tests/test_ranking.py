"""Rank decoding (decoder_params candidates / method 'rank', model/ranking.py): each candidate's score is
`score_batch`'s score of that candidate as the target, in chunks or not, and the best candidates win."""

import jax
import numpy as np
import pytest
import seqio

from simvlm_jax.model import ranking
from tests.helpers import L_DEC, B, make_batch, make_model

CANDIDATES = ["yes", "no", "2", "red", "dark blue", "x"]  # byte tokens: lengths 3, 2, 1, 3, 9, 1


@pytest.fixture(scope="module")
def tiny():
    model = make_model(vocab_size=259)
    model.output_vocabulary = seqio.ByteVocabulary()  # ids 3 + byte, EOS 1
    batch = make_batch()
    shapes = {name: value.shape for name, value in batch.items()}
    params = model.get_initial_variables(jax.random.key(0), shapes)["params"]
    return model, params, batch


def score_with_score_batch(model, params, batch, candidates):
    """float32 [B, K]: score_batch of every (example, candidate), one candidate at a time, padded to L."""
    targets = ranking.candidate_targets(model.output_vocabulary, candidates, eos_id=1)
    columns = []
    for row in targets:
        scoring = dict(batch)
        scoring["decoder_target_tokens"] = np.repeat(row[None], B, axis=0)
        scoring["decoder_input_tokens"] = np.pad(scoring["decoder_target_tokens"][:, :-1], ((0, 0), (1, 0)))
        scoring["decoder_loss_weights"] = (scoring["decoder_target_tokens"] > 0).astype(np.int32)
        columns.append(np.asarray(model.score_batch(params, scoring)))
    return np.stack(columns, axis=1)


def test_candidate_targets_end_in_eos_and_pad_to_the_longest():
    targets = ranking.candidate_targets(seqio.ByteVocabulary(), ["ab", "c"], eos_id=1)
    np.testing.assert_array_equal(targets, [[ord("a") + 3, ord("b") + 3, 1], [ord("c") + 3, 1, 0]])
    with pytest.raises(ValueError, match="no tokens"):
        ranking.candidate_targets(seqio.ByteVocabulary(), ["ab", ""], eos_id=1)


@pytest.mark.parametrize("tokens_per_chunk", [2048, 2 * 10])  # one chunk of 6; chunks of 1 (padding none)
def test_rank_scores_every_candidate_as_score_batch_does(tiny, monkeypatch, tokens_per_chunk):
    model, params, batch = tiny
    monkeypatch.setattr(ranking, "TOKENS_PER_CHUNK", tokens_per_chunk)
    expected = score_with_score_batch(model, params, batch, CANDIDATES)  # [B, K]
    assert np.all(np.isfinite(expected)) and np.all(expected < 0)
    k = len(CANDIDATES)
    tokens, aux = model.predict_batch_with_aux(
        params, batch, decoder_params={"candidates": CANDIDATES}, num_decodes=k, return_all_decodes=True
    )
    order = np.argsort(-expected, axis=1, kind="stable")
    np.testing.assert_allclose(aux["scores"], np.take_along_axis(expected, order, axis=1), rtol=1e-5, atol=1e-5)
    targets = ranking.candidate_targets(model.output_vocabulary, CANDIDATES, eos_id=1)
    np.testing.assert_array_equal(tokens, targets[order])
    # The single answer: the best candidate's tokens, decoded back to its text.
    best, best_aux = model.predict_batch_with_aux(params, batch, decoder_params={"candidates": CANDIDATES})
    assert best.shape == (B, targets.shape[1])
    texts = [model.output_vocabulary.decode([t for t in row if t > 1]) for row in np.asarray(best)]
    assert texts == [CANDIDATES[i] for i in np.argmax(expected, axis=1)]
    np.testing.assert_allclose(best_aux["scores"], expected.max(axis=1), rtol=1e-5, atol=1e-5)


def test_chunks_with_padding_rows_give_the_same_scores(tiny, monkeypatch):
    """4 candidates per chunk over 6: the second chunk has 2 padding rows, which are cut off."""
    model, params, batch = tiny
    length = ranking.candidate_targets(model.output_vocabulary, CANDIDATES, eos_id=1).shape[1]
    monkeypatch.setattr(ranking, "TOKENS_PER_CHUNK", B * length * 4)
    assert ranking.chunk_size(B, length, len(CANDIDATES)) == 4
    params_only = {"candidates": CANDIDATES, "return_all_decodes": True, "num_decodes": len(CANDIDATES)}
    _, aux = model.predict_batch_with_aux(params, batch, decoder_params=params_only)
    expected = np.sort(score_with_score_batch(model, params, batch, CANDIDATES), axis=1)[:, ::-1]
    np.testing.assert_allclose(aux["scores"], expected, rtol=1e-5, atol=1e-5)


def test_rank_settings_are_checked(tiny):
    model, params, batch = tiny
    for decoder_params, message in [
        ({"method": "rank"}, "needs candidates"),
        ({"method": "greedy", "candidates": ["a"]}, "needs candidates"),
        ({"candidates": "yes"}, "not one string"),
        ({"candidates": ["a", "b"], "num_decodes": 3}, "> the 2 candidates"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.predict_batch_with_aux(params, batch, decoder_params=decoder_params)
    with pytest.raises(ValueError, match="prompt_with_targets"):
        model.predict_batch_with_aux(params, batch, decoder_params={"candidates": ["a"]}, prompt_with_targets=True)
    assert batch["decoder_input_tokens"].shape[1] == L_DEC
