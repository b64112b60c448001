"""Small domains written in the exact formats of the real files, for the data_builders tests.

* raw Amazon 2014: `reviews_<Category>_5.json.gz` (one JSON object per line) and `meta_<Category>.json.gz` (one
  Python-dict literal per line, as Amazon's metadata is);
* P5/VIP5: `sequential_data.txt` (CRLF or LF), `datamaps.json`, `negative_samples.txt`, `exp_splits.pkl`,
  `user_id2name.pkl`, `meta.json.gz`, `item2img_dict.pkl`, `features/<type>_features/<domain>/<asin>.npy`;
* PNG photos in a folder keyed by ASIN.
"""

from __future__ import annotations

import gzip
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


def asin(i: int) -> str:
    return f"B{i:09d}"


def reviewer(i: int) -> str:
    return f"A{i:05d}X"


@dataclass
class P5Domain:
    """What `write_p5_domain` wrote, in paper ids (item i = asins[i - 1], user u = reviewers[u - 1])."""

    root: Path
    sequences: list[list[int]]
    reviewers: list[str]
    asins: list[str]
    names: dict[str, str]
    negatives: list[list[int]]
    exp_splits: dict[str, list[dict]]
    titles: dict[str, str] = field(default_factory=dict)
    image_urls: dict[str, str] = field(default_factory=dict)


def paper_sequences(num_users: int, num_items: int, seed: int) -> list[list[int]]:
    """Random sequences (5..12 distinct items each) renumbered in order of first appearance, as P5's ids are."""
    rng = np.random.default_rng(seed)
    raw = [rng.choice(num_items, size=int(rng.integers(5, 13)), replace=False).tolist() for _ in range(num_users)]
    order: dict[int, int] = {}
    for sequence in raw:
        for item in sequence:
            order.setdefault(item, len(order) + 1)
    return [[order[i] for i in sequence] for sequence in raw]


def write_p5_domain(
    root: Path,
    domain: str = "toys",
    num_users: int = 40,
    num_items: int = 140,
    seed: int = 0,
    crlf: bool = False,
    files: tuple[str, ...] = (
        "sequential_data.txt",
        "datamaps.json",
        "negative_samples.txt",
        "exp_splits.pkl",
        "user_id2name.pkl",
        "meta.json.gz",
        "item2img_dict.pkl",
    ),
) -> P5Domain:
    """A P5-layout domain folder with only `files` written."""
    rng = np.random.default_rng(seed + 1)
    root.mkdir(parents=True, exist_ok=True)
    sequences = paper_sequences(num_users, num_items, seed)
    count = max(max(s) for s in sequences)
    reviewers = [reviewer(u) for u in range(1, num_users + 1)]
    asins = [asin(i) for i in range(1, count + 1)]
    names = {str(u): (f"Reviewer {u}" if u % 4 else reviewers[u - 1]) for u in range(1, num_users + 1)}
    negatives = []
    for sequence in sequences:
        pool = np.setdiff1d(np.arange(1, count + 1), sequence)
        negatives.append(rng.choice(pool, size=99, replace=False).tolist())
    exp_splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for u, sequence in enumerate(sequences, start=1):
        for position, item in enumerate(sequence):
            split = "test" if position == len(sequence) - 1 else "val" if position == len(sequence) - 2 else "train"
            record = {
                "reviewerID": reviewers[u - 1],
                "asin": asins[item - 1],
                "helpful": [0, 0],
                "reviewText": f"review {u}-{item}",
                "overall": float(1 + (u + item) % 5),
                "summary": f"summary {u}-{item}",
                "unixReviewTime": 1_300_000_000 + 1000 * position,
                "reviewTime": "01 1, 2011",
                "explanation": f"the {item} is great",
                "feature": f"feature{item % 7}",
            }
            if u % 4:
                record["reviewerName"] = names[str(u)]
            exp_splits[split].append(record)
    titles = {a: f"Title of {a}" for i, a in enumerate(asins) if i % 5}  # every 5th item has no title
    image_urls = {a: f"http://example.invalid/{a}.jpg" for i, a in enumerate(asins) if i % 3}
    newline = "\r\n" if crlf else "\n"
    writers = {
        "sequential_data.txt": lambda p: p.write_bytes(
            "".join(f"{u} {' '.join(map(str, s))}{newline}" for u, s in enumerate(sequences, start=1)).encode()
        ),
        "datamaps.json": lambda p: p.write_text(
            json.dumps(
                {
                    "user2id": {r: str(u) for u, r in enumerate(reviewers, start=1)},
                    "item2id": {a: str(i) for i, a in enumerate(asins, start=1)},
                    "id2user": {str(u): r for u, r in enumerate(reviewers, start=1)},
                    "id2item": {str(i): a for i, a in enumerate(asins, start=1)},
                    "attribute2id": {},
                    "id2attribute": {},
                    "attributeid2num": {},
                }
            )
        ),
        "negative_samples.txt": lambda p: p.write_text(
            "".join(f"{u} {' '.join(map(str, n))}\n" for u, n in enumerate(negatives, start=1))
        ),
        "exp_splits.pkl": lambda p: p.write_bytes(pickle.dumps(exp_splits, protocol=4)),
        "user_id2name.pkl": lambda p: p.write_bytes(pickle.dumps(names, protocol=4)),
        "meta.json.gz": lambda p: write_meta(p, asins, titles, image_urls),
        "item2img_dict.pkl": lambda p: p.write_bytes(pickle.dumps({a: image_urls.get(a, f"{a}.jpg") for a in asins})),
    }
    for name in files:
        writers[name](root / name)
    return P5Domain(root, sequences, reviewers, asins, names, negatives, exp_splits, titles, image_urls)


