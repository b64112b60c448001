"""Item ids that carry structure: a hierarchical clustering of item vectors laid onto the decimal digits of the ids.

Item ids must stay the integers 1..N written in decimal (feature rows, the prefix trie, the output parser and the
metrics rely on it), so a hierarchy can only be expressed through which integer each item gets. The decimal strings of
1..M form a trie: the ids starting with a prefix `p` are `p` itself plus the subtrees `p0`..`p9` (those <= M), e.g. for
M = 500, prefix "3" = {3, 30-39, 300-399} (111 ids) and "6" = {6, 60-69} (11 ids). `trie_ids` makes that trie the
cluster tree: the items of a prefix are split into as many clusters as it has child prefixes, each exactly as large as
its child's subtree (k-means, then a capacity-constrained assignment), and the most central item gets the prefix
itself. So **the ids sharing any decimal prefix are exactly one cluster of the hierarchy**, whose sub-clusters are the
one-digit-longer prefixes. The price is that cluster sizes follow the decimal ranges, not the data. Items left out of
the clustering take the ids M+1..N, which can share prefixes with clustered ids. Whether a shared decimal prefix is a
shared first token depends on the tokenizer: SentencePiece often keeps a 3-digit number as one piece.

Vectors: `co_purchase_embedding` (spectral embedding of the co-purchase graph of the training interactions; also
colours the demo's synthetic photos) or CLIP features.
"""

from __future__ import annotations

import numpy as np

from .domain import Interactions

KMEANS_ITERATIONS = 25  # Lloyd steps per split of the hierarchy
BALANCE_ITERATIONS = 5  # capacity-constrained steps after them


def training_mask(interactions: Interactions, holdout: int = 2) -> np.ndarray:
    """Which interactions are training ones: every user's sequence without its last `holdout` items."""
    position = interactions.position_in_user()
    return position < np.repeat(interactions.lengths - holdout, interactions.lengths)


