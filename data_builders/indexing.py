"""Item indexing strategies. Each returns `new_id` with `new_id[paper_id] = chosen_id` (and `new_id[0] = 0`).

* `paper`: the original P5 ids, numbered in order of first appearance while walking the users' sequences. Neighbouring
  purchases get consecutive ids, so the held-out item is often "last history id + 1" (the leakage of spec §8.4).
* `random`: a seeded permutation of the ids (the leak-free default).
* `sequential_train_first`: as OpenP5, ids in order of first appearance over the training part of the sequences only
  (everything but each user's last two items), then items seen only in validation, then only in test.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .domain import Interactions

DEFAULT_INDEXING = "random"


def _paper(num_items: int, interactions: Interactions | None, seed: int) -> np.ndarray:
    return np.arange(num_items + 1, dtype=np.int64)


def _random(num_items: int, interactions: Interactions | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([[0], rng.permutation(num_items) + 1]).astype(np.int64)


def _sequential_train_first(num_items: int, interactions: Interactions | None, seed: int) -> np.ndarray:
    if interactions is None:
        raise ValueError("`sequential_train_first` indexing needs the interactions (sequential_data.txt)")
    position = interactions.position_in_user()
    length = np.repeat(interactions.lengths, interactions.lengths)
    # phase 0 = training part, 1 = validation item, 2 = test item; ties inside a phase keep walking order
    phase = np.clip(position - (length - 3), 0, 2)
    walk = np.lexsort((np.arange(len(position)), phase))
    ordered = interactions.items[walk]
    unique, first = np.unique(ordered, return_index=True)
    order = unique[np.argsort(first, kind="stable")]
    unseen = np.setdiff1d(np.arange(1, num_items + 1), order)  # items only known from metadata keep their order
    new_id = np.zeros(num_items + 1, dtype=np.int64)
    new_id[np.concatenate([order, unseen])] = np.arange(1, num_items + 1)
    return new_id


# name -> (strategy, one-line description recorded in the manifest and the dataset card)
INDEXINGS: dict[str, tuple[Callable[[int, Interactions | None, int], np.ndarray], str]] = {
    "paper": (_paper, "original P5/VIP5 ids: items numbered in order of first appearance (leaks the next item)"),
    "random": (_random, "a seeded random permutation of the paper ids (no id-arithmetic shortcut)"),
    "sequential_train_first": (
        _sequential_train_first,
        "OpenP5 sequential indexing over training interactions only, then validation-only and test-only items",
    ),
}


def item_index(name: str, num_items: int, interactions: Interactions | None, seed: int) -> np.ndarray:
    """The `new_id` map of strategy `name` for paper-indexed data."""
    if name not in INDEXINGS:
        raise ValueError(f"unknown item indexing {name!r}; choose one of {sorted(INDEXINGS)}")
    return INDEXINGS[name][0](num_items, interactions, seed)
