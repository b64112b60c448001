"""Which prompt each training or evaluation example is: the task mix and splits of the original code (spec §3.4–3.6).

An example is a template id plus its fields; the processor renders and encodes it. Training examples are drawn afresh
every epoch from a generator seeded by (seed, epoch, index), so any example can be recomputed from its position alone:
resuming mid-epoch and sharding across processes need no sampler state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# Explanation prompts C-7/C-8 predict a rating; in training the original draws it from N(mu, sigma) per star (§4.1).
RATING_NOISE = {1: (1.2, 0.1), 2: (1.95, 0.225), 3: (2.95, 0.225), 4: (3.95, 0.225), 5: (4.75, 0.125)}
YES_NO_TEMPLATES = {"A-7", "A-8", "B-1", "B-2", "B-3", "B-4"}


@dataclass(frozen=True)
class Example:
    """One prompt to render: `processor.render(template_id, separator=separator, **fields)`."""

    template_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    separator: str = ","


@dataclass
class DomainTables:
    """Per-user sequences, names and item facts that example generation needs, held as plain arrays and dicts."""

    user_ids: np.ndarray  # [U] in the order of the sequential train split
    train_sequences: list[np.ndarray]  # per user: history + target of the train split (i_1 … i_{N−2})
    interacted: list[set[int]]  # per user: every item of the full sequence (excluded from negatives)
    item_ids: np.ndarray  # every item id that may be drawn as a negative
    user_names: Mapping[int, str] = field(default_factory=dict)
    titles: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def from_datasets(cls, sequential: Mapping[str, Any], users=None, items=None) -> DomainTables:
        """From the `sequential` DatasetDict (train and test splits) and the optional `users` / `items` datasets."""
        train, test = sequential["train"], sequential["test"]
        user_ids = np.asarray(train["user_id"])
        train_sequences = [np.asarray(h + [t]) for h, t in zip(train["history"], train["target"], strict=True)]
        full = {u: set(h) | {t} for u, h, t in zip(test["user_id"], test["history"], test["target"], strict=True)}
        missing = [int(u) for u in user_ids if int(u) not in full]
        if missing:
            raise ValueError(f"sequential test split lacks users {missing[:5]} that the train split has")
        interacted = [full[int(u)] for u in user_ids]
        if items is not None:
            item_ids = np.asarray(items["item_id"])
            titles = dict(zip(items["item_id"], items["title"], strict=True))
        else:
            item_ids = np.unique(np.concatenate([np.fromiter(s, dtype=np.int64) for s in interacted]))
            titles = {}
        names = dict(zip(users["user_id"], users["name"], strict=True)) if users is not None else {}
        return cls(user_ids, train_sequences, interacted, item_ids, names, titles)

    def popularity_weights(self) -> np.ndarray:
        """Sampling probabilities over `item_ids` proportional to training purchases (+1, so every item can be drawn):
        negatives drawn this way are as popular as positives, so popularity alone cannot tell them apart."""
        counts = np.bincount(np.concatenate(self.train_sequences).astype(np.int64), minlength=int(self.item_ids.max()) + 1)
        weights = counts[self.item_ids].astype(np.float64) + 1.0
        return weights / weights.sum()

    def user_desc(self, user_id: int) -> str:
        """The reviewer's name, as the original's `user_desc`; the id when no name is known."""
        return self.user_names.get(int(user_id)) or f"user_{int(user_id)}"

    def negatives(self, rng: np.random.Generator, user_index: int, n: int, weights: np.ndarray | None = None
                  ) -> list[int]:
        """n distinct items the user never interacted with, uniformly (the original's sampler without its dup bug) or
        with probabilities `weights` over `item_ids`."""
        excluded = self.interacted[user_index]
        if len(self.item_ids) - len(excluded) < n:
            raise ValueError(f"user {int(self.user_ids[user_index])} has fewer than {n} items to draw negatives from")
        chosen: list[int] = []
        while len(chosen) < n:
            draw = rng.choice(self.item_ids, size=min(len(self.item_ids), 2 * n), replace=False, p=weights)
            chosen += [int(i) for i in draw if int(i) not in excluded and int(i) not in chosen]
        return chosen[:n]


class TrainingExamples(torch.utils.data.Dataset):
    """One epoch of the task mix: the sequential prompts (the original's `sequential_per_user` draws per user, or one
    per training position with `sequential_targets="all"`), `direct_per_user` B prompts per user, then one C prompt
    per training explanation; templates uniform over the seen prompts of each family."""

    def __init__(
        self, tables: DomainTables, templates: Mapping[str, Sequence[str]], explanation=None, seed: int = 2022,
        sequential_per_user: int = 10, direct_per_user: int = 10, num_candidates: int = 100,
        sequential_targets: str = "paper", max_history: int = 0, direct_positives: str = "uniform",
        direct_negatives: str = "uniform",
    ):
        self.tables, self.templates, self.explanation, self.seed = tables, templates, explanation, seed
        # With "all", position p (2nd item onwards) of every training sequence is one target per epoch, as
        # sequential recommenders (SASRec, BERT4Rec) train; the original samples only the last three positions.
        self.positions = (np.cumsum([max(0, len(s) - 1) for s in tables.train_sequences])
                          if sequential_targets == "all" else None)
        sequential = int(self.positions[-1]) if self.positions is not None and len(self.positions) else \
            sequential_per_user * len(tables.user_ids)
        self.counts = {
            "sequential": sequential if templates.get("sequential") else 0,
            "direct": direct_per_user * len(tables.user_ids) if templates.get("direct") else 0,
            "explanation": len(explanation) if explanation is not None and templates.get("explanation") else 0,
        }
        self.per_user = {"sequential": sequential_per_user, "direct": direct_per_user}
        self.num_candidates, self.max_history, self.direct_positives = num_candidates, max_history, direct_positives
        self.negative_weights = tables.popularity_weights() if direct_negatives == "popularity" else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.counts.values())

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for task, count in self.counts.items():
            if index < count:
                template_id = str(rng.choice(self.templates[task]))
                if task == "explanation":
                    return explanation_example(self.explanation[index], template_id, rng)
                if task == "direct":
                    return direct_example(self.tables, index // self.per_user[task], template_id, rng,
                                          self.num_candidates, self.direct_positives, self.negative_weights)
                if self.positions is None:
                    user, target = index // self.per_user[task], None
                else:
                    user = int(np.searchsorted(self.positions, index, side="right"))
                    target = index - (int(self.positions[user - 1]) if user else 0) + 2  # 1-based, from the 2nd
                return sequential_example(self.tables, user, template_id, rng, target=target,
                                          max_history=self.max_history)
            index -= count
        raise AssertionError("unreachable: index checked against len")


def sequential_example(tables: DomainTables, user: int, template_id: str, rng: np.random.Generator,
                       target: int | None = None, max_history: int = 0) -> Example:
    """Train target i_t of the M training items: t drawn from [max(3, M−2), M] with the history starting at one of the
    first 3 items (the original), or the given t with the whole history before it; `max_history` keeps the latest."""
    sequence = tables.train_sequences[user]
    m = len(sequence)
    if target is None:
        t = int(rng.integers(max(3, m - 2), m + 1)) if m >= 3 else m
        s = int(rng.integers(1, min(3, t - 2) + 1)) if t >= 3 else 1
    else:
        t, s = target, 1
    if max_history:
        s = max(s, t - max_history)
    history, target_item = [int(i) for i in sequence[s - 1 : t - 1]], int(sequence[t - 1])
    fields: dict[str, Any] = _user_fields(tables, user) | {"history": history}
    if template_id in YES_NO_TEMPLATES:
        positive = bool(rng.random() < 0.5)
        fields |= {"item_id": target_item if positive else tables.negatives(rng, user, 1)[0],
                   "answer": _yes_no(positive)}
    else:
        fields["target_item_id"] = target_item
    return Example(template_id, fields, separator=str(rng.choice([",", "->"])))


def direct_example(tables: DomainTables, user: int, template_id: str, rng: np.random.Generator,
                   num_candidates: int = 100, positives: str = "uniform",
                   negative_weights: np.ndarray | None = None) -> Example:
    """Positive uniform over the training items (the original) or the latest one; yes/no against one negative, or a
    shuffled candidate list; negatives uniform (the original) or drawn with `negative_weights`."""
    sequence = tables.train_sequences[user]
    positive_item = int(sequence[-1] if positives == "latest" else rng.choice(sequence))
    fields = _user_fields(tables, user)
    if template_id in YES_NO_TEMPLATES:
        positive = bool(rng.random() < 0.5)
        item = positive_item if positive else tables.negatives(rng, user, 1, negative_weights)[0]
        fields |= {"item_id": item, "item_title": tables.titles.get(item) or "unknown title", "answer": _yes_no(positive)}
    else:
        candidates = tables.negatives(rng, user, num_candidates - 1, negative_weights) + [positive_item]
        rng.shuffle(candidates)
        fields |= {"candidates": candidates, "target_item_id": positive_item}
    return Example(template_id, fields)


def explanation_example(row: Mapping[str, Any], template_id: str, rng: np.random.Generator | None = None) -> Example:
    """A review as C-prompt fields; with `rng` (training) C-7/C-8 rate with the original's noisy float rating."""
    star = int(row["star_rating"])
    rating: int | float = star
    if rng is not None and template_id in ("C-7", "C-8"):
        mu, sigma = RATING_NOISE[star]
        rating = float(np.clip(round(float(rng.normal(mu, sigma)), 1), 1.0, 5.0))
    fields = {
        "user_id": int(row["user_id"]), "user_desc": row["user_desc"], "item_id": int(row["item_id"]),
        "item_title": row["title"], "star_rating": rating, "feature": row["feature"],
        "review_headline": row["summary"], "explanation": row["explanation"],
    }
    return Example(template_id, fields)


def evaluation_examples(task: str, template_id: str, rows, tables: DomainTables | None = None,
                        seed: int = 2022) -> list[Example]:
    """Fixed examples of a validation/test split: the leave-one-out rows (A), the dataset's fixed 100 candidates
    shuffled with a per-user seed (B), or every review (C)."""
    examples = []
    for row in rows:
        if task == "explanation":
            examples.append(explanation_example(row, template_id))
            continue
        user = int(row["user_id"])
        fields = {"user_id": user, "user_desc": tables.user_desc(user) if tables is not None else f"user_{user}"}
        if task == "sequential":
            fields |= {"history": list(row["history"]), "target_item_id": int(row["target"])}
        else:
            candidates = [int(i) for i in row["negatives"]] + [int(row["positive"])]
            np.random.default_rng([seed, user]).shuffle(candidates)
            fields |= {"candidates": candidates, "target_item_id": int(row["positive"])}
        examples.append(Example(template_id, fields))
    return examples


def _user_fields(tables: DomainTables, user: int) -> dict[str, Any]:
    user_id = int(tables.user_ids[user])
    return {"user_id": user_id, "user_desc": tables.user_desc(user_id)}


def _yes_no(positive: bool) -> str:
    return "yes" if positive else "no"
