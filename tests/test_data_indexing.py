"""Item indexing strategies and P5's seeded negative sampler."""

from __future__ import annotations

import numpy as np
import pytest

from data_builders.domain import Interactions
from data_builders.indexing import INDEXINGS, item_index
from data_builders.splits import p5_negatives
from tests.data_fixture import paper_sequences


@pytest.fixture
def interactions() -> Interactions:
    return Interactions.from_lists(paper_sequences(60, 150, seed=3))


def test_every_strategy_is_a_bijection_fixing_zero(interactions):
    num_items = int(interactions.items.max())
    rng = np.random.default_rng(0)
    has_image = rng.random(num_items + 1) < 0.8  # `visual` clusters the photographed items, the others go last
    features = (rng.normal(size=(num_items + 1, 8)) * has_image[:, None], has_image)
    for name in INDEXINGS:
        new_id = item_index(name, num_items, interactions, seed=1, features=features)
        assert new_id[0] == 0
        assert sorted(new_id[1:].tolist()) == list(range(1, num_items + 1)), name
    np.testing.assert_array_equal(item_index("paper", num_items, interactions, 1), np.arange(num_items + 1))
    with pytest.raises(ValueError, match="unknown item indexing 'alphabetical'"):
        item_index("alphabetical", num_items, interactions, 1)


def test_random_indexing_depends_only_on_the_seed(interactions):
    num_items = int(interactions.items.max())
    first = item_index("random", num_items, interactions, seed=4)
    np.testing.assert_array_equal(first, item_index("random", num_items, interactions, seed=4))
    assert not np.array_equal(first, item_index("random", num_items, interactions, seed=5))
    # the P5 id prior disappears: consecutive purchases no longer get consecutive ids
    items, users = interactions.items, np.repeat(np.arange(interactions.num_users), interactions.lengths)
    same_user = users[1:] == users[:-1]
    paper_steps = np.mean((items[1:] == items[:-1] + 1)[same_user])
    shuffled = first[items]
    random_steps = np.mean((shuffled[1:] == shuffled[:-1] + 1)[same_user])
    assert paper_steps > 0.1 and random_steps < 0.03


def test_sequential_train_first_numbers_training_items_first():
    # paper ids; training parts [1 2 3] and [6 2 7], validation items 4 and 8, test items 5 and 9
    interactions = Interactions.from_lists([[1, 2, 3, 4, 5], [6, 2, 7, 8, 9]])
    new_id = item_index("sequential_train_first", 9, interactions, seed=0)
    assert new_id[[1, 2, 3, 6, 7]].tolist() == [1, 2, 3, 4, 5]
    assert new_id[[4, 8]].tolist() == [6, 7]
    assert new_id[[5, 9]].tolist() == [8, 9]


def test_sequential_train_first_property(interactions):
    num_items = int(interactions.items.max())
    new_id = item_index("sequential_train_first", num_items, interactions, seed=0)
    position = interactions.position_in_user()
    in_train = position < np.repeat(interactions.lengths - 2, interactions.lengths)
    train_items = np.unique(interactions.items[in_train])
    held_out_only = np.setdiff1d(interactions.items, train_items)
    assert len(held_out_only) > 0
    assert new_id[train_items].max() < new_id[held_out_only].min()


def _p5_sample_test_data(sequences: list[list[int]], seed: int) -> list[list[int]]:
    """P5's `sample_test_data` as written in its notebook (np.random.seed + choice, ids kept as strings)."""
    np.random.seed(seed)
    item_count: dict[int, int] = {}
    for items in sequences:
        for item in items:
            item_count[item] = item_count.get(item, 0) + 1
    all_item = list(item_count.keys())
    out = []
    for user_seq in sequences:
        test_samples: list[str] = []
        while len(test_samples) < 99:
            sample_ids = np.random.choice(all_item, 99, replace=False)
            sample_ids = [str(item) for item in sample_ids if item not in user_seq and item not in test_samples]
            test_samples.extend(sample_ids)
        out.append([int(i) for i in test_samples[:99]])
    return out


def test_negatives_follow_p5s_stream_without_its_duplicates():
    sequences = paper_sequences(400, 20000, seed=3)  # a sparse catalogue, like the real domains
    interactions = Interactions.from_lists(sequences)
    ours = p5_negatives(interactions, seed=2022)
    state = np.random.get_state()
    try:
        theirs = _p5_sample_test_data(sequences, 2022)
    finally:
        np.random.set_state(state)
    assert ours.shape == (400, 99)
    for row, sequence in zip(ours, sequences, strict=True):
        assert len(set(row.tolist())) == 99 and not set(row.tolist()) & set(sequence)
    same = [u for u, row in enumerate(theirs) if len(set(row)) == 99]
    assert len(same) >= 360  # P5's duplicate bug only bites a few users
    np.testing.assert_array_equal(ours[same], np.array(theirs)[same])
    assert not np.array_equal(ours, p5_negatives(interactions, seed=2023))
