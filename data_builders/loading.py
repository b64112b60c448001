"""What training and evaluation call to read a built dataset, from a local folder or a Hub dataset repo.

from data_builders import load_config, load_item_features, item_features_from_dataset
sequential = load_config("<folder or user/repo>", "beauty", "sequential")    # DatasetDict train/validation/test
table = load_item_features("<folder or user/repo>", "vitb32", domain="beauty")  # [num_items + 1, 512], row = id
# or, from what load_dataset returned:
items = load_config("<folder or user/repo>", "beauty", "items", split="train")
table = item_features_from_dataset(items, "vitb32")
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .stats import MANIFEST
from .writer import feature_array_name


def config_name(domain: str, config: str) -> str:
    """The `load_dataset` name of a domain's config, e.g. `beauty_sequential`."""
    return f"{domain}_{config}"


def load_config(
    dataset: str | Path, domain: str, config: str, split: str | None = None, **kwargs: Any
) -> datasets.DatasetDict | datasets.Dataset:
    """`datasets.load_dataset(dataset, "<domain>_<config>")` — a folder path or a Hub repo id; kwargs are passed on
    (`cache_dir`, `revision`, `token`, ...).

    `datasets` keys the Arrow cache of a local folder by its name and config, not its content: a folder rebuilt in
    place (or another folder of the same name) was served the old rows. A local folder therefore gets a cache
    directory named by the digest of its build manifest, which records the sources' SHA-256 and every build setting.
    """
    manifest = Path(dataset) / MANIFEST
    if "cache_dir" not in kwargs and manifest.is_file():
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
        kwargs["cache_dir"] = str(Path(datasets.config.HF_DATASETS_CACHE) / "vip5-local" / digest)
    return datasets.load_dataset(str(dataset), config_name(domain, config), split=split, **kwargs)


def _fetch(dataset: str | Path, filename: str, **hub_kwargs: Any) -> Path:
    """A file of a local dataset folder, or downloaded (and cached) from a Hub dataset repo."""
    local = Path(dataset)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found in the dataset folder")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(dataset), filename, repo_type="dataset", **hub_kwargs))


def read_dataset_manifest(dataset: str | Path, **hub_kwargs: Any) -> dict:
    """The build manifest (item indexing, sources, encoders, statistics) of a local folder or Hub repo."""
    return json.loads(_fetch(dataset, MANIFEST, **hub_kwargs).read_text(encoding="utf-8"))


def load_item_features(dataset: str | Path, encoder: str, domain: str | None = None, **hub_kwargs: Any) -> np.ndarray:
    """The item-feature table of one encoder as one read-only memory-mapped `[num_items + 1, dim]` float32 array:
    row `i` is item id `i` in the dataset's indexing, row 0 is zeros. `domain` may be omitted if there is only one."""
    manifest = read_dataset_manifest(dataset, **hub_kwargs)
    domains = manifest["domains"]
    if domain is None:
        if len(domains) != 1:
            raise ValueError(f"{dataset} holds domains {sorted(domains)}; pass `domain`")
        domain = next(iter(domains))
    if domain not in domains:
        raise KeyError(f"{dataset}: no domain {domain!r}; built domains: {sorted(domains)}")
    encoders = domains[domain]["encoders"]
    if encoder not in encoders:
        raise KeyError(f"{dataset}: domain {domain!r} has no {encoder!r} features; it has {sorted(encoders)}")
    return np.load(_fetch(dataset, feature_array_name(domain, encoder), **hub_kwargs), mmap_mode="r")


def item_features_from_dataset(items: datasets.Dataset, encoder: str) -> np.ndarray:
    """The same `[num_items + 1, dim]` table built from the `<domain>_items` split that `load_dataset` returned."""
    if encoder not in items.column_names:
        raise KeyError(f"the items dataset has no {encoder!r} column; columns: {items.column_names}")
    columns = items.with_format("numpy", columns=["item_id", encoder])[:]
    ids, features = columns["item_id"], columns[encoder]
    table = np.zeros((int(ids.max()) + 1, features.shape[1]), dtype=np.float32)
    table[ids] = features
    return table
