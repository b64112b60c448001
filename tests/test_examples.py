"""The training task mix and the fixed evaluation examples (spec §3.4–3.6)."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from training.examples import DomainTables, TrainingExamples, evaluation_examples

SEEN = {"sequential": [f"A-{i}" for i in range(1, 9)], "direct": [f"B-{i}" for i in range(1, 8)],
        "explanation": [f"C-{i}" for i in range(1, 12)]}


def make_tables(num_users: int = 6, num_items: int = 300) -> tuple[DomainTables, dict]:
    rng = np.random.default_rng(0)
    full = {u: [int(i) for i in rng.choice(np.arange(1, num_items + 1), size=5 + u, replace=False)]
            for u in range(1, num_users + 1)}
    sequential = {
        "train": datasets.Dataset.from_dict({"user_id": list(full), "history": [s[:-3] for s in full.values()],
                                             "target": [s[-3] for s in full.values()]}),
        "test": datasets.Dataset.from_dict({"user_id": list(full), "history": [s[:-1] for s in full.values()],
                                            "target": [s[-1] for s in full.values()]}),
    }
    users = datasets.Dataset.from_dict({"user_id": list(full), "name": [f"name{u}" for u in full]})
    items = datasets.Dataset.from_dict({"item_id": list(range(1, num_items + 1)),
                                        "title": [f"title {i}" for i in range(1, num_items + 1)]})
    return DomainTables.from_datasets(sequential, users, items), full


def make_explanations(n: int = 4) -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "user_id": [1] * n, "item_id": list(range(10, 10 + n)), "user_desc": ["ann"] * n, "title": ["a lamp"] * n,
        "star_rating": [5, 4, 1, 3][:n], "feature": ["light"] * n, "summary": ["nice"] * n,
        "explanation": ["it is bright"] * n,
    })


def test_epoch_has_the_original_counts_and_is_reproducible_by_position():
    tables, full = make_tables()
    examples = TrainingExamples(tables, SEEN, explanation=make_explanations())
    assert len(examples) == 6 * 10 + 6 * 10 + 4
    first = [examples[i] for i in range(len(examples))]
    assert [examples[i] for i in range(len(examples))] == first  # recomputable from (seed, epoch, index)
    examples.set_epoch(1)
    assert [examples[i] for i in range(len(examples))] != first
    families = [e.template_id[0] for e in first]
    assert families == ["A"] * 60 + ["B"] * 60 + ["C"] * 4
    assert {e.template_id for e in first} <= {t for ids in SEEN.values() for t in ids}


def test_sequential_targets_follow_the_original_positions():
    tables, full = make_tables()
    examples = TrainingExamples(tables, {"sequential": ["A-1"]})
    for epoch in range(5):
        examples.set_epoch(epoch)
        for i in range(len(examples)):
            ex = examples[i]
            train = full[ex.fields["user_id"]][:-2]
            m, target, history = len(train), ex.fields["target_item_id"], ex.fields["history"]
            t = train.index(target) + 1
            assert max(3, m - 2) <= t <= m
            assert history == train[t - 1 - len(history) : t - 1] and train.index(history[0]) < 3
            assert ex.separator in (",", "->")


def test_direct_candidates_hold_the_positive_and_only_unseen_negatives():
    tables, full = make_tables()
    examples = TrainingExamples(tables, {"direct": ["B-5"]})
    for i in range(len(examples)):
        ex = examples[i]
        user_items = set(full[ex.fields["user_id"]])
        candidates = ex.fields["candidates"]
        assert len(candidates) == len(set(candidates)) == 100
        assert ex.fields["target_item_id"] in candidates and ex.fields["target_item_id"] in user_items
        assert not (set(candidates) - {ex.fields["target_item_id"]}) & user_items


def test_yes_no_prompts_are_balanced_and_negatives_are_unseen():
    tables, full = make_tables()
    examples = TrainingExamples(tables, {"direct": ["B-3"]}, direct_per_user=200)
    answers = [examples[i].fields["answer"] for i in range(len(examples))]
    assert 0.4 < answers.count("yes") / len(answers) < 0.6
    for i in range(50):
        ex = examples[i]
        assert (ex.fields["item_id"] in full[ex.fields["user_id"]]) == (ex.fields["answer"] == "yes")
        assert ex.fields["item_title"] == f"title {ex.fields['item_id']}"


def test_rating_prompts_use_the_noisy_rating_in_training_only():
    examples = TrainingExamples(make_tables()[0], {"explanation": ["C-7"]}, explanation=make_explanations())
    ratings = [examples[i].fields["star_rating"] for i in range(4)]
    assert all(isinstance(r, float) and 1.0 <= r <= 5.0 for r in ratings)
    assert abs(ratings[2] - 1.2) < 0.5  # the 1-star review
    fixed = evaluation_examples("explanation", "C-7", make_explanations())
    assert [e.fields["star_rating"] for e in fixed] == [5, 4, 1, 3]


def test_evaluation_candidates_are_the_dataset_ones_in_a_fixed_order():
    tables, _ = make_tables()
    rows = [{"user_id": 1, "positive": 7, "negatives": list(range(100, 199))}]
    a, b = evaluation_examples("direct", "B-5", rows, tables), evaluation_examples("direct", "B-5", rows, tables)
    assert a == b
    assert sorted(a[0].fields["candidates"]) == [7, *range(100, 199)]
    assert a[0].fields["candidates"] != [*range(100, 199), 7]
    assert a[0].fields["user_desc"] == "name1"


def test_missing_test_users_are_reported():
    tables, full = make_tables()
    seq = {"train": datasets.Dataset.from_dict({"user_id": [1, 2], "history": [[1, 2], [3, 4]], "target": [3, 5]}),
           "test": datasets.Dataset.from_dict({"user_id": [1], "history": [[1, 2, 3, 9]], "target": [8]})}
    with pytest.raises(ValueError, match=r"lacks users \[2\]"):
        DomainTables.from_datasets(seq)


def test_all_positions_give_every_training_transition_once_per_epoch():
    """`sequential_targets="all"`: one A prompt per training position (2nd item on), each with the purchases before
    it (the latest `max_history` of them), whatever the epoch's template draws."""
    tables, full = make_tables()
    examples = TrainingExamples(tables, {"sequential": ["A-3"]}, sequential_targets="all", max_history=2)
    expected = sorted((u, tuple(s[:-2][max(0, t - 2):t]), s[:-2][t]) for u, s in full.items()
                      for t in range(1, len(s) - 2))
    seen = sorted((e.fields["user_id"], tuple(e.fields["history"]), e.fields["target_item_id"])
                  for e in (examples[i] for i in range(len(examples))))
    assert len(examples) == sum(len(s) - 3 for s in full.values()) and seen == expected


