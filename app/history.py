"""What the user gives the app: a test user of the dataset, or a typed history of item ids and ASINs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .engine import Engine

SEPARATORS = re.compile(r"(?:->|[\s,;])+")


class HistoryError(ValueError):
    """A typed history the app cannot use; its message is shown in the UI."""


@dataclass(frozen=True)
class HeldOutUser:
    """A row of the dataset's sequential test split: the history the model sees and the held-out next item."""

    user_id: int
    history: tuple[int, ...]
    target: int


def parse_history(text: str, engine: Engine) -> list[int]:
    """Item ids and ASINs separated by commas, spaces or `->`, in purchase order. A number the catalogue holds as an
    id is an id; anything else must be a known ASIN (some ASINs are all digits)."""
    history, unknown = [], []
    for token in filter(None, SEPARATORS.split(text.strip())):
        if token.isdigit() and int(token) in engine.item_ids:
            history.append(int(token))
        elif (item_id := engine.item_id_of(token)) is not None:
            history.append(item_id)
        else:
            unknown.append(token)
    if unknown:
        kind = "item ids or ASINs" if len(unknown) > 1 else "item id or ASIN"
        raise HistoryError(f"unknown {kind}: {', '.join(unknown)}")
    if not history:
        raise HistoryError("type at least one item id or ASIN")
    return history


def format_history(history: tuple[int, ...] | list[int]) -> str:
    """The text box's form of a history (what `parse_history` reads back)."""
    return ", ".join(map(str, history))


def load_test_users(dataset: str | Path, domain: str | None = None, limit: int = 0) -> dict[int, HeldOutUser]:
    """The sequential test split of a dataset folder or Hub id, by user id (`limit` > 0 keeps the first users)."""
    from data_builders import load_config, read_dataset_manifest

    if domain is None:
        domains = sorted(read_dataset_manifest(dataset)["domains"])
        if len(domains) != 1:
            raise ValueError(f"{dataset} holds domains {domains}; pass --domain")
        domain = domains[0]
    rows = load_config(dataset, domain, "sequential", split="test")
    if limit > 0:
        rows = rows.select(range(min(limit, len(rows))))
    return {int(r["user_id"]): HeldOutUser(int(r["user_id"]), tuple(r["history"]), int(r["target"])) for r in rows}
