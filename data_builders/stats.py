"""Statistics of a built domain, computed from its tables (in memory right after a build, or read back from the
Parquet files by `vip5-data stats`), so the card and the check both measure what was written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "vip5_dataset.json"
# the columns `table_stats` reads, so `vip5-data stats` skips the image-feature columns
STATS_COLUMNS = {
    "sequential": ["history", "target"],
    "items": ["has_image"],
    "users": ["name"],
    "explanation": ["explanation"],
}


def _sequence_profile(lengths: np.ndarray) -> dict[str, float]:
    return {
        "min": int(lengths.min()),
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
    }


def table_stats(tables: dict[str, dict[str, pa.Table]]) -> dict[str, object]:
    """Users, items, interactions, sparsity, sequence lengths, leave-one-out sizes, photos and explanation counts."""
    stats: dict[str, object] = {}
    sequential = tables.get("sequential")
    if sequential is not None:
        test = sequential["test"]
        history = test.column("history").combine_chunks()
        flat = history.flatten().to_numpy()
        target = test.column("target").to_numpy()
        lengths = history.value_lengths().to_numpy() + 1
        users, interactions = len(target), int(lengths.sum())
        items = len(np.union1d(flat, target))
        last = flat[np.cumsum(lengths - 1) - 1]
        stats.update(
            num_users=users,
            num_items=items,
            num_interactions=interactions,
            sparsity=1.0 - interactions / (users * items),
            sequence_length=_sequence_profile(lengths),
            leave_one_out={
                "train": _training_interactions(sequential["train"]),
                "validation": sequential["validation"].num_rows,
                "test": test.num_rows,
            },
            # share of users whose test item id is their last history id + 1: the id leakage of paper indexing
            test_item_is_last_plus_one=float(np.mean(target == last + 1)),
        )
    if "items" in tables:
        items_table = tables["items"]["train"]
        stats["catalogue_items"] = items_table.num_rows
        stats["items_with_image"] = int(np.count_nonzero(items_table.column("has_image").to_numpy()))
    if "users" in tables:
        stats["users_with_name"] = tables["users"]["train"].column("name").combine_chunks().is_valid().true_count
    if "explanation" in tables:
        splits = tables["explanation"]
        stats["explanation_rows"] = {split: table.num_rows for split, table in splits.items()}
        stats["explanation_rows_with_sentence"] = sum(
            t.num_rows - t.column("explanation").null_count for t in splits.values()
        )
    return stats


def _training_interactions(table: pa.Table) -> int:
    """Training interactions of the sequential train split: each row is `history + [target]`."""
    return int(table.column("history").combine_chunks().value_lengths().to_numpy().sum()) + table.num_rows


def read_manifest(folder: str | Path) -> dict:
    """The build manifest of a dataset folder (item indexing, provenance, files of every domain)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a VIP5 dataset folder (no {MANIFEST}); build one with `vip5-data build`")
    return json.loads(path.read_text(encoding="utf-8"))


def folder_stats(folder: str | Path, domain: str | None = None) -> dict[str, dict[str, object]]:
    """Statistics of every domain (or one) of a built dataset folder, recomputed from its Parquet files."""
    folder = Path(folder)
    domains = read_manifest(folder)["domains"]
    if domain is not None:
        if domain not in domains:
            raise KeyError(f"{folder}: no domain {domain!r}; built domains: {sorted(domains)}")
        domains = {domain: domains[domain]}
    out = {}
    for name, entry in domains.items():
        tables = {
            config: {
                split: pq.read_table(folder / path, columns=STATS_COLUMNS[config]) for split, path in files.items()
            }
            for config, files in entry["files"].items()
            if config in STATS_COLUMNS
        }
        out[name] = {"indexing": entry["indexing"]["name"], **table_stats(tables)}
    return out
