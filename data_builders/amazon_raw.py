"""Reader for the raw Amazon 2014 files, reproducing P5's preprocessing (`P5/preprocess/data_preprocess_amazon`):

1. every review of `reviews_<Category>_5.json.gz` is an interaction; each user's items are sorted by `unixReviewTime`,
   ties broken by ASIN;
2. users and items are filtered to the 5-core (a no-op on the official 5-core files);
3. the users, in order of first appearance in the file, are shuffled with `random.Random(seed)` and numbered 1..U;
   items are numbered in order of first appearance while walking those users' sequences (the `paper` indexing);
4. `user_id2name`: the last review of a user gives its `reviewerName` (else the reviewerID);
5. the reviews are split 8:1:1 as P5 does (`splits.p5_review_split`). P5 then kept the reviews for which its
   Sentires-style pipeline extracted a sentence; that pipeline is not public, so the explanation rows built here are all
   reviews with `explanation` / `feature` null.
Titles and image URLs come from `meta_<Category>.json.gz` when present.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from .domain import DomainData, Interactions
from .explanations import records_to_table
from .meta import read_item_meta
from .records import fingerprint, iter_records, require
from .splits import p5_review_split

CATEGORIES = {
    "beauty": "Beauty",
    "clothing": "Clothing_Shoes_and_Jewelry",
    "sports": "Sports_and_Outdoors",
    "toys": "Toys_and_Games",
}
CORE = 5


def raw_file_names(domain: str, category: str | None = None) -> tuple[str, str]:
    """(`reviews_<Category>_5.json.gz`, `meta_<Category>.json.gz`) for a domain."""
    if category is None:
        if domain not in CATEGORIES:
            raise ValueError(f"no Amazon category known for domain {domain!r}; pass the category name explicitly")
        category = CATEGORIES[domain]
    return f"reviews_{category}_5.json.gz", f"meta_{category}.json.gz"


def _k_core(users: np.ndarray, items: np.ndarray, core: int) -> np.ndarray:
    """Mask of the reviews that survive iterated removal of users and items with fewer than `core` reviews."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_count = np.bincount(users[keep], minlength=users.max() + 1)
        item_count = np.bincount(items[keep], minlength=items.max() + 1)
        drop = keep & ((user_count[users] < core) | (item_count[items] < core))
        if not drop.any():
            return keep
        keep &= ~drop


def read_raw_domain(input_dir: str | Path, domain: str, category: str | None = None, seed: int = 2022) -> DomainData:
    """Build the P5 view of one Amazon 2014 category from its raw review (and metadata) files."""
    root = Path(input_dir)
    reviews_name, meta_name = raw_file_names(domain, category)
    reviews_path, meta_path = root / reviews_name, root / meta_name
    if not reviews_path.is_file():
        raise FileNotFoundError(f"{reviews_path}: raw review file not found")

    records, lines = [], []
    for line_no, record in iter_records(reviews_path):
        require(reviews_path, line_no, record, "reviewerID", str)
        require(reviews_path, line_no, record, "asin", str)
        require(reviews_path, line_no, record, "unixReviewTime", int)
        require(reviews_path, line_no, record, "overall", (int, float))
        records.append(record)
        lines.append(line_no)
    if not records:
        raise FileNotFoundError(f"{reviews_path}: no reviews")

    # codes in order of first appearance in the file (P5's dict insertion order)
    user_keys, user_codes = _first_seen_codes([r["reviewerID"] for r in records])
    asin_keys, item_codes = _first_seen_codes([r["asin"] for r in records])
    times = np.fromiter((r["unixReviewTime"] for r in records), dtype=np.int64, count=len(records))
    keep = _k_core(user_codes, item_codes, CORE)

    surviving = np.zeros(len(user_keys), dtype=bool)
    surviving[user_codes[keep]] = True
    user_order = np.flatnonzero(surviving).tolist()  # first-seen order of the users left after the filter
    random.Random(seed).shuffle(user_order)  # P5: random.seed(2022); random.shuffle(list(user_items))
    user_id = np.zeros(len(user_keys), dtype=np.int64)
    user_id[user_order] = np.arange(1, len(user_order) + 1)

    asin_rank = np.argsort(np.argsort(np.asarray(asin_keys)))  # ASIN sort rank per item code (tie-breaker)
    kept = np.flatnonzero(keep)
    walk = kept[np.lexsort((kept, asin_rank[item_codes[kept]], times[kept], user_id[user_codes[kept]]))]
    seen_codes, first_position = np.unique(item_codes[walk], return_index=True)
    first_seen = seen_codes[np.argsort(first_position, kind="stable")]
    item_id = np.zeros(len(asin_keys), dtype=np.int64)
    item_id[first_seen] = np.arange(1, len(first_seen) + 1)

    lengths = np.bincount(user_id[user_codes[walk]], minlength=len(user_order) + 1)[1:]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    interactions = Interactions(offsets.astype(np.int64), item_id[item_codes[walk]].astype(np.int32))
    users = [user_keys[c] for c in user_order]
    items = [asin_keys[c] for c in first_seen]

    names: list[str | None] = [None] * len(users)
    for index in kept:  # file order: the last review of a user wins
        record = records[index]
        name = record.get("reviewerName")
        names[user_id[user_codes[index]] - 1] = name if isinstance(name, str) and name else record["reviewerID"]

    user2id = {raw: i for i, raw in enumerate(users, start=1)}
    item2id = {asin: i for i, asin in enumerate(items, start=1)}
    splits = p5_review_split(user_codes[kept], item_codes[kept], seed)
    explanations = {
        split: records_to_table(
            reviews_path, split, [records[kept[i]] for i in idx], user2id, item2id, [lines[kept[i]] for i in idx]
        )
        for split, idx in zip(("train", "validation", "test"), splits, strict=True)
    }

    data = DomainData(
        domain=domain,
        source="raw",
        num_items=len(items),
        interactions=interactions,
        user_raw_ids=users,
        user_names=names,
        item_asins=items,
        explanations=explanations,
        explanation_origin=(
            f"{reviews_name}: every review, split 8:1:1 as P5 (seed {seed}); `explanation` and `feature` are null "
            "because P5's sentence extraction is not public; `summary` and `review_text` carry the review"
        ),
        provenance={reviews_name: fingerprint(reviews_path)},
    )
    dropped = len(records) - len(kept)
    if dropped:
        data.notes.append(f"{dropped} reviews removed by the {CORE}-core filter")
    if meta_path.is_file():
        meta = read_item_meta(meta_path, items)
        data.item_titles = [meta[a].title if a in meta else None for a in items]
        data.item_image_urls = [meta[a].image_url if a in meta else None for a in items]
        data.provenance[meta_name] = fingerprint(meta_path)
    else:
        data.notes.append(f"{meta_name} absent: no titles or image URLs")
    return data


def _first_seen_codes(keys: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct keys in order of first appearance, and each key's code in that order."""
    codes: dict[str, int] = {}
    out = np.fromiter((codes.setdefault(k, len(codes)) for k in keys), dtype=np.int64, count=len(keys))
    return list(codes), out
