"""The app's one door to the recommender: every call into the `vip5-recommendation` pipeline goes through `Engine`,
so a change in the pipeline's interface is fixed here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NEW_USER = 0  # the pipeline's id for a user the dataset does not have (its own default)


@dataclass(frozen=True)
class Item:
    """One catalogue item as the UI shows it; `score` is set for recommendations only."""

    item_id: int
    asin: str | None
    title: str | None
    score: float | None = None

    @property
    def name(self) -> str:
        """The best human label the catalogue has."""
        return self.title or self.asin or f"item {self.item_id}"


class Engine:
    """Recommend, explain and look items up through a `vip5-recommendation` pipeline (or any object with its
    interface: tests pass a small fake)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.catalogue = pipe.catalogue
        self.item_ids = frozenset(int(i) for i in self.catalogue.item_ids)

    @classmethod
    def load(cls, model: str) -> Engine:
        """The pipeline over a trained model folder or Hub id. Processor and catalogue are named explicitly: for an
        adapter folder the pipeline would otherwise look for them beside the base model the adapter names."""
        from transformers import pipeline

        import modeling_vip5  # noqa: F401  (registers the "vip5-recommendation" task)

        return cls(pipeline("vip5-recommendation", model=model, processor=model, catalogue=model))

    def item(self, item_id: int) -> Item:
        return Item(item_id, self.catalogue.asin(item_id), self.catalogue.title(item_id))

    def item_id_of(self, asin: str) -> int | None:
        """The id of an ASIN, or None when the catalogue does not know it."""
        try:
            item_id = self.catalogue.item_id_of(asin)
        except (KeyError, ValueError):
            return None
        return None if item_id is None else int(item_id)

    def recommend(self, history: Sequence[int], user_id: int | None, top_k: int = 10) -> list[Item]:
        """The top-k items, best first; without a user id the pipeline treats the history as a new user's."""
        user = {"history": list(history)} | ({} if user_id is None else {"user_id": user_id})
        result = self.pipe(user, top_k=top_k)
        return [Item(int(r["item_id"]), r.get("asin"), r.get("title"), float(r["score"])) for r in result["items"]]

    def explain(self, user_id: int | None, item_id: int, history: Sequence[int]) -> str:
        """Why the model would recommend `item_id` to this user (a C-family explanation)."""
        user = NEW_USER if user_id is None else user_id
        return str(self.pipe.explain(user_id=user, item_id=item_id, history=list(history))).strip()
