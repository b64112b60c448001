"""Popularity, transition and random baselines on a hand-made dataset, and as floors on the real Beauty data."""

import math
from collections import Counter

import pytest
from conftest import require_shared

from training.baselines import PopularityBaseline, RandomBaseline, TransitionBaseline
from training.ranking import ranking_metrics

# Training interactions give counts 3 -> 3, 2 -> 2, 1 -> 1; items 4, 5, 6 never occur (popularity order 3,2,1,4,5,6).
TRAIN = [[1, 2, 3], [2, 3], [3]]
CATALOGUE = range(1, 7)
# (history, target) pairs of three users.
TEST = [([1, 2, 3], 4), ([2, 3], 1), ([3], 2)]


@pytest.fixture
def popularity() -> PopularityBaseline:
    return PopularityBaseline(TRAIN, CATALOGUE)


def test_popularity_catalogue_ranking(popularity):
    assert popularity.rank_catalogue(3) == [3, 2, 1]
    assert popularity.rank_catalogue(3, exclude={3, 1}) == [2, 4, 5]
    assert popularity.rank_catalogue(10) == [3, 2, 1, 4, 5, 6]  # a catalogue smaller than k is no error


def test_popularity_metrics_on_hand_made_examples(popularity):
    targets = [target for _, target in TEST]
    plain = ranking_metrics([popularity.rank_catalogue(10) for _ in TEST], targets)
    # Every user gets 3,2,1,4,...: targets 4, 1, 2 sit at ranks 4, 3, 2.
    assert plain["hr@1"] == 0.0 and plain["hr@5"] == 1.0
    assert plain["ndcg@5"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(4) + 1 / math.log2(3)) / 3)
    # Skipping each user's history puts every target first.
    excluding = ranking_metrics([popularity.rank_catalogue(10, exclude=set(h)) for h, _ in TEST], targets)
    assert excluding["hr@1"] == 1.0 and excluding["ndcg@10"] == 1.0


def test_popularity_candidates_keep_candidate_order_on_ties(popularity):
    assert popularity.rank_candidates([6, 5, 3, 2]) == [3, 2, 6, 5]
    assert popularity.rank_candidates([5, 6, 1, 4]) == [1, 5, 6, 4]
    assert popularity.rank_candidates([4, 3, 4]) == [3, 4]  # a repeated candidate is ranked once


def test_popularity_rejects_items_outside_the_catalogue():
    with pytest.raises(ValueError, match="1 items missing from the catalogue, e.g. \\[9\\]"):
        PopularityBaseline([[1, 9]], CATALOGUE)


@pytest.mark.parametrize("k", [0, -3, True])
def test_bad_k_is_rejected(popularity, k):
    with pytest.raises(ValueError, match="positive integer"):
        popularity.rank_catalogue(k)
    with pytest.raises(ValueError, match="positive integer"):
        RandomBaseline(CATALOGUE, seed=0).rank_catalogue(k, key=1)


def test_transition_ranks_followers_then_popularity():
    # followers in TRAIN: 1 -> 2 (once), 2 -> 3 (twice); 3 and 6 were never followed by anything
    transition = TransitionBaseline(TRAIN, CATALOGUE)
    assert transition.rank_catalogue(3, last=2) == [3, 2, 1]  # 3 followed 2; then popularity
    assert transition.rank_catalogue(3, last=1) == [2, 3, 1]  # 2 followed 1 though 3 is more popular
    assert transition.rank_catalogue(3, last=1, exclude={2}) == [3, 1, 4]
    assert transition.rank_catalogue(10, last=6) == [3, 2, 1, 4, 5, 6]  # no followers: popularity alone
    assert transition.rank_candidates([6, 5, 3, 2], last=1) == [2, 3, 6, 5]  # ties keep the candidate order
    assert transition.rank_candidates([4, 1, 1], last=9) == [1, 4]  # unknown last item, repeats ranked once
    with pytest.raises(ValueError, match="positive integer"):
        transition.rank_catalogue(0, last=1)


