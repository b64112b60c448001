"""From decoded outputs to rankings, and from rankings to HR@k / NDCG@k.

The original evaluation (spec §1.11, §6.2, §8.3) parsed beam outputs with `int()`, let a duplicate overwrite the better
rank of its first occurrence, and crashed when fewer than k beams parsed. Here a ranking is a list of distinct item ids,
best first; duplicates keep their best rank, unparseable outputs are dropped and counted, and a target that is not in
the ranking (or below the cut-off) is a miss, whatever the length of the ranking. The `evaluate` modules in
`training/metrics/` call the same functions, so there is one definition of each metric.
"""

import math
from collections.abc import Sequence
from typing import Literal

from modeling_vip5.ranking import ParsedOutputs, parse_item_id, parse_outputs, valid_share

Measure = Literal["hr", "ndcg"]

# The cut-offs the paper reports (spec §6.1 / anchors §4): HR@1/5/10 and NDCG@5/10.
REPORTED_CUTOFFS: dict[Measure, tuple[int, ...]] = {"hr": (1, 5, 10), "ndcg": (5, 10)}


def target_rank(ranking: Sequence[int], target: int) -> int | None:
    """1-based rank of `target` among the distinct ids of `ranking` (a duplicate keeps its best rank); None if absent."""
    distinct_before: set[int] = set()
    for item in ranking:
        if item == target:
            return len(distinct_before) + 1
        distinct_before.add(item)
    return None


def example_score(measure: Measure, rank: int | None, k: int) -> float:
    """HR@k or NDCG@k of one example with a single relevant item: NDCG is 1/log2(rank + 1) inside the cut-off."""
    if rank is None or rank > k:
        return 0.0
    return 1.0 if measure == "hr" else 1.0 / math.log2(rank + 1)


def cutoff_means(
    measure: Measure, rankings: Sequence[Sequence[int]], targets: Sequence[int], k: int | Sequence[int]
) -> dict[str, float]:
    """Mean HR@k or NDCG@k over examples for one or several cut-offs, keyed `"hr@10"`, `"ndcg@5"`, ..."""
    if measure not in REPORTED_CUTOFFS:
        raise ValueError(f"unknown ranking measure {measure!r}; expected one of {sorted(REPORTED_CUTOFFS)}")
    cutoffs = list(k) if isinstance(k, Sequence) else [k]
    if not cutoffs or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in cutoffs):
        raise ValueError(f"cut-off k must be a positive integer or a non-empty list of them, got {k!r}")
    if len(rankings) != len(targets):
        raise ValueError(f"{len(rankings)} rankings but {len(targets)} targets: they must pair up one to one")
    if not targets:
        raise ValueError("no examples: ranking metrics are undefined")
    ranks = [target_rank(ranking, target) for ranking, target in zip(rankings, targets, strict=True)]
    return {f"{measure}@{c}": sum(example_score(measure, r, c) for r in ranks) / len(ranks) for c in cutoffs}


def ranking_metrics(rankings: Sequence[Sequence[int]], targets: Sequence[int]) -> dict[str, float]:
    """HR@1/5/10 and NDCG@5/10, the numbers every ranking protocol and baseline reports."""
    metrics: dict[str, float] = {}
    for measure, cutoffs in REPORTED_CUTOFFS.items():
        metrics.update(cutoff_means(measure, rankings, targets, cutoffs))
    return metrics


__all__ = [
    "REPORTED_CUTOFFS",
    "ParsedOutputs",
    "cutoff_means",
    "example_score",
    "parse_item_id",
    "parse_outputs",
    "ranking_metrics",
    "target_rank",
    "valid_share",
]
