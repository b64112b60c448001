"""Building from raw Amazon 2014 files: P5's preprocessing reproduced (order, 5-core, ids, names, 8:1:1 split)."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest

from data_builders import DataFormatError, build_domain, load_config
from data_builders.amazon_raw import read_raw_domain
from tests.data_fixture import asin, raw_reviews, write_meta, write_reviews

CATEGORY = "Toys_and_Games"


@pytest.fixture
def raw(tmp_path: Path):
    reviews = raw_reviews()
    root = tmp_path / "raw"
    root.mkdir()
    write_reviews(root / f"reviews_{CATEGORY}_5.json.gz", reviews)
    asins = sorted({r["asin"] for r in reviews})
    titles = {a: f"Toy {a}" for a in asins[::2]}
    urls = {a: f"http://img.invalid/{a}.jpg" for a in asins[1::2]}
    write_meta(root / f"meta_{CATEGORY}.json.gz", asins, titles, urls)
    return root, reviews, titles, urls


def p5_oracle(reviews: list[dict], seed: int) -> tuple[list[str], list[list[str]]]:
    """P5's notebook written out plainly: group by user (first-seen order), sort by (time, ASIN), 5-core, shuffle."""
    user_items: dict[str, list[tuple[int, str]]] = {}
    for r in reviews:
        user_items.setdefault(r["reviewerID"], []).append((r["unixReviewTime"], r["asin"]))
    while True:
        item_count: dict[str, int] = defaultdict(int)
        for pairs in user_items.values():
            for _, a in pairs:
                item_count[a] += 1
        bad_users = [u for u, pairs in user_items.items() if len(pairs) < 5]
        bad_items = {a for a, n in item_count.items() if n < 5}
        if not bad_users and not bad_items:
            break
        user_items = {
            u: [p for p in pairs if p[1] not in bad_items] for u, pairs in user_items.items() if u not in bad_users
        }
    users = list(user_items)
    random.Random(seed).shuffle(users)
    return users, [[a for _, a in sorted(user_items[u])] for u in users]


def test_sequences_ids_and_names_follow_p5(raw, tmp_path):
    root, reviews, titles, urls = raw
    out = tmp_path / "out"
    build_domain("raw", root, "toys", out, indexing="paper", seed=2022)
    users, sequences = p5_oracle(reviews, 2022)
    item_id: dict[str, int] = {}
    for sequence in sequences:
        for a in sequence:
            item_id.setdefault(a, len(item_id) + 1)
    cache = str(tmp_path / "cache")
    test = load_config(out, "toys", "sequential", split="test", cache_dir=cache)
    assert [h + [t] for h, t in zip(test["history"], test["target"], strict=True)] == [
        [item_id[a] for a in s] for s in sequences
    ]
    assert asin(126) not in item_id and "A00091X" not in users  # the 5-core filter removed them
    items = load_config(out, "toys", "items", split="train", cache_dir=cache)
    assert items["asin"] == list(item_id)
    assert items["title"] == [titles.get(a) for a in item_id]
    assert items["image_url"] == [urls.get(a) for a in item_id]
    user_table = load_config(out, "toys", "users", split="train", cache_dir=cache)
    assert user_table["reviewer_id"] == users
    last_name = {r["reviewerID"]: r.get("reviewerName", r["reviewerID"]) for r in reviews}
    assert user_table["name"] == [last_name[u] for u in users]


def test_ties_are_broken_by_asin(raw):
    root, reviews, _, _ = raw
    data = read_raw_domain(root, "toys")
    time_of = {(r["reviewerID"], r["asin"]): r["unixReviewTime"] for r in reviews}
    ties = 0
    for u, raw_id in enumerate(data.user_raw_ids):
        items = data.interactions.items[data.interactions.offsets[u] : data.interactions.offsets[u + 1]]
        keys = [(time_of[(raw_id, data.item_asins[i - 1])], data.item_asins[i - 1]) for i in items]
        assert keys == sorted(keys)
        ties += len(keys) - len({t for t, _ in keys})
    assert ties > 10  # the fixture really exercises the tie-break


def test_review_split_is_p5s_8_1_1(raw, tmp_path):
    root, reviews, _, _ = raw
    data = read_raw_domain(root, "toys", seed=5)
    sizes = {split: t.num_rows for split, t in data.explanations.items()}
    kept = sum(len(s) for s in p5_oracle(reviews, 5)[1])
    assert sizes["train"] == round(0.8 * kept) and sizes["validation"] == round(0.1 * kept)
    assert sum(sizes.values()) == kept
    pairs = {
        split: set(zip(t["user_id"].to_pylist(), t["item_id"].to_pylist(), strict=True))
        for split, t in data.explanations.items()
    }
    assert not pairs["train"] & pairs["validation"] and not pairs["train"] & pairs["test"]
    train = data.explanations["train"]
    assert set(train["user_id"].to_pylist()) == set(range(1, data.interactions.num_users + 1))
    assert set(train["item_id"].to_pylist()) == set(range(1, data.num_items + 1))
    assert data.explanations["train"]["explanation"].null_count == sizes["train"]  # raw reviews carry no sentence
    other = read_raw_domain(root, "toys", seed=6)
    assert other.explanations["test"]["review_text"].to_pylist() != data.explanations["test"]["review_text"].to_pylist()
    again = read_raw_domain(root, "toys", seed=5)
    assert again.explanations["test"].equals(data.explanations["test"])


def test_raw_explanation_config_and_card_say_what_they_are(raw, tmp_path):
    root, reviews, _, _ = raw
    out = tmp_path / "out"
    build_domain("raw", root, "toys", out)
    rows = load_config(out, "toys", "explanation", split="validation", cache_dir=str(tmp_path / "cache"))
    by_pair = {(r["reviewerID"], r["asin"]): r for r in reviews}
    for row in rows:
        review = by_pair[(row["reviewer_id"], row["asin"])]
        assert row["review_text"] == review["reviewText"] and row["summary"] == review["summary"]
        assert row["star_rating"] == int(review["overall"]) and row["explanation"] is None
        assert row["user_desc"] == review.get("reviewerName", review["reviewerID"])
    card = (out / "README.md").read_text()
    assert "`explanation` and `feature` are null" in card
    assert "reviews removed by the 5-core filter" in card


def test_bad_review_lines_name_the_line(raw):
    root, _, _, _ = raw
    path = root / f"reviews_{CATEGORY}_5.json.gz"
    import gzip

    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[6] = lines[6].replace('"unixReviewTime": ', '"unixReviewTime": "t')
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DataFormatError, match=r"_5.json.gz:7: "):
        read_raw_domain(root, "toys")
    path.write_bytes(gzip.compress(b'{"reviewerID": "A1", "asin": "B1"}\n'))
    with pytest.raises(DataFormatError, match=r"_5.json.gz:1: missing field 'unixReviewTime'"):
        read_raw_domain(root, "toys")