def test_latest_direct_positive_is_the_last_training_purchase():
    tables, full = make_tables()
    examples = TrainingExamples(tables, {"direct": ["B-5"]}, direct_per_user=3, direct_positives="latest")
    for i in range(len(examples)):
        fields = examples[i].fields
        assert fields["target_item_id"] == full[fields["user_id"]][-3] and fields["target_item_id"] in fields["candidates"]


def test_popularity_negatives_follow_training_purchases_and_stay_unseen():
    tables, full = make_tables(num_users=40, num_items=300)
    weights = tables.popularity_weights()
    assert weights.shape == tables.item_ids.shape and np.isclose(weights.sum(), 1.0) and (weights > 0).all()
    bought = np.bincount(np.concatenate(tables.train_sequences), minlength=301)[tables.item_ids]
    assert weights[bought.argmax()] > weights[bought.argmin()]  # bought in training: drawn more often
    uniform = TrainingExamples(tables, {"direct": ["B-5"]}, direct_per_user=5)
    weighted = TrainingExamples(tables, {"direct": ["B-5"]}, direct_per_user=5, direct_negatives="popularity")
    popular = set(tables.item_ids[bought >= np.quantile(bought, 0.75)].tolist())

    def share_popular(examples: TrainingExamples) -> float:
        drawn = []
        for i in range(len(examples)):
            ex = examples[i]
            negatives = set(ex.fields["candidates"]) - {ex.fields["target_item_id"]}
            assert len(negatives) == 99 and not negatives & set(full[ex.fields["user_id"]])
            drawn += list(negatives)
        return np.mean([item in popular for item in drawn])

    assert share_popular(weighted) > share_popular(uniform) + 0.08
