"""Structured item ids (`collaborative`, `visual`): decimal prefixes group what they claim, held-out interactions play
no part, the ids stay plain integers that the tokenizer, the trie and the parser round-trip, and real co-purchases get
ids that share their leading digits far more often than random ids do."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import require_shared

from data_builders import build_domain
from data_builders.cli import main
from data_builders.domain import Interactions
from data_builders.indexing import item_index
from data_builders.p5_reader import read_sequences
from data_builders.semantic_ids import subtree_size, training_mask, trie_ids
from modeling_vip5.ranking import ItemTrie, item_token_ids, parse_item_id
from tests.data_fixture import write_features, write_p5_domain

GROUPS, GROUP_SIZE = 9, 111  # with 999 ids, leading digit d holds {d, d0-d9, d00-d99}: 111 ids


def _first_digits(ids: np.ndarray) -> set[str]:
    return {str(i)[0] for i in ids}


def test_subtree_sizes_count_decimal_prefixes():
    for limit in (1, 9, 10, 57, 500, 999, 1000, 12101):
        strings = [str(i) for i in range(1, limit + 1)]
        for prefix in (1, 3, 9, 12, 50, 121, 1210):
            assert subtree_size(prefix, limit) == sum(s.startswith(str(prefix)) for s in strings), (prefix, limit)
        assert sum(subtree_size(d, limit) for d in range(1, 10)) == limit


def test_every_decimal_prefix_is_one_cluster_of_planted_nested_groups():
    # 9 groups of 111 = a central item + 10 subgroups of 11: exactly the decimal trie of 1..999
    rng = np.random.default_rng(0)
    group, sub = rng.normal(size=(GROUPS, 16)) * 10, rng.normal(size=(GROUPS, 10, 16))
    vectors = np.concatenate(
        [np.concatenate([group[g][None], (group[g] + sub[g].repeat(11, axis=0))]) for g in range(GROUPS)]
    )
    vectors += rng.normal(size=vectors.shape) * 0.01
    ids = trie_ids(vectors, seed=3)
    assert sorted(ids.tolist()) == list(range(1, 1000))
    for g in range(GROUPS):
        members = ids[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]
        assert len(_first_digits(members)) == 1
        centre, rest = members[0], members[1:].reshape(10, 11)
        assert len(str(centre)) == 1  # the group's central item gets the one-digit prefix itself
        assert all(len({str(i)[:2] for i in subgroup}) == 1 for subgroup in rest)
    np.testing.assert_array_equal(ids, trie_ids(vectors, seed=3))


def _co_purchase_world(seed: int = 0) -> list[list[int]]:
    """Users buy within one of 9 groups of 111 items (5 % of purchases elsewhere); items 1000-1009 are only bought
    last, so they never occur in training."""
    rng = np.random.default_rng(seed)
    sequences = []
    for u in range(2700):
        g = u % GROUPS
        picks = rng.choice(GROUP_SIZE, 8, replace=False) + 1 + g * GROUP_SIZE
        stray = rng.random(8) < 0.05
        picks[stray] = rng.integers(1, GROUPS * GROUP_SIZE + 1, stray.sum())
        sequences.append(picks.tolist() + [int(rng.integers(1, 1000)), 1000 + u % 10])
    return sequences


def test_collaborative_ids_share_the_leading_digit_within_co_purchase_groups():
    sequences = _co_purchase_world()
    new_id = item_index("collaborative", 1009, Interactions.from_lists(sequences), seed=1)
    assert new_id[0] == 0 and sorted(new_id[1:].tolist()) == list(range(1, 1010))
    for g in range(GROUPS):
        assert len(_first_digits(new_id[1 + g * GROUP_SIZE : 1 + (g + 1) * GROUP_SIZE])) == 1, g
    assert sorted(new_id[1000:].tolist()) == list(range(1000, 1010))  # never in training: after every trained item

    # held-out items play no part: replace every user's last two items
    rng = np.random.default_rng(5)
    changed = [s[:-2] + rng.integers(1, 1010, 2).tolist() for s in sequences]
    np.testing.assert_array_equal(new_id, item_index("collaborative", 1009, Interactions.from_lists(changed), seed=1))


def test_visual_ids_group_near_identical_photos_and_put_items_without_one_last():
    rng = np.random.default_rng(2)
    looks = rng.normal(size=(GROUPS, 64))
    matrix = np.zeros((1005, 64), dtype=np.float32)
    matrix[1:1000] = looks.repeat(GROUP_SIZE, axis=0) + rng.normal(size=(999, 64)) * 0.05
    has_image = np.ones(1005, dtype=bool)
    has_image[[0, 1000, 1001, 1002, 1003, 1004]] = False
    order = np.concatenate([[0], rng.permutation(1004) + 1])  # the paper ids of the items do not matter
    new_id = item_index("visual", 1004, None, seed=0, features=(matrix[order], has_image[order]))
    by_paper = np.empty_like(new_id)
    by_paper[order] = new_id  # new id of each item of the world above
    for g in range(GROUPS):
        assert len(_first_digits(by_paper[1 + g * GROUP_SIZE : 1 + (g + 1) * GROUP_SIZE])) == 1, g
    assert sorted(by_paper[1000:].tolist()) == list(range(1000, 1005))
    with pytest.raises(ValueError, match="`visual` indexing needs image features"):
        item_index("visual", 1004, None, seed=0)


def test_structured_ids_round_trip_through_tokenizer_trie_and_parser(t5_tokenizer):
    new_id = item_index("collaborative", 1009, Interactions.from_lists(_co_purchase_world()), seed=1)
    ids = new_id[1:].tolist()
    tokens = item_token_ids(t5_tokenizer, ids)
    trie = ItemTrie(tokens, eos_token_id=t5_tokenizer.eos_token_id)
    assert len(trie) == len(ids)
    for item, sequence in tokens.items():
        assert trie.item(sequence) == item
        assert parse_item_id(t5_tokenizer.decode(sequence, skip_special_tokens=True)) == item


def test_build_records_the_scheme_and_visual_needs_features(tmp_path):
    domain = write_p5_domain(tmp_path / "toys")
    write_features(tmp_path / "feats", "vitb32", "toys", domain.asins[:-4], dim=512)
    out = tmp_path / "out"
    entry = build_domain(
        "p5",
        domain.root,
        "toys",
        out,
        indexing="visual",
        seed=7,
        encoders=("vitb32",),
        features_root=tmp_path / "feats",
    )
    assert entry["indexing"]["name"] == "visual" and entry["indexing"]["seed"] == 7
    assert entry["indexing"]["parameters"] == {"encoder": "vitb32"}
    assert json.loads((out / "vip5_dataset.json").read_text())["domains"]["toys"]["indexing"] == entry["indexing"]
    card = (out / "README.md").read_text()
    assert "`visual` (seed 7)" in card and "Parameters: `encoder` = `vitb32`." in card
    entry = build_domain("p5", domain.root, "toys", out, indexing="collaborative", seed=7)
    assert entry["indexing"]["parameters"] == {"embedding_dim": 32, "held_out_per_user": 2}
    with pytest.raises(ValueError, match="`visual` indexing needs image features"):
        build_domain("p5", domain.root, "toys", out, indexing="visual")
    arguments = ["build", "--source", "p5", "--input", str(domain.root), "--domain", "toys", "--output", str(out)]
    assert main([*arguments, "--indexing", "collaborative"]) == 0
    assert main([*arguments, "--indexing", "visual"]) == 1  # a one-line error, not a traceback


def _leading_digit_agreement(new_id: np.ndarray, interactions: Interactions) -> tuple[float, float]:
    """Over consecutive training purchases of a user (distinct items): the share whose ids start with the same digit,
    and the mean length of the ids' common decimal prefix."""
    keep = training_mask(interactions)
    users = np.repeat(np.arange(interactions.num_users), interactions.lengths)[keep]
    ids = new_id[interactions.items[keep]].astype(str)
    pairs = [(a, b) for a, b, u, v in zip(ids[:-1], ids[1:], users[:-1], users[1:], strict=True) if u == v and a != b]
    return (
        float(np.mean([a[0] == b[0] for a, b in pairs])),
        float(np.mean([len(os.path.commonprefix([a, b])) for a, b in pairs])),
    )


def test_real_co_purchases_share_leading_digits():
    interactions, _ = read_sequences(require_shared("data", "amazon-beauty-p5", "sequential_data.txt"))
    num_items = int(interactions.items.max())
    shares = {
        name: _leading_digit_agreement(item_index(name, num_items, interactions, seed=2022), interactions)
        for name in ("random", "sequential_train_first", "collaborative")
    }
    print({name: f"same leading digit {a:.3f}, common prefix {b:.2f} digits" for name, (a, b) in shares.items()})
    assert shares["collaborative"][0] > 2.5 * shares["random"][0]
    assert shares["collaborative"][0] > 2 * shares["sequential_train_first"][0]
    assert shares["collaborative"][1] > 2 * shares["sequential_train_first"][1]