def co_purchase_embedding(
    interactions: Interactions, num_items: int, dim: int, holdout: int = 2, seed: int = 2022
) -> np.ndarray:
    """Unit item vectors (`[num_items + 1, dim]`, zero rows for items without training interactions) from a truncated
    SVD of the degree-normalised user-item matrix of the training interactions: its right singular vectors are the
    spectral embedding of the normalised item co-occurrence graph (items bought by the same users), as in spectral
    co-clustering (Dhillon 2001) and the collaborative ids of Hua et al. (2023).

    The matrix stays sparse (torch's randomised `svd_lowrank`, seeded, on one thread so that the result does not
    depend on the thread count), so a full domain costs seconds, not gigabytes.
    """
    import torch

    keep = training_mask(interactions, holdout)
    users = np.repeat(np.arange(interactions.num_users), interactions.lengths)[keep]
    items = interactions.items[keep].astype(np.int64)
    user_degree = np.bincount(users, minlength=interactions.num_users)
    item_degree = np.bincount(items, minlength=num_items + 1)
    weights = 1.0 / np.sqrt(user_degree[users] * item_degree[items])
    matrix = torch.sparse_coo_tensor(
        np.stack([users, items]), weights, (interactions.num_users, num_items + 1), check_invariants=True
    )
    threads = torch.get_num_threads()
    try:  # one thread: sums in another order move the vectors, and k-means then draws other clusters
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, values, right = torch.svd_lowrank(matrix.coalesce(), q=dim + 8, niter=4)
    finally:
        torch.set_num_threads(threads)
    dims = slice(1, dim + 1)  # the first component is popularity, not taste
    vectors = (right[:, dims] * values[dims]).numpy()
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def squared_distances(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """`[len(vectors), len(centres)]` squared Euclidean distances. `einsum` without `optimize` sums in a fixed order
    (no BLAS), so the result, and every clustering built on it, does not depend on the thread count."""
    return (
        np.einsum("nd,nd->n", vectors, vectors)[:, None]
        - 2 * np.einsum("nd,md->nm", vectors, centres)
        + np.einsum("md,md->m", centres, centres)[None]
    )


def kmeans(vectors: np.ndarray, centres: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means from the given centres: (assignment of the last step, centres after it). An emptied cluster
    keeps its centre."""
    assignment = np.zeros(len(vectors), dtype=np.int64)
    for _ in range(iterations):
        assignment = squared_distances(vectors, centres).argmin(axis=1)
        centres = np.stack(
            [
                vectors[assignment == c].mean(axis=0) if (assignment == c).any() else centres[c]
                for c in range(len(centres))
            ]
        )
    return assignment, centres


def subtree_size(prefix: int, limit: int) -> int:
    """How many of the integers 1..limit have a decimal form starting with `prefix` (`prefix` itself included)."""
    count, low = 0, prefix
    while low <= limit:
        count += min(limit, low + (low // prefix) - 1) - low + 1  # low = prefix * 10^e spans 10^e integers
        low *= 10
    return count


def _capacitated(vectors: np.ndarray, centres: np.ndarray, capacities: np.ndarray) -> np.ndarray:
    """Assign every vector to a centre, centre `c` taking exactly `capacities[c]` of them (they sum to the count):
    in rounds, each free vector asks for its nearest centre that still has room, and centres take the nearest asks."""
    distance = squared_distances(vectors, centres)
    assignment = np.full(len(vectors), -1, dtype=np.int64)
    room = capacities.copy()
    while (free := np.flatnonzero(assignment < 0)).size:
        asked = np.where(room[None] > 0, distance[free], np.inf)
        best = asked.argmin(axis=1)
        order = np.lexsort((asked[np.arange(len(free)), best], best))  # by centre, nearest first
        starts = np.searchsorted(best[order], best[order], side="left")
        taken = order[np.arange(len(order)) - starts < room[best[order]]]
        assignment[free[taken]] = best[taken]
        room -= np.bincount(best[taken], minlength=len(room))
    return assignment


def _kmeans_plus_plus(vectors: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii 2007): centres spread over the data, so that Lloyd's steps rarely
    leave two centres in one natural cluster."""
    centres = [vectors[rng.integers(len(vectors))]]
    nearest = ((vectors - centres[0]) ** 2).sum(axis=1)
    for _ in range(count - 1):
        total = nearest.sum()
        pick = rng.choice(len(vectors), p=nearest / total) if total > 0 else rng.integers(len(vectors))
        centres.append(vectors[pick])
        nearest = np.minimum(nearest, ((vectors - centres[-1]) ** 2).sum(axis=1))
    return np.stack(centres)


def _split(vectors: np.ndarray, capacities: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of `vectors` for each child, child `c` getting exactly `capacities[c]` rows."""
    if (capacities == 1).all():  # leaves: the most central first
        order = np.argsort(((vectors - vectors.mean(axis=0)) ** 2).sum(axis=1), kind="stable")
        return [order[c : c + 1] for c in range(len(capacities))]
    natural, centres = kmeans(vectors, _kmeans_plus_plus(vectors, len(capacities), rng), KMEANS_ITERATIONS)
    sizes = np.bincount(natural, minlength=len(capacities))
    matched = np.empty_like(centres)  # the largest natural cluster goes to the largest child, and so on
    matched[np.argsort(-capacities, kind="stable")] = centres[np.argsort(-sizes, kind="stable")]
    for _ in range(BALANCE_ITERATIONS):
        assignment = _capacitated(vectors, matched, capacities)
        matched = np.stack([vectors[assignment == c].mean(axis=0) for c in range(len(capacities))])
    return [np.flatnonzero(assignment == c) for c in range(len(capacities))]


def trie_ids(vectors: np.ndarray, seed: int) -> np.ndarray:
    """Ids 1..len(vectors), one per row, such that the rows whose ids share a decimal prefix form one cluster."""
    rng = np.random.default_rng(seed)
    limit = len(vectors)
    ids = np.zeros(limit, dtype=np.int64)
    pending = [(0, np.arange(limit))]  # (prefix, rows); prefix 0 is the root, which is no id
    while pending:
        prefix, rows = pending.pop()
        if prefix:
            central = int(np.argmin(((vectors[rows] - vectors[rows].mean(axis=0)) ** 2).sum(axis=1)))
            ids[rows[central]] = prefix
            rows = np.delete(rows, central)
        children = [c for c in range(prefix * 10, prefix * 10 + 10) if 0 < c <= limit]
        if rows.size:
            capacities = np.array([subtree_size(c, limit) for c in children])
            pending.extend(
                (c, rows[part]) for c, part in zip(children, _split(vectors[rows], capacities, rng), strict=True)
            )
    return ids


def structured_index(num_items: int, clustered: np.ndarray, vectors: np.ndarray, seed: int) -> np.ndarray:
    """`new_id` giving the items `clustered` (paper ids, rows of `vectors`) the ids 1..M of `trie_ids`, and every
    other item the ids after them in a seeded random order (nothing about them is used)."""
    new_id = np.zeros(num_items + 1, dtype=np.int64)
    new_id[clustered] = trie_ids(vectors, seed)
    rest = np.setdiff1d(np.arange(1, num_items + 1), clustered)
    new_id[rest] = len(clustered) + 1 + np.random.default_rng(seed).permutation(len(rest))
    return new_id
