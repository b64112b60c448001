"""Popularity, item-transition and random baselines that answer the same questions as the model protocols.

Every report needs a floor: if a model does not beat "recommend what is popular" on the same examples, its number
means little (anchors §4.4 shows BPR-MF beating VIP5 on direct HR@10). Popularity ignores the user; the transition
baseline (a first-order Markov chain, the item-to-item half of FPMC) is the simplest floor that uses the user's own
history, and the one a sequential recommender has to beat. A baseline returns rankings (distinct item ids, best
first) exactly like the model protocols, so `training.ranking.ranking_metrics` scores both on the same examples.
"""

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence

import numpy as np


class PopularityBaseline:
    """Ranks items by how often they occur in the training interactions (ties: smaller item id first)."""

    def __init__(self, train_sequences: Iterable[Sequence[int]], catalogue: Iterable[int]) -> None:
        """`train_sequences`: the interactions popularity may see (never the evaluated targets); `catalogue`: all ids."""
        self.counts = Counter(item for sequence in train_sequences for item in sequence)
        catalogue_ids = set(catalogue)
        unknown = sorted(set(self.counts) - catalogue_ids)
        if unknown:
            raise ValueError(
                f"training interactions name {len(unknown)} items missing from the catalogue, e.g. {unknown[:5]}"
            )
        self.order = sorted(catalogue_ids, key=lambda item: (-self.counts[item], item))

    def rank_catalogue(self, k: int, exclude: Collection[int] = ()) -> list[int]:
        """Sequential protocol: the k most popular items, optionally skipping `exclude` (e.g. the user's history)."""
        _check_k(k)
        top: list[int] = []
        for item in self.order:
            if item not in exclude:
                top.append(item)
                if len(top) == k:
                    break
        return top

    def rank_candidates(self, candidates: Sequence[int]) -> list[int]:
        """Direct protocol: the prompt's candidates by popularity; ties keep the (shuffled) candidate order."""
        return sorted(_distinct(candidates), key=lambda item: -self.counts[item])


class TransitionBaseline:
    """Items ranked by how often they followed the user's last item in the training interactions, then by popularity.

    Counts come from `train_sequences` only, never from the evaluated targets."""

    def __init__(self, train_sequences: Iterable[Sequence[int]], catalogue: Iterable[int]) -> None:
        sequences = [[int(item) for item in sequence] for sequence in train_sequences]
        self.popularity = PopularityBaseline(sequences, catalogue)
        self.followers: dict[int, Counter[int]] = defaultdict(Counter)
        for sequence in sequences:
            for item, following in zip(sequence, sequence[1:], strict=False):
                self.followers[item][following] += 1

    def _key(self, last: int):
        followers, popularity = self.followers.get(last, Counter()), self.popularity.counts
        return lambda item: (-followers[item], -popularity[item])

    def rank_catalogue(self, k: int, last: int, exclude: Collection[int] = ()) -> list[int]:
        """Sequential protocol: the k items that most often followed `last`, completed by the most popular ones."""
        _check_k(k)
        key = self._key(last)
        followed = sorted(self.followers.get(last, ()), key=lambda item: (*key(item), item))
        top = [item for item in followed if item not in exclude][:k]
        if len(top) < k:
            top += self.popularity.rank_catalogue(k - len(top), exclude=set(exclude) | set(top))
        return top

    def rank_candidates(self, candidates: Sequence[int], last: int) -> list[int]:
        """Direct protocol: the prompt's candidates by how often they followed `last`, then by popularity; ties keep
        the (shuffled) candidate order."""
        return sorted(_distinct(candidates), key=self._key(last))


class RandomBaseline:
    """Uniformly random rankings, reproducible per example whatever the order or the process that evaluates it."""

    def __init__(self, catalogue: Iterable[int], seed: int) -> None:
        self.catalogue_ids = set(catalogue)
        self.catalogue = np.array(sorted(self.catalogue_ids), dtype=np.int64)
        if self.catalogue.size == 0:
            raise ValueError("the catalogue is empty: there is nothing to rank")
        self.seed = seed

    def _rng(self, key: int) -> np.random.Generator:
        # Seeded by (seed, example key): results do not depend on batch order or on how examples are split over processes.
        return np.random.default_rng([self.seed, key])

    def rank_catalogue(self, k: int, key: int, exclude: Collection[int] = ()) -> list[int]:
        """Sequential protocol: k distinct random items (fewer if the catalogue runs out), never from `exclude`."""
        _check_k(k)
        excluded = len(self.catalogue_ids.intersection(exclude))
        size = min(k + excluded, self.catalogue.size)
        drawn = self._rng(key).choice(self.catalogue, size=size, replace=False)
        return [int(item) for item in drawn if int(item) not in exclude][:k]

    def rank_candidates(self, candidates: Sequence[int], key: int) -> list[int]:
        """Direct protocol: the prompt's candidates in a random order."""
        distinct = _distinct(candidates)
        return [distinct[i] for i in self._rng(key).permutation(len(distinct))]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _distinct(items: Sequence[int]) -> list[int]:
    """Candidates in order without repeats (the original sampler could repeat a negative, spec §3.5)."""
    return list(dict.fromkeys(items))


__all__ = ["PopularityBaseline", "RandomBaseline", "TransitionBaseline"]
