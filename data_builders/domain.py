"""The in-memory form of one domain that both readers produce and the table writer consumes.

Interactions are kept as CSR arrays (one chronological item list per user) so splits, re-indexing and statistics are
numpy operations rather than per-row Python. Item ids are 1-based; `item_*` lists are indexed by `item_id - 1`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa


@dataclass
class Interactions:
    """Chronological item lists: user `u` (id `u + 1`) has `items[offsets[u]:offsets[u + 1]]`."""

    offsets: np.ndarray  # int64 [num_users + 1]
    items: np.ndarray  # int32 [num_interactions], item ids >= 1

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, sequences: list[list[int]]) -> Interactions:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(offsets, items)

    def position_in_user(self) -> np.ndarray:
        """0-based position of every interaction within its user's sequence."""
        return np.arange(len(self.items), dtype=np.int64) - np.repeat(self.offsets[:-1], self.lengths)

    def first_appearance_order(self) -> np.ndarray:
        """Distinct item ids in order of first appearance when walking users in id order."""
        unique, first = np.unique(self.items, return_index=True)
        return unique[np.argsort(first, kind="stable")]


@dataclass
class DomainData:
    """Everything a reader found for one domain, in one item-id space (`indexing` names it)."""

    domain: str
    source: str  # "p5" or "raw"
    num_items: int
    interactions: Interactions | None = None
    user_raw_ids: list[str] | None = None  # reviewerID per user id - 1
    user_names: list[str | None] | None = None  # P5's user_id2name (reviewerName, else reviewerID)
    item_asins: list[str] | None = None
    item_titles: list[str | None] | None = None
    item_image_urls: list[str | None] | None = None
    negatives: np.ndarray | None = None  # int32 [num_users, n], fixed candidates for direct validation/test
    negatives_origin: str = ""
    explanations: dict[str, pa.Table] | None = None  # split -> rows with `user_id`, `item_id` and the text fields
    explanation_origin: str = ""
    features: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # enc -> ([I+1, d], has[I+1])
    indexing: dict[str, object] = field(default_factory=lambda: {"name": "paper"})
    provenance: dict[str, dict[str, object]] = field(default_factory=dict)  # file name -> size / sha256
    notes: list[str] = field(default_factory=list)  # what was skipped or derived, and why

    def reindexed(self, new_id: np.ndarray, indexing: dict[str, object]) -> DomainData:
        """The same data with item ids mapped through `new_id` (`new_id[old] = new`, `new_id[0] = 0`)."""
        order = np.argsort(new_id[1:], kind="stable")  # position p of the new lists holds old item order[p] + 1

        def permute(values: list | None) -> list | None:
            return None if values is None else [values[i] for i in order]

        interactions = None
        if self.interactions is not None:
            interactions = Interactions(self.interactions.offsets, new_id[self.interactions.items].astype(np.int32))
        explanations = None
        if self.explanations is not None:
            explanations = {}
            for split, table in self.explanations.items():
                column = table.schema.get_field_index("item_id")
                mapped = pa.array(new_id[table.column("item_id").to_numpy()].astype(np.int32))
                explanations[split] = table.set_column(column, "item_id", mapped)
        features = {
            name: (matrix[np.concatenate([[0], order + 1])], has[np.concatenate([[0], order + 1])])
            for name, (matrix, has) in self.features.items()
        }
        return replace(
            self,
            interactions=interactions,
            item_asins=permute(self.item_asins),
            item_titles=permute(self.item_titles),
            item_image_urls=permute(self.item_image_urls),
            negatives=None if self.negatives is None else new_id[self.negatives].astype(np.int32),
            explanations=explanations,
            features=features,
            indexing=indexing,
        )