def test_random_is_reproducible_per_example_key():
    first, second = RandomBaseline(CATALOGUE, seed=7), RandomBaseline(CATALOGUE, seed=7)
    keys = [5, 1, 3]
    forward = {key: first.rank_catalogue(3, key=key) for key in keys}
    backward = {key: second.rank_catalogue(3, key=key) for key in reversed(keys)}
    assert forward == backward  # independent of evaluation order
    assert len({tuple(ranking) for ranking in forward.values()}) > 1  # but not the same for every example
    assert RandomBaseline(CATALOGUE, seed=8).rank_catalogue(6, key=5) != first.rank_catalogue(6, key=5)


def test_random_catalogue_ranking_is_distinct_and_skips_history():
    baseline = RandomBaseline(CATALOGUE, seed=0)
    for key in range(50):
        ranking = baseline.rank_catalogue(3, key=key, exclude={1, 2, 99})
        assert len(ranking) == len(set(ranking)) == 3
        assert set(ranking) <= {3, 4, 5, 6}
    assert sorted(baseline.rank_catalogue(10, key=0, exclude={1})) == [2, 3, 4, 5, 6]


def test_random_top_item_is_uniform():
    baseline = RandomBaseline(CATALOGUE, seed=0)
    counts = Counter(baseline.rank_catalogue(1, key=key)[0] for key in range(6000))
    assert set(counts) == set(CATALOGUE)
    assert all(800 < count < 1200 for count in counts.values())  # expected 1000 each, sd about 29


def test_random_candidates_are_a_permutation():
    baseline = RandomBaseline(CATALOGUE, seed=0)
    candidates = list(range(100, 200))
    orders = [baseline.rank_candidates(candidates, key=key) for key in range(3)]
    assert all(sorted(order) == candidates for order in orders)
    assert orders[0] != orders[1]
    assert baseline.rank_candidates([4, 3, 4], key=0) in ([3, 4], [4, 3])


def test_random_rejects_an_empty_catalogue():
    with pytest.raises(ValueError, match="catalogue is empty"):
        RandomBaseline([], seed=0)


def test_popularity_and_transition_are_floors_well_above_random_on_real_beauty():
    """Leave-one-out on the real Beauty interactions: training = all but the last two items of each user."""
    lines = require_shared("data", "amazon-beauty-p5", "sequential_data.txt").read_text().splitlines()
    sequences = [[int(token) for token in line.split()[1:]] for line in lines if line]
    catalogue = {item for sequence in sequences for item in sequence}
    targets = [sequence[-1] for sequence in sequences]
    histories = [set(sequence[:-1]) for sequence in sequences]
    popularity = PopularityBaseline([sequence[:-2] for sequence in sequences], catalogue)
    transition = TransitionBaseline([sequence[:-2] for sequence in sequences], catalogue)
    randomly = RandomBaseline(catalogue, seed=2022)
    pop = ranking_metrics([popularity.rank_catalogue(10, exclude=h) for h in histories], targets)
    chain = ranking_metrics([transition.rank_catalogue(10, last=s[-2], exclude=set(s[:-1])) for s in sequences],
                            targets)
    rnd = ranking_metrics([randomly.rank_catalogue(10, key=u, exclude=h) for u, h in enumerate(histories)], targets)
    assert len(sequences) == 22363 and len(catalogue) == 12101
    # Random HR@10 is about 10 / 12101 = 0.0008 (about 18 hits in 22,363 users); popularity must be far above it.
    assert rnd["hr@10"] < 0.002
    assert pop["hr@10"] > 5 * max(rnd["hr@10"], 10 / len(catalogue))
    assert pop["ndcg@10"] <= pop["hr@10"]
    # The user's last item says more than popularity: the transition floor is well above it. These are the numbers
    # the README quotes (HR@5 / NDCG@5 / HR@10 / NDCG@10), so a change in the baselines cannot leave it stale.
    assert chain["hr@10"] > 2 * pop["hr@10"], (chain, pop)
    quoted = {"popularity": (pop, (0.0075, 0.0041, 0.0115, 0.0055)),
              "transition": (chain, (0.0513, 0.0389, 0.0668, 0.0439))}
    for name, (measured, readme) in quoted.items():
        values = tuple(measured[m] for m in ("hr@5", "ndcg@5", "hr@10", "ndcg@10"))
        assert values == pytest.approx(readme, abs=5e-5), name
