"""Item indexing strategies. Each returns `new_id` with `new_id[paper_id] = chosen_id` (and `new_id[0] = 0`).

* `paper`: the original P5 ids, numbered in order of first appearance while walking the users' sequences. Neighbouring
  purchases get consecutive ids, so the held-out item is often "last history id + 1" (the leakage of spec §8.4).
* `random`: a seeded permutation of the ids (the leak-free default).
* `sequential_train_first`: as OpenP5, ids in order of first appearance over the training part of the sequences only
  (everything but each user's last two items), then items seen only in validation, then only in test.
* `collaborative` / `visual`: structured ids (`semantic_ids`): a hierarchical clustering of the items that occur in
  training (co-purchase embedding of the training interactions) or that have a photo (their CLIP features), laid onto
  the decimal digits so that the ids sharing a decimal prefix are one cluster; the other items follow in random order.

Every strategy is `(num_items, interactions, seed, features) -> new_id`; `features` is one encoder's
`(matrix [num_items + 1, dim], has_image [num_items + 1])` or None.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .domain import Interactions
from .semantic_ids import co_purchase_embedding, structured_index, training_mask

DEFAULT_INDEXING = "random"
COLLABORATIVE_DIM = 32  # spectral embedding dimensions of the co-purchase graph
Features = tuple[np.ndarray, np.ndarray] | None


def _paper(num_items: int, interactions: Interactions | None, seed: int, features: Features = None) -> np.ndarray:
    return np.arange(num_items + 1, dtype=np.int64)


def _random(num_items: int, interactions: Interactions | None, seed: int, features: Features = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([[0], rng.permutation(num_items) + 1]).astype(np.int64)


def _needs_interactions(name: str, interactions: Interactions | None) -> Interactions:
    if interactions is None:
        raise ValueError(f"`{name}` indexing needs the interactions (sequential_data.txt)")
    return interactions


def _sequential_train_first(
    num_items: int, interactions: Interactions | None, seed: int, features: Features = None
) -> np.ndarray:
    interactions = _needs_interactions("sequential_train_first", interactions)
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


def _collaborative(
    num_items: int, interactions: Interactions | None, seed: int, features: Features = None
) -> np.ndarray:
    interactions = _needs_interactions("collaborative", interactions)
    trained = np.unique(interactions.items[training_mask(interactions)])
    vectors = co_purchase_embedding(interactions, num_items, COLLABORATIVE_DIM, seed=seed)
    return structured_index(num_items, trained, vectors[trained], seed)


def _visual(num_items: int, interactions: Interactions | None, seed: int, features: Features = None) -> np.ndarray:
    if features is None:
        raise ValueError("`visual` indexing needs image features: build with --encoders (the first one is used)")
    matrix, has_image = features
    pictured = np.flatnonzero(has_image[1:]) + 1
    vectors = matrix[pictured].astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # CLIP compares by cosine
    vectors -= vectors.mean(axis=0)  # the direction all photos share says nothing about any of them
    return structured_index(num_items, pictured, vectors, seed)


STRUCTURED = (
    "decimal-prefix clusters: the ids sharing a decimal prefix are one cluster of a hierarchical k-means (the most "
    "central item gets the prefix itself, child clusters are sized to the decimal ranges)"
)
# name -> (strategy, one-line description recorded in the manifest and the dataset card)
INDEXINGS: dict[str, tuple[Callable[[int, Interactions | None, int, Features], np.ndarray], str]] = {
    "paper": (_paper, "original P5/VIP5 ids: items numbered in order of first appearance (leaks the next item)"),
    "random": (_random, "a seeded random permutation of the paper ids (no id-arithmetic shortcut)"),
    "sequential_train_first": (
        _sequential_train_first,
        "OpenP5 sequential indexing over training interactions only, then validation-only and test-only items",
    ),
    "collaborative": (
        _collaborative,
        f"{STRUCTURED} of the items' spectral embedding in the co-purchase graph of the training interactions "
        "(Hua et al. 2023); items absent from training follow in seeded random order",
    ),
    "visual": (
        _visual,
        f"{STRUCTURED} of the items' CLIP image features (cosine); items without a photo follow in seeded random order",
    ),
}
SEEDED = ("random", "collaborative", "visual")


def check_indexing(name: str) -> None:
    """A clear error for an unknown strategy name."""
    if name not in INDEXINGS:
        raise ValueError(f"unknown item indexing {name!r}; choose one of {sorted(INDEXINGS)}")


def item_index(
    name: str, num_items: int, interactions: Interactions | None, seed: int, features: Features = None
) -> np.ndarray:
    """The `new_id` map of strategy `name` for paper-indexed data."""
    check_indexing(name)
    return INDEXINGS[name][0](num_items, interactions, seed, features)


def indexing_record(name: str, seed: int, encoder: str | None = None) -> dict[str, object]:
    """What the manifest and the dataset card record about the item indexing of a build."""
    check_indexing(name)
    record: dict[str, object] = {"name": name, "description": INDEXINGS[name][1]}
    if name in SEEDED:
        record["seed"] = seed
    if name == "collaborative":
        record["parameters"] = {"embedding_dim": COLLABORATIVE_DIM, "held_out_per_user": 2}
    if name == "visual":
        record["parameters"] = {"encoder": encoder}
    return record
