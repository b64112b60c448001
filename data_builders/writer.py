"""Writes one domain into a dataset folder: Parquet per (config, split), a memory-mappable `.npy` per image encoder,
the manifest and the dataset card with its YAML `configs:` header. The domain is assembled in a staging folder and
moved into place only when complete, so a failed build leaves the previous folder untouched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model_cards.dataset_card import dataset_card

from .atomic import replace_dir, staging_dir
from .stats import MANIFEST, read_manifest

README = "README.md"


def parquet_name(domain: str, config: str, split: str) -> str:
    """Relative path of a split's Parquet file (the `-00000-of-00001` suffix is the Hub's shard naming)."""
    return f"{domain}/{config}/{split}-00000-of-00001.parquet"


def feature_array_name(domain: str, encoder: str) -> str:
    """Relative path of the `[num_items + 1, dim]` feature array of an encoder (row = item id)."""
    return f"{domain}/features/{encoder}.npy"


def _manifest(folder: Path) -> dict:
    """The folder's manifest, or a new one for a new folder."""
    if (folder / MANIFEST).is_file():
        return read_manifest(folder)
    return {"format": "vip5-dataset", "version": 1, "domains": {}}


def write_domain(
    folder: str | Path,
    domain: str,
    tables: dict[str, dict[str, pa.Table]],
    feature_arrays: dict[str, np.ndarray],
    entry: dict,
) -> dict:
    """Write (or replace) `domain` in `folder` and regenerate the manifest and card for all domains present.
    Returns the full manifest."""
    folder = Path(folder)
    manifest = _manifest(folder)
    manifest["domains"][domain] = entry
    with staging_dir(folder, f"build-{domain}") as stage:
        for config, splits in tables.items():
            for split, table in splits.items():
                path = stage / parquet_name(domain, config, split)
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, path)
        for encoder, matrix in feature_arrays.items():
            path = stage / feature_array_name(domain, encoder)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, matrix.astype(np.float32, copy=False))
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (stage / README).write_text(str(dataset_card(manifest)), encoding="utf-8")
        if not (stage / domain).is_dir():
            raise ValueError(f"nothing to write for domain {domain!r}")
        replace_dir(stage / domain, folder / domain)
        os.replace(stage / MANIFEST, folder / MANIFEST)
        os.replace(stage / README, folder / README)
    return manifest