def write_meta(path: Path, asins: list[str], titles: dict[str, str], image_urls: dict[str, str]) -> None:
    """Amazon 2014 metadata: Python-dict literals (single quotes), plus items of other domains."""
    lines = []
    for a in [asin(10**8 + 1)] + list(asins) + [asin(10**8 + 2)]:
        record: dict = {"asin": a, "related": {"also_bought": [asin(5)]}, "categories": [["Toys & Games", "Puzzles"]]}
        if a in titles:
            record["title"] = titles[a]
        if a in image_urls:
            record["imUrl"] = image_urls[a]
        lines.append(repr(record))
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def write_reviews(path: Path, reviews: list[dict]) -> None:
    """Amazon 2014 review file: one JSON object per line, gzip."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for review in reviews:
            handle.write(json.dumps(review) + "\n")


def raw_reviews(num_users: int = 90, num_items: int = 125, seed: int = 0) -> list[dict]:
    """Reviews where every user has >= 5 reviews of distinct items and every item >= 5 reviewers, plus one user with
    3 reviews and one item with 2 reviews that the 5-core filter must remove. Timestamps include ties."""
    rng = np.random.default_rng(seed)
    reviews = []
    for u in range(1, num_users + 1):
        items = rng.choice(num_items, size=int(rng.integers(5, 9)), replace=False) + 1
        for item in items:
            reviews.append(_review(u, int(item), int(rng.integers(0, 6)), rng))
    counts = np.bincount([asin_number(r["asin"]) for r in reviews], minlength=num_items + 1)
    for item in np.flatnonzero(counts[1:] < 5) + 1:  # top up rare items with reviews by random other users
        reviewed = {r["reviewerID"] for r in reviews if r["asin"] == asin(int(item))}
        candidates = [u for u in range(1, num_users + 1) if reviewer(u) not in reviewed]
        for u in rng.choice(candidates, size=5 - int(counts[item]), replace=False):
            reviews.append(_review(int(u), int(item), int(rng.integers(0, 6)), rng))
    sparse_user = num_users + 1
    for item in (1, 2, 3):
        reviews.append(_review(sparse_user, item, 1, rng))
    rare_item = num_items + 1
    for u in (1, 2):
        reviews.append(_review(u, rare_item, 2, rng))
    reviews.sort(key=lambda r: r["asin"])  # Amazon's files are grouped by product
    return reviews


def asin_number(text: str) -> int:
    return int(text[1:])


def _review(u: int, item: int, day: int, rng: np.random.Generator) -> dict:
    review = {
        "reviewerID": reviewer(u),
        "asin": asin(item),
        "helpful": [int(rng.integers(0, 3)), 3],
        "reviewText": f"text {u} {item}",
        "overall": float(rng.integers(1, 6)),
        "summary": f"summary {u} {item}",
        "unixReviewTime": 1_400_000_000 + 86_400 * day,
        "reviewTime": "05 13, 2014",
    }
    if u % 3:
        review["reviewerName"] = f"Name {u}"
    return review


def write_images(folder: Path, asins: list[str], size: int = 40, seed: int = 0) -> dict[str, Path]:
    """Distinct random-colour PNG photos named `<asin>.png`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for a in asins:
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        paths[a] = folder / f"{a}.png"
        Image.fromarray(pixels).save(paths[a])
    return paths


def write_features(root: Path, encoder: str, domain: str, asins: list[str], dim: int, seed: int = 0) -> dict:
    """P5-layout feature files `features/<encoder>_features/<domain>/<asin>.npy` with raw-scale random vectors."""
    rng = np.random.default_rng(seed)
    folder = root / f"{encoder}_features" / domain
    folder.mkdir(parents=True, exist_ok=True)
    vectors = {}
    for a in asins:
        vectors[a] = (rng.standard_normal(dim) * 0.5).astype(np.float32)
        np.save(folder / f"{a}.npy", vectors[a])
    return vectors
