"""The two random procedures of P5's preprocessing, reproduced with explicit seeds.

* `p5_negatives`: `negative_samples.txt` — per user, 99 items drawn uniformly without replacement from all items and
  redrawn until 99 survive that the user never interacted with (P5's `sample_test_data`, same numpy stream for seed
  2022). One deliberate fix: P5 compared numpy ints with the strings it had kept, so its duplicate check never fired and
  a redraw could repeat an item; here an item is kept once.
* `p5_review_split`: the 8:1:1 review split — one random review per user and one per item forced into train, train
  filled at random to round(0.8 N), validation = round(0.1 N) of the rest, test = the remainder.
"""

from __future__ import annotations

import random

import numpy as np

from .domain import Interactions

NUM_NEGATIVES = 99


def p5_negatives(interactions: Interactions, num_negatives: int = NUM_NEGATIVES, seed: int = 2022) -> np.ndarray:
    """`[num_users, num_negatives]` item ids no user has interacted with, in the order P5's sampler keeps them."""
    rng = np.random.RandomState(seed)  # legacy generator: the stream P5's np.random.seed(2022) + choice produced
    all_items = interactions.first_appearance_order()
    offsets, items = interactions.offsets, interactions.items
    out = np.empty((interactions.num_users, num_negatives), dtype=np.int32)
    for user in range(interactions.num_users):
        history = set(items[offsets[user] : offsets[user + 1]].tolist())
        if len(all_items) - len(history) < num_negatives:
            raise ValueError(
                f"user {user + 1} interacted with {len(history)} of {len(all_items)} items: fewer than "
                f"{num_negatives} negatives exist"
            )
        kept: list[int] = []
        kept_set: set[int] = set()
        while len(kept) < num_negatives:
            for item in rng.choice(all_items, num_negatives, replace=False).tolist():
                if item not in history and item not in kept_set:
                    kept.append(item)
                    kept_set.add(item)
        out[user] = kept[:num_negatives]
    return out


def p5_review_split(
    user_keys: np.ndarray, item_keys: np.ndarray, seed: int = 2022
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Review indices of train / validation / test for reviews given by their user and item keys (file order)."""
    rng = random.Random(seed)
    population = len(user_keys)
    forced: set[int] = set()
    for keys in (user_keys, item_keys):  # one random review of every user, then of every item, in first-seen order
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        by_key = np.argsort(inverse, kind="stable")  # review indices grouped by key, file order inside a group
        starts = np.concatenate([[0], np.cumsum(np.bincount(inverse))])
        for key in np.argsort(first, kind="stable"):
            group = by_key[starts[key] : starts[key + 1]]
            forced.add(int(group[rng.randint(0, len(group) - 1)]))
    remaining = np.setdiff1d(np.arange(population), np.fromiter(forced, dtype=np.int64))
    fill = rng.sample(range(len(remaining)), round(population * 0.8) - len(forced))
    train = np.union1d(remaining[fill], np.fromiter(forced, dtype=np.int64))
    val_test = np.setdiff1d(np.arange(population), train)
    validation = val_test[rng.sample(range(len(val_test)), round(population * 0.1))]
    test = np.setdiff1d(val_test, validation)
    return train, validation, test
