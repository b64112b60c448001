"""Synthetic P5-format worlds with a planted signal, for the tests that check the model learns it (test_learning.py).

* `write_visual_world`: items fall into visual clusters (a CLIP-sized feature = its cluster's centre + small noise);
  every user likes one cluster and buys all of its items, nothing else. Cluster popularity is skewed, as in real
  catalogues. The P5 sampler of the build then draws each user's 99 fixed test negatives from the other clusters (the
  only items the user did not buy), so the test candidates are 1 item of the user's look + 99 of other looks.
* `write_chain_world`: items on cycles; every user walks one cycle from a random start, so the next item is a fixed
  function of the last one. Nothing else about an item predicts it (features are random per item).

Both write `sequential_data.txt`, `datamaps.json` and `features/vitb32_features/<domain>/<asin>.npy` as
`train_fixture.write_p5_domain` does. P5 ids are shuffled, and the build re-indexes them at random anyway, so no id
says anything about an item's cluster or position on its cycle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FEATURE_DIM = 512  # CLIP ViT-B/32
FEATURE_SCALE = 0.5  # per-dimension spread of raw (unnormalised) CLIP image features, as data_fixture.write_features
NUM_NEGATIVES = 99  # P5's fixed test negatives per user


@dataclass
class World:
    """What was written, in P5 ids (item i = asins[i - 1]; user u = line u)."""

    root: Path
    sequences: list[list[int]]
    asins: list[str]
    user_cluster: list[int] = field(default_factory=list)  # visual world: the cluster user u likes, at u - 1
    item_cluster: dict[int, int] = field(default_factory=dict)  # visual world: P5 id -> cluster

    def cluster_of_asin(self) -> dict[str, int]:
        """Visual world: ASIN -> cluster (what survives the build's re-indexing)."""
        return {self.asins[i - 1]: c for i, c in self.item_cluster.items()}


def write_visual_world(root: Path, domain: str, users_per_cluster: Sequence[int] = (6, 4, 3, 2, 2, 1, 1, 1),
                       items_per_cluster: int = 16, noise: float = 0.1, seed: int = 0) -> World:
    """`users_per_cluster[c]` users like cluster c and buy its `items_per_cluster` items in a random order."""
    rng = np.random.default_rng(seed)
    num_clusters = len(users_per_cluster)
    if min(users_per_cluster) < 1:
        raise ValueError("every cluster needs a user: P5 files list only items that someone bought")
    if items_per_cluster * (num_clusters - 1) < NUM_NEGATIVES:
        raise ValueError(f"{items_per_cluster * (num_clusters - 1)} items outside a cluster: the test candidates need "
                         f"{NUM_NEGATIVES} negatives of other looks")
    num_items = num_clusters * items_per_cluster
    members = (rng.permutation(num_items) + 1).reshape(num_clusters, items_per_cluster)
    user_cluster = rng.permutation(np.repeat(np.arange(num_clusters), users_per_cluster)).tolist()
    sequences = [rng.permutation(members[c]).tolist() for c in user_cluster]
    item_cluster = {int(i): c for c in range(num_clusters) for i in members[c]}
    centres = rng.normal(scale=FEATURE_SCALE, size=(num_clusters, FEATURE_DIM))
    features = {i: centres[c] + rng.normal(scale=noise, size=FEATURE_DIM) for i, c in item_cluster.items()}
    world = World(root, sequences, [f"V{i:09d}" for i in range(1, num_items + 1)], user_cluster, item_cluster)
    _write(world, domain, features)
    return world


def write_chain_world(root: Path, domain: str, num_cycles: int = 8, cycle_length: int = 14, num_users: int = 128,
                      min_length: int = 6, max_length: int = 10, seed: int = 0) -> World:
    """Users walk a cycle (item -> its successor) from a random start, `min_length`..`max_length` items long."""
    rng = np.random.default_rng(seed)
    num_items = num_cycles * cycle_length
    if num_items - max_length < NUM_NEGATIVES:
        raise ValueError(f"{num_items} items: P5's sampler needs {NUM_NEGATIVES} items each user did not buy")
    cycles = (rng.permutation(num_items) + 1).reshape(num_cycles, cycle_length).tolist()
    sequences = []
    for _ in range(num_users):
        cycle = cycles[rng.integers(num_cycles)]
        start, length = int(rng.integers(cycle_length)), int(rng.integers(min_length, max_length + 1))
        sequences.append([cycle[(start + step) % cycle_length] for step in range(length)])
    missing = num_items - len({i for s in sequences for i in s})
    if missing:
        raise ValueError(f"{missing} items occur in no sequence: use more users")
    features = {i: rng.normal(scale=FEATURE_SCALE, size=FEATURE_DIM) for i in range(1, num_items + 1)}
    world = World(root, sequences, [f"S{i:09d}" for i in range(1, num_items + 1)])
    _write(world, domain, features)
    return world


def _write(world: World, domain: str, features: dict[int, np.ndarray]) -> None:
    root = world.root
    root.mkdir(parents=True, exist_ok=True)
    (root / "sequential_data.txt").write_text("".join(f"{u} {' '.join(map(str, s))}\n"
                                                      for u, s in enumerate(world.sequences, start=1)))
    users = [f"U{u:06d}" for u in range(1, len(world.sequences) + 1)]
    maps = {"user2id": {r: str(u) for u, r in enumerate(users, start=1)},
            "item2id": {a: str(i) for i, a in enumerate(world.asins, start=1)},
            "id2user": {str(u): r for u, r in enumerate(users, start=1)},
            "id2item": {str(i): a for i, a in enumerate(world.asins, start=1)}}
    (root / "datamaps.json").write_text(json.dumps(maps))
    folder = root / "features" / "vitb32_features" / domain
    folder.mkdir(parents=True, exist_ok=True)
    for item, vector in features.items():
        np.save(folder / f"{world.asins[item - 1]}.npy", vector.astype(np.float32))
