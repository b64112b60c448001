"""The item catalogue a VIP5 model recommends from: item id ↔ ASIN ↔ title ↔ image-feature row ↔ has_image.

A model only knows items as id strings; users know ASINs and titles, and prompts need each item's CLIP row. The
catalogue keeps these together and travels with the model (vip5-train saves it into the model folder), so
`pipeline("vip5-recommendation", model=...)` needs nothing else. On disk, beside the model::

    catalogue/items.parquet    item_id (int64), asin (string, null if unknown), title (string, null), has_image (bool)
    catalogue/features.npy     float32 [max item id + 1, dim]; row = item id, row 0 unused; np.load(mmap_mode="r")
    catalogue/catalogue.json   {"format": "vip5-catalogue", "version": 1, "encoder", "feature_dim", "num_items",
                                "source": where it was built from, "item_indexing": the dataset's item ids}

    catalogue = Catalogue.from_dataset("vip5-amazon", "beauty", "vitb32")   # a dataset built by `vip5-data build`
    catalogue.save("out/model"); Catalogue.load("out/model")               # a folder or a Hub model id
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from transformers.utils import cached_file

FOLDER = "catalogue"
ITEMS_FILE = "items.parquet"
FEATURES_FILE = "features.npy"
MANIFEST_FILE = "catalogue.json"
FORMAT = {"format": "vip5-catalogue", "version": 1}
DATASET_MANIFEST = "vip5_dataset.json"  # written by `vip5-data build`; it lists every file of a domain


class UnknownItemError(KeyError, ValueError):
    """An item id or ASIN that is not in the catalogue (a KeyError for lookups, a ValueError for bad input)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Catalogue:
    """Items a model can recommend, with their ASINs, titles, photo flags and CLIP feature rows (memory-mapped)."""

    def __init__(self, item_ids: Sequence[int], asins: Sequence[str | None], titles: Sequence[str | None],
                 has_image: Sequence[bool], features: np.ndarray, encoder: str, source: str = "",
                 item_indexing: dict[str, Any] | None = None):
        ids = np.asarray(item_ids, dtype=np.int64)
        columns = {"asins": len(asins), "titles": len(titles), "has_image": len(has_image)}
        if any(n != len(ids) for n in columns.values()):
            raise ValueError(f"catalogue columns differ in length: {len(ids)} item ids, {columns}")
        if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
            raise ValueError(f"features must be a float array [num_rows, dim], got {features.dtype} {list(features.shape)}")
        if len(ids) and (ids.min() < 1 or ids.max() >= len(features)):
            raise ValueError(f"item ids must lie in 1..{len(features) - 1} (the feature rows), got {ids.min()}..{ids.max()}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("item ids must be unique")
        self.features, self.encoder, self.source = features, encoder, source
        self.item_indexing = item_indexing
        self.item_ids: list[int] = sorted(int(i) for i in ids)
        self._asin = {int(i): a for i, a in zip(ids, asins, strict=True)}
        self._title = {int(i): t for i, t in zip(ids, titles, strict=True)}
        self.has_image_mask = np.zeros(len(features), dtype=bool)  # [num_rows], as the processor takes it
        self.has_image_mask[ids] = np.asarray(has_image, dtype=bool)
        self._by_asin: dict[str, int] = {}
        for item, asin in self._asin.items():
            if asin is not None and self._by_asin.setdefault(asin, item) != item:
                raise ValueError(f"ASIN {asin!r} names two items, {self._by_asin[asin]} and {item}")

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._asin

    def __repr__(self) -> str:
        return f"Catalogue({len(self)} items, {self.encoder} features [{self.features.shape[1]}], from {self.source!r})"

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def _check(self, item_id: int) -> int:
        if item_id not in self._asin:
            raise UnknownItemError(f"item id {item_id!r} is not in the catalogue at {self.source or '(in memory)'} "
                                   f"({len(self)} items, ids {self.item_ids[0]}..{self.item_ids[-1]})")
        return item_id

    def asin(self, item_id: int) -> str | None:
        return self._asin[self._check(item_id)]

    def title(self, item_id: int) -> str | None:
        return self._title[self._check(item_id)]

    def has_image(self, item_id: int) -> bool:
        return bool(self.has_image_mask[self._check(item_id)])

    def item_id_of(self, asin: str) -> int:
        if asin not in self._by_asin:
            raise UnknownItemError(f"ASIN {asin!r} is not in the catalogue at {self.source or '(in memory)'}")
        return self._by_asin[asin]

    def resolve(self, item: int | str) -> int:
        """The item id of an id (int) or an ASIN (str), checked against the catalogue."""
        if isinstance(item, str):
            return self.item_id_of(item)
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
            raise UnknownItemError(f"an item must be an integer item id or an ASIN string, got {item!r}")
        return self._check(int(item))

    def attach(self, processor: Any) -> None:
        """Give a `VIP5Processor` the feature table and photo mask, so prompts get the right rows and placeholders."""
        processor.feature_extractor.set_item_features(self.features, self.has_image_mask)

    # ------------------------------------------------------------------ storage

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `folder/catalogue/` (see the module docstring); returns that path."""
        target = Path(folder) / FOLDER
        target.mkdir(parents=True, exist_ok=True)
        rows = self.item_ids
        table = pa.table({"item_id": pa.array(rows, pa.int64()),
                          "asin": pa.array([self._asin[i] for i in rows], pa.string()),
                          "title": pa.array([self._title[i] for i in rows], pa.string()),
                          "has_image": pa.array(self.has_image_mask[rows].tolist(), pa.bool_())})
        pq.write_table(table, target / ITEMS_FILE)
        np.save(target / FEATURES_FILE, np.asarray(self.features, dtype=np.float32))
        manifest = FORMAT | {"encoder": self.encoder, "feature_dim": self.dim, "num_items": len(self),
                             "source": self.source, "item_indexing": self.item_indexing}
        (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike, **hub_kwargs: Any) -> Catalogue:
        """The catalogue saved beside a model: a local folder or a Hub model id (`revision`, `token`, ... passed on)."""
        try:
            paths = {name: cached_file(str(folder), name, subfolder=FOLDER, **hub_kwargs)
                     for name in (MANIFEST_FILE, ITEMS_FILE, FEATURES_FILE)}
        except OSError as error:
            raise FileNotFoundError(
                f"{folder}: no item catalogue ({FOLDER}/{MANIFEST_FILE}, {ITEMS_FILE}, {FEATURES_FILE}); vip5-train "
                "saves one into the model folder, or write it with Catalogue.from_dataset(dataset, domain, encoder)"
                f".save(folder) ({error})") from error
        manifest = json.loads(Path(paths[MANIFEST_FILE]).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT["format"]:
            raise ValueError(f"{paths[MANIFEST_FILE]}: not a VIP5 catalogue manifest (format {manifest.get('format')!r})")
        items = pq.read_table(paths[ITEMS_FILE]).to_pydict()
        features = np.load(paths[FEATURES_FILE], mmap_mode="r")
        return cls(items["item_id"], items["asin"], items["title"], items["has_image"], features, manifest["encoder"],
                   source=str(Path(folder) / FOLDER), item_indexing=manifest.get("item_indexing"))

    @classmethod
    def from_dataset(cls, dataset: str | os.PathLike, domain: str, encoder: str = "vitb32",
                     **hub_kwargs: Any) -> Catalogue:
        """From a dataset built by `vip5-data build` (a folder or a Hub dataset id): its `items` config and the
        encoder's feature table, both located through the build manifest (the table stays memory-mapped)."""

        def fetch(name: str) -> str:
            return cached_file(str(dataset), name, repo_type="dataset", **hub_kwargs)

        domains = json.loads(Path(fetch(DATASET_MANIFEST)).read_text(encoding="utf-8"))["domains"]
        if domain not in domains:
            raise KeyError(f"{dataset}: no domain {domain!r}; built domains: {sorted(domains)}")
        entry = domains[domain]
        if "items" not in entry["files"]:
            raise ValueError(f"{dataset}: domain {domain!r} has no items config ({entry.get('skipped_configs', {})})")
        if encoder not in entry["encoders"]:
            raise KeyError(f"{dataset}: domain {domain!r} has no {encoder!r} features; it has {sorted(entry['encoders'])}")
        columns = ["item_id", "asin", "title", "has_image"]
        items = pq.read_table(fetch(entry["files"]["items"]["train"]), columns=columns).to_pydict()
        features = np.load(fetch(entry["encoders"][encoder]["file"]), mmap_mode="r")
        return cls(*(items[c] for c in columns), features, encoder, source=f"{dataset} ({domain})",
                   item_indexing=entry.get("indexing"))


__all__ = ["Catalogue", "UnknownItemError"]
