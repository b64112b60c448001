"""Explanation metrics against hand-worked values, and the differences that make the originals reproduction-only."""

import math

import pytest

from training.text_metrics import (
    bleu,
    bleu_char_original,
    explanation_metrics,
    metric_settings,
    rouge,
    rouge_unique_ngram_original,
)


def test_identical_texts_score_100_everywhere():
    texts = ["this lipstick has a lovely color", "great smell"]
    metrics = explanation_metrics(texts, texts)
    for key, value in metrics.items():
        # The originals' F-scores carry their 1e-8 / 1e-12 smoothing terms, hence the tolerance.
        assert value == pytest.approx(100.0, abs=1e-5), key


def test_word_bleu_hand_worked_pair():
    # hyp n-gram matches: 5/6 unigrams, 3/5 bigrams, 2/4 trigrams, 1/3 4-grams; equal lengths -> no brevity penalty.
    hypothesis, reference = ["the cat sat on the mat"], ["the cat sat on a mat"]
    assert bleu(hypothesis, reference, max_order=4) == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert bleu(hypothesis, reference, max_order=1) == pytest.approx(100 * 5 / 6)


def test_word_bleu_is_corpus_level_and_unsmoothed():
    # Pooled counts: unigrams 2/3 matched, lengths 3 vs 4 -> BP = exp(1 - 4/3). A missing 4-gram gives exactly 0.
    assert bleu(["a b", "c"], ["a b", "d e"], max_order=1) == pytest.approx(100 * 2 / 3 * math.exp(1 - 4 / 3))
    assert bleu(["a b c"], ["a b c"], max_order=4) == 0.0


def test_char_bleu_hand_worked_corpus():
    # Pair 1 "aab"/"abb": unigrams a,a,b vs a,b,b -> 2 of 3 clipped; bigrams aa,ab vs ab,bb -> 1 of 2.
    # Pair 2 "ab"/"abc": unigrams 2 of 2, bigram ab 1 of 1. Pooled: p1 = 4/5, p2 = 2/3, lengths 5 vs 6.
    assert bleu_char_original(["aab"], ["abb"], max_order=2) == pytest.approx(100 * math.sqrt(2 / 3 * 1 / 2))
    expected = 100 * math.exp(1 - 6 / 5) * math.sqrt(4 / 5 * 2 / 3)
    assert bleu_char_original(["aab", "ab"], ["abb", "abc"], max_order=2) == pytest.approx(expected)


def test_char_bleu_counts_spaces_as_characters():
    # "ab" vs "a b": every hypothesis character matches, but the reference has 3 characters -> BP = exp(1 - 3/2).
    assert bleu_char_original(["ab"], ["a b"], max_order=1) == pytest.approx(100 * math.exp(-0.5))
    # Same words in another order: word bigrams never match, character bigrams "ab" and "ba" do (2 of 4).
    assert bleu(["ab ba"], ["ba ab"], max_order=2) == 0.0
    assert bleu_char_original(["ab ba"], ["ba ab"], max_order=2) == pytest.approx(100 * math.sqrt(1.0 * 2 / 4))


def test_rouge_score_hand_worked_pair():
    # unigrams: 2 common of 3 / 4 -> F = 4/7; bigrams: 1 common of 2 / 3 -> F = 0.4; LCS = 2 -> F = 4/7.
    metrics = rouge(["the cat sat"], ["the cat ran away"])
    assert metrics["rouge1_p"] == pytest.approx(200 / 3) and metrics["rouge1_r"] == pytest.approx(50.0)
    assert metrics["rouge1_f"] == pytest.approx(400 / 7)
    assert metrics["rouge2_f"] == pytest.approx(40.0)
    assert metrics["rougeL_f"] == pytest.approx(400 / 7)


def test_rouge_averages_per_example():
    metrics = rouge(["the cat sat", "a b"], ["the cat ran away", "a b"])
    assert metrics["rouge1_f"] == pytest.approx((400 / 7 + 100) / 2)


def test_original_rouge_uses_unique_ngrams_and_is_case_sensitive():
    hypothesis, reference = ["the the the"], ["the cat"]
    original = rouge_unique_ngram_original(hypothesis, reference)
    standard = rouge(hypothesis, reference)
    # Sets: {the} vs {the, cat} -> P = 1, R = 1/2. rouge_score clips counts: P = 1/3, R = 1/2, F = 0.4.
    assert original["rouge1_p"] == pytest.approx(100.0) and original["rouge1_r"] == pytest.approx(50.0)
    assert original["rouge1_f"] == pytest.approx(200 / 3, abs=1e-5)
    assert standard["rouge1_p"] == pytest.approx(100 / 3) and standard["rouge1_f"] == pytest.approx(40.0)
    # LCS = 1, R = 1/2, P = 1/3, beta = P/R = 2/3: F = (1 + 4/9) * R * P / (R + 4/9 * P) = 13/35.
    assert original["rougeL_f"] == pytest.approx(100 * 13 / 35, abs=1e-6)
    assert rouge_unique_ngram_original(["The Cat"], ["the cat"])["rouge1_f"] == 0.0
    assert rouge(["The Cat"], ["the cat"])["rouge1_f"] == pytest.approx(100.0)


def test_original_rouge_splits_on_single_spaces():
    # A double space yields an empty "word", which the reference does not have.
    assert rouge_unique_ngram_original(["a  b"], ["a b"])["rouge1_p"] == pytest.approx(100 * 2 / 3)


def test_explanation_metrics_names_the_reproductions_explicitly():
    metrics = explanation_metrics(["a b c d"], ["a b c e"])
    originals = {key for key in metrics if key.endswith("_original")}
    assert originals == {"bleu1_char_original", "bleu4_char_original"} | {
        f"{name}_{part}_unique_ngram_original" for name in ("rouge1", "rouge2", "rougeL") for part in "prf"
    }
    assert metrics["bleu4"] == bleu(["a b c d"], ["a b c e"], 4)
    assert metrics["bleu4_char_original"] == bleu_char_original(["a b c d"], ["a b c e"], 4)


def test_metric_settings_record_the_libraries():
    settings = metric_settings()
    assert settings["bleu"]["library"] == "sacrebleu" and settings["bleu"]["tokenize"] == "none"
    assert settings["rouge"]["library"] == "rouge_score" and settings["rouge"]["version"]


@pytest.mark.parametrize("function", [bleu, bleu_char_original, rouge, rouge_unique_ngram_original])
def test_bad_corpora_are_rejected(function):
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        function(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty corpus"):
        function([], [])
