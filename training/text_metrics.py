"""Explanation metrics: word-level BLEU (sacrebleu) and ROUGE (rouge_score), plus the original VIP5 variants.

The paper's BLEU is word-level (P5 split on whitespace; anchors §4.5), while the released VIP5 notebook passed raw
strings and so computed a character BLEU (spec §6.3); its ROUGE counts unique n-grams of a split on single spaces
(spec §6.4). The standard metrics come from the libraries; the two originals are written out under names ending in
`_original`, for reproducing the notebook's numbers only. Scores are percentages, as in the paper.
"""

from collections.abc import Sequence
from importlib.metadata import version

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from sacrebleu.metrics.helpers import extract_all_char_ngrams

# sacrebleu settings of the word-level BLEU: whitespace tokens, no smoothing, case-sensitive (= P5's word BLEU, the
# TF-NMT compute_bleu on str.split()). Recorded with every result so the protocol of the number is explicit.
BLEU_OPTIONS = {"tokenize": "none", "smooth_method": "none", "lowercase": False}
# rouge_score settings: its default tokenizer (lower-cases, keeps [a-z0-9] runs), no stemming, n-gram counts clipped.
ROUGE_OPTIONS = {"use_stemmer": False}
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up one to one")
    if not hypotheses:
        raise ValueError("no hypotheses: text metrics are undefined on an empty corpus")


def bleu(hypotheses: Sequence[str], references: Sequence[str], max_order: int = 4) -> float:
    """Corpus BLEU-`max_order` on whitespace words with sacrebleu (one reference per hypothesis)."""
    _check_pairs(hypotheses, references)
    return BLEU(max_ngram_order=max_order, **BLEU_OPTIONS).corpus_score(list(hypotheses), [list(references)]).score


def metric_settings() -> dict[str, dict[str, object]]:
    """The libraries, versions and options behind `bleu` and `rouge`, to store in a result's `settings`."""
    return {
        "bleu": {"library": "sacrebleu", "version": version("sacrebleu"), **BLEU_OPTIONS},
        "rouge": {"library": "rouge_score", "version": version("rouge_score"), **ROUGE_OPTIONS},
    }


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L precision, recall and F with `rouge_score`, per example then averaged (keys like `rouge1_f`)."""
    _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), **ROUGE_OPTIONS)
    sums = {f"{name}_{part}": 0.0 for name in ROUGE_TYPES for part in ("p", "r", "f")}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        for name, score in scorer.score(reference, hypothesis).items():
            sums[f"{name}_p"] += score.precision
            sums[f"{name}_r"] += score.recall
            sums[f"{name}_f"] += score.fmeasure
    return {key: 100.0 * total / len(hypotheses) for key, total in sums.items()}


def bleu_char_original(hypotheses: Sequence[str], references: Sequence[str], max_order: int = 4) -> float:
    """Reproduction only: the VIP5 notebook's BLEU, i.e. TF-NMT `compute_bleu` (no smoothing) on characters.

    Strings were passed where token lists were expected, so every character, spaces included, is a token: n-gram
    counts, clipped matches and the brevity penalty are all over characters, pooled over the corpus (spec §6.3).
    The pooled statistics then go through sacrebleu's unsmoothed BLEU formula, which is the same formula.
    """
    _check_pairs(hypotheses, references)
    correct = [0] * max_order
    total = [0] * max_order
    hypothesis_length = reference_length = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hypothesis_length += len(hypothesis)
        reference_length += len(reference)
        hypothesis_ngrams = extract_all_char_ngrams(hypothesis, max_order, include_whitespace=True)
        reference_ngrams = extract_all_char_ngrams(reference, max_order, include_whitespace=True)
        for order in range(max_order):
            correct[order] += sum((hypothesis_ngrams[order] & reference_ngrams[order]).values())
            total[order] += max(0, len(hypothesis) - order)
    return BLEU.compute_bleu(
        correct, total, hypothesis_length, reference_length, smooth_method="none", max_ngram_order=max_order
    ).score


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (row-by-row dynamic programme)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_unique_ngram_original(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Reproduction only: the VIP5/P5 notebook's ROUGE (TF-NMT port of sumy; spec §6.4).

    Case-sensitive split on single spaces; ROUGE-N compares *sets* of unique n-grams, F = 2PR / (P + R + 1e-8);
    ROUGE-L is sentence-level LCS with beta = P / (R + 1e-12). Per example, then averaged, keys like `rouge1_f`.
    """
    _check_pairs(hypotheses, references)
    sums = {f"{name}_{part}": 0.0 for name in ROUGE_TYPES for part in ("p", "r", "f")}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp_words, ref_words = hypothesis.split(" "), reference.split(" ")
        for n in (1, 2):
            hyp_ngrams = {tuple(hyp_words[i : i + n]) for i in range(len(hyp_words) - n + 1)}
            ref_ngrams = {tuple(ref_words[i : i + n]) for i in range(len(ref_words) - n + 1)}
            overlap = len(hyp_ngrams & ref_ngrams)
            precision = overlap / len(hyp_ngrams) if hyp_ngrams else 0.0
            recall = overlap / len(ref_ngrams) if ref_ngrams else 0.0
            sums[f"rouge{n}_p"] += precision
            sums[f"rouge{n}_r"] += recall
            sums[f"rouge{n}_f"] += 2.0 * precision * recall / (precision + recall + 1e-8)
        lcs = _lcs_length(hyp_words, ref_words)
        recall, precision = lcs / len(ref_words), lcs / len(hyp_words)
        beta = precision / (recall + 1e-12)
        sums["rougeL_p"] += precision
        sums["rougeL_r"] += recall
        sums["rougeL_f"] += (1 + beta**2) * recall * precision / (recall + beta**2 * precision + 1e-12)
    return {key: 100.0 * total / len(hypotheses) for key, total in sums.items()}


def explanation_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Everything the explanation protocol reports; the original variants carry explicit `_original` names."""
    metrics = {"bleu1": bleu(hypotheses, references, 1), "bleu4": bleu(hypotheses, references, 4)}
    metrics.update(rouge(hypotheses, references))
    metrics["bleu1_char_original"] = bleu_char_original(hypotheses, references, 1)
    metrics["bleu4_char_original"] = bleu_char_original(hypotheses, references, 4)
    metrics.update(
        {
            f"{key}_unique_ngram_original": value
            for key, value in rouge_unique_ngram_original(hypotheses, references).items()
        }
    )
    return metrics


__all__ = [
    "BLEU_OPTIONS",
    "ROUGE_OPTIONS",
    "bleu",
    "bleu_char_original",
    "explanation_metrics",
    "metric_settings",
    "rouge",
    "rouge_unique_ngram_original",
]
