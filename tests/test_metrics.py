"""HR@k / NDCG@k modules against hand-computed values, and the parsing of decoded beams into rankings."""

import math
import os
import subprocess
import sys
from pathlib import Path

import evaluate
import pytest

from training.metrics import metric_path
from training.ranking import (
    ParsedOutputs,
    cutoff_means,
    parse_item_id,
    parse_outputs,
    ranking_metrics,
    target_rank,
    valid_share,
)

TARGET = 1000
FILLER = list(range(1, 21))  # 20 ids that are never the target


def ranking_with_target_at(rank: int | None) -> list[int]:
    """20 ranked ids with TARGET at `rank` (1-based), or absent."""
    ranking = list(FILLER)
    if rank is not None:
        ranking[rank - 1] = TARGET
    return ranking


# Hand-computed per-example values: HR@k = [rank <= k]; NDCG@k = 1 / log2(rank + 1) if rank <= k.
HAND = {
    1: {"hr@1": 1.0, "hr@5": 1.0, "hr@10": 1.0, "ndcg@5": 1.0, "ndcg@10": 1.0},
    5: {"hr@1": 0.0, "hr@5": 1.0, "hr@10": 1.0, "ndcg@5": 1 / math.log2(6), "ndcg@10": 1 / math.log2(6)},
    6: {"hr@1": 0.0, "hr@5": 0.0, "hr@10": 1.0, "ndcg@5": 0.0, "ndcg@10": 1 / math.log2(7)},
    11: {"hr@1": 0.0, "hr@5": 0.0, "hr@10": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0},
    None: {"hr@1": 0.0, "hr@5": 0.0, "hr@10": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0},
}


@pytest.fixture(scope="module")
def hit_rate():
    return evaluate.load(metric_path("hit_rate"), keep_in_memory=True)


@pytest.fixture(scope="module")
def ndcg():
    return evaluate.load(metric_path("ndcg"), keep_in_memory=True)


@pytest.mark.parametrize("rank", list(HAND))
def test_modules_per_example_hand_values(hit_rate, ndcg, rank):
    predictions, references = [ranking_with_target_at(rank)], [TARGET]
    got = hit_rate.compute(predictions=predictions, references=references, k=[1, 5, 10])
    got |= ndcg.compute(predictions=predictions, references=references, k=[5, 10])
    assert got == pytest.approx(HAND[rank])


def test_modules_average_over_examples(hit_rate, ndcg):
    predictions = [ranking_with_target_at(rank) for rank in HAND]
    references = [TARGET] * len(HAND)
    expected = {key: sum(values[key] for values in HAND.values()) / len(HAND) for key in HAND[1]}
    assert expected["hr@5"] == pytest.approx(2 / 5) and expected["ndcg@10"] > expected["ndcg@5"]
    got = hit_rate.compute(predictions=predictions, references=references, k=[1, 5, 10])
    got |= ndcg.compute(predictions=predictions, references=references, k=[5, 10])
    assert got == pytest.approx(expected)
    # The aggregation used by the protocols is the same code as the modules.
    assert ranking_metrics(predictions, references) == pytest.approx(expected)


def test_modules_single_k_and_batches(hit_rate, ndcg):
    assert hit_rate.compute(predictions=[ranking_with_target_at(6)], references=[TARGET], k=5) == {"hr@5": 0.0}
    for rank in (1, 6, None):
        ndcg.add_batch(predictions=[ranking_with_target_at(rank)], references=[TARGET])
    assert ndcg.compute(k=10) == pytest.approx({"ndcg@10": (1.0 + 1 / math.log2(7)) / 3})


def test_duplicates_in_predictions_keep_their_best_rank(hit_rate, ndcg):
    # Distinct ids before the target: 5 and 6 -> rank 3, whatever the repeats.
    predictions = [[5, 5, 6, 5, TARGET, TARGET]]
    assert target_rank(predictions[0], TARGET) == 3
    assert hit_rate.compute(predictions=predictions, references=[TARGET], k=[2, 3]) == {"hr@2": 0.0, "hr@3": 1.0}
    assert ndcg.compute(predictions=predictions, references=[TARGET], k=3) == pytest.approx({"ndcg@3": 0.5})


