"""DomainData -> one Arrow table per (config, split), typed with `datasets.Features` so `load_dataset` restores the
exact feature types (fixed-length negatives and image features included) from the Parquet schema metadata.

Configs (each only when its inputs exist):
* `sequential` — `user_id`, `history`, `target`. Leave-one-out: test = (i_1..i_{N-1}, i_N), validation =
  (i_1..i_{N-2}, i_{N-1}); train = (i_1..i_{N-3}, i_{N-2}), i.e. `history + [target]` is the user's whole training
  sequence, from which training draws the paper's random targets and histories (spec §3.4).
* `direct` — `user_id`, `positive`, `negatives` (the user's fixed candidates): validation (positive i_{N-1}) and test
  (positive i_N). Training draws its positives from the sequential train rows.
* `explanation` — one review per row with the fields of the C prompts (`title` uses VIP5's 'unknown title' fallback).
* `items` — `item_id`, `asin`, `title`, `image_url`, `has_image`, one fixed-size float32 column per image encoder.
* `users` — `user_id`, `reviewer_id`, `name`.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

from .domain import DomainData, Interactions

UNKNOWN_TITLE = "unknown title"  # what VIP5's prompts show for an item without a title (spec §3.2)

_ID = datasets.Value("int32")
_TEXT = datasets.Value("string")


def _features(config: str, data: DomainData) -> datasets.Features:
    if config == "sequential":
        return datasets.Features({"user_id": _ID, "history": datasets.List(_ID), "target": _ID})
    if config == "direct":
        count = data.negatives.shape[1]
        return datasets.Features({"user_id": _ID, "positive": _ID, "negatives": datasets.List(_ID, length=count)})
    if config == "explanation":
        return datasets.Features(
            {
                "user_id": _ID,
                "item_id": _ID,
                "reviewer_id": _TEXT,
                "asin": _TEXT,
                "user_desc": _TEXT,
                "title": _TEXT,
                "star_rating": datasets.Value("int8"),
                "feature": _TEXT,
                "summary": _TEXT,
                "explanation": _TEXT,
                "review_text": _TEXT,
                "unix_review_time": datasets.Value("int64"),
            }
        )
    if config == "items":
        columns = {
            "item_id": _ID,
            "asin": _TEXT,
            "title": _TEXT,
            "image_url": _TEXT,
            "has_image": datasets.Value("bool"),
        }
        for encoder, (matrix, _) in data.features.items():
            columns[encoder] = datasets.List(datasets.Value("float32"), length=matrix.shape[1])
        return datasets.Features(columns)
    if config == "users":
        return datasets.Features({"user_id": _ID, "reviewer_id": _TEXT, "name": _TEXT})
    raise ValueError(f"unknown config {config!r}")


def _table(config: str, data: DomainData, columns: dict[str, object]) -> pa.Table:
    schema = _features(config, data).arrow_schema

    def column(field: pa.Field) -> pa.Array | pa.ChunkedArray:
        value = columns[field.name]
        if isinstance(value, pa.Array | pa.ChunkedArray):
            return value.cast(field.type)
        return pa.array(value, type=field.type)

    return pa.Table.from_arrays([column(f) for f in schema], schema=schema)


def _drop_tail(interactions: Interactions, k: int) -> tuple[pa.Array, np.ndarray]:
    """Each user's sequence without its last `k` items (as a list column), and the item `k` from the end."""
    lengths = interactions.lengths
    keep = interactions.position_in_user() < np.repeat(lengths - k, lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths - k)]).astype(np.int32)
    history = pa.ListArray.from_arrays(pa.array(offsets), pa.array(interactions.items[keep], type=pa.int32()))
    return history, interactions.items[interactions.offsets[1:] - k]


def _fixed_size(matrix: np.ndarray, value_type: pa.DataType) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), type=value_type), matrix.shape[1])


def available_configs(data: DomainData) -> dict[str, str]:
    """Config -> why it cannot be built (empty string when it can)."""
    seq = "" if data.interactions is not None else "needs sequential_data.txt / reviews"
    return {
        "sequential": seq,
        "direct": seq or ("" if data.negatives is not None else "needs fixed negatives"),
        "explanation": "" if data.explanations is not None else "needs exp_splits.pkl + datamaps.json, or raw reviews",
        "items": "" if data.item_asins is not None else "needs datamaps.json",
        "users": "" if data.user_raw_ids is not None else "needs datamaps.json",
    }


def domain_tables(data: DomainData) -> dict[str, dict[str, pa.Table]]:
    """Every config the data allows, as {config: {split: table}}."""
    out: dict[str, dict[str, pa.Table]] = {}
    missing = available_configs(data)
    inter = data.interactions
    if not missing["sequential"]:
        user_ids = np.arange(1, inter.num_users + 1, dtype=np.int32)
        out["sequential"] = {}
        for split, k in (("train", 3), ("validation", 2), ("test", 1)):
            history, target = _drop_tail(inter, k)
            out["sequential"][split] = _table(
                "sequential", data, {"user_id": user_ids, "history": history, "target": target}
            )
    if not missing["direct"]:
        negatives = _fixed_size(data.negatives, pa.int32())
        out["direct"] = {
            split: _table(
                "direct", data, {"user_id": user_ids, "positive": _drop_tail(inter, k)[1], "negatives": negatives}
            )
            for split, k in (("validation", 2), ("test", 1))
        }
    if not missing["explanation"]:
        titles = np.asarray(
            [UNKNOWN_TITLE] + [t or UNKNOWN_TITLE for t in (data.item_titles or [None] * data.num_items)], dtype=object
        )
        out["explanation"] = {}
        for split, table in data.explanations.items():
            columns = {name: table.column(name) for name in table.column_names}
            columns["title"] = titles[table.column("item_id").to_numpy()].tolist()
            out["explanation"][split] = _table("explanation", data, columns)
    if not missing["items"]:
        count = data.num_items
        has_image = _has_image(data)
        columns = {
            "item_id": np.arange(1, count + 1, dtype=np.int32),
            "asin": data.item_asins,
            "title": data.item_titles or [None] * count,
            "image_url": data.item_image_urls or [None] * count,
            "has_image": has_image,
        }
        for encoder, (matrix, _) in data.features.items():
            columns[encoder] = _fixed_size(matrix[1:], pa.float32())
        out["items"] = {"train": _table("items", data, columns)}
    if not missing["users"]:
        count = len(data.user_raw_ids)
        columns = {
            "user_id": np.arange(1, count + 1, dtype=np.int32),
            "reviewer_id": data.user_raw_ids,
            "name": data.user_names or [None] * count,
        }
        out["users"] = {"train": _table("users", data, columns)}
    return out


def _has_image(data: DomainData) -> np.ndarray:
    """True when the item has a real feature for every encoder of the build; without encoders, when a photo URL is
    known (the best knowledge available before extraction)."""
    if data.features:
        return np.logical_and.reduce([has[1:] for _, has in data.features.values()])
    urls = data.item_image_urls or [None] * data.num_items
    return np.fromiter((u is not None for u in urls), dtype=bool, count=data.num_items)