@pytest.mark.parametrize("k", [0, -1, True, [], [5, 0], 2.5])
def test_bad_cutoffs_are_rejected(k):
    with pytest.raises(ValueError, match="cut-off k"):
        cutoff_means("hr", [[1]], [1], k)


def test_mismatched_or_empty_inputs_are_rejected():
    with pytest.raises(ValueError, match="2 rankings but 1 targets"):
        ranking_metrics([[1], [2]], [1])
    with pytest.raises(ValueError, match="no examples"):
        ranking_metrics([], [])


def test_metric_path_names_the_available_modules(tmp_path):
    assert Path(metric_path("ndcg"), "ndcg.py").is_file()
    with pytest.raises(ValueError, match=r"available: \['hit_rate', 'ndcg'\]"):
        metric_path("recall")


def test_modules_load_offline_from_a_fresh_process(tmp_path):
    """Nothing is fetched: with the Hub disabled, a fresh interpreter loads both modules by path."""
    code = (
        "import evaluate\n"
        "from training.metrics import metric_path\n"
        "m = evaluate.load(metric_path('hit_rate'))\n"
        "print(m.compute(predictions=[[3, 7]], references=[7], k=1)['hr@1'])\n"
        "print(evaluate.load(metric_path('ndcg')).compute(predictions=[[3, 7]], references=[7], k=2)['ndcg@2'])\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert output.stdout.split() == ["0.0", str(1 / math.log2(3))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        (" 12\n", 12),
        ("0", 0),
        ("12a", None),
        ("", None),
        ("-3", None),
        ("+3", None),
        ("1_000", None),
        ("3.0", None),
        ("١٢", None),
        ("12 13", None),
    ],
)
def test_parse_item_id(text, expected):
    assert parse_item_id(text) == expected


def test_parse_outputs_duplicates_keep_best_rank():
    # The original let the later duplicate overwrite the score, moving 7 from rank 1 to rank 3.
    parsed = parse_outputs(["7", "3", "7", "9"])
    assert parsed == ParsedOutputs(ranking=[7, 3, 9], num_outputs=4, num_valid=4)
    assert target_rank(parsed.ranking, 7) == 1


def test_parse_outputs_drops_garbage_and_counts_it():
    parsed = parse_outputs(["foo", "12", "", "12 13", "5", "<extra_id_0>"])
    assert parsed == ParsedOutputs(ranking=[12, 5], num_outputs=6, num_valid=2)


def test_parse_outputs_catalogue_validity_and_dropping():
    catalogue = {1, 2, 3}
    kept = parse_outputs(["1", "999", "2"], valid_ids=catalogue)  # paper protocol: 999 occupies rank 2
    dropped = parse_outputs(["1", "999", "2"], valid_ids=catalogue, drop_invalid=True)
    assert kept == ParsedOutputs(ranking=[1, 999, 2], num_outputs=3, num_valid=2)
    assert dropped == ParsedOutputs(ranking=[1, 2], num_outputs=3, num_valid=2)
    assert ranking_metrics([kept.ranking], [2])["ndcg@5"] == pytest.approx(0.5)
    assert ranking_metrics([dropped.ranking], [2])["ndcg@5"] == pytest.approx(1 / math.log2(3))
    with pytest.raises(ValueError, match="needs valid_ids"):
        parse_outputs(["1"], drop_invalid=True)


def test_fewer_valid_outputs_than_k_are_misses_not_crashes():
    outputs = [["4", "oops"], ["junk", "junk"], []]
    parsed = [parse_outputs(o) for o in outputs]
    metrics = ranking_metrics([p.ranking for p in parsed], [4, 4, 4])
    assert metrics["hr@10"] == pytest.approx(1 / 3) and metrics["hr@1"] == pytest.approx(1 / 3)
    assert metrics["ndcg@10"] == pytest.approx(1 / 3)


def test_valid_share_pools_all_outputs():
    parsed = [parse_outputs(["1", "x", "2", "y"]), parse_outputs(["3", "4"])]
    assert valid_share(parsed) == pytest.approx(4 / 6)  # not the mean of per-example shares (0.75)
    with pytest.raises(ValueError, match="no decoded outputs"):
        valid_share([parse_outputs([])])
