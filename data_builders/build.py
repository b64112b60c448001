"""`build_domain`: read a source (P5 layout or raw Amazon 2014), complete it (fixed negatives, image features),
re-index the items, and write the domain's configs, manifest and card."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .amazon_raw import read_raw_domain
from .domain import DomainData
from .features import feature_dir, features_root_of, read_feature_dir
from .indexing import DEFAULT_INDEXING, check_indexing, indexing_record, item_index
from .p5_reader import read_p5_domain
from .splits import p5_negatives
from .stats import table_stats
from .tables import available_configs, domain_tables
from .writer import feature_array_name, parquet_name, write_domain

SOURCES = ("p5", "raw")
DOMAIN_NAME = re.compile(r"^[a-z][a-z0-9]*$")


def _versions() -> dict[str, str]:
    out = {}
    for package in ("vip5-hf", "datasets", "pyarrow", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def read_source(
    source: str, input_dir: str | Path, domain: str, category: str | None = None, seed: int = 2022
) -> DomainData:
    """The paper-indexed DomainData of a source."""
    if source == "p5":
        return read_p5_domain(input_dir, domain)
    if source == "raw":
        return read_raw_domain(input_dir, domain, category=category, seed=seed)
    raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")


def complete(
    data: DomainData, seed: int, encoders: tuple[str, ...], features_root: Path, missing_image: str
) -> DomainData:
    """Add what the source lacks: P5-style fixed negatives (seeded) and the requested image features."""
    if data.interactions is not None and data.negatives is None:
        data.negatives = p5_negatives(data.interactions, seed=seed)
        data.negatives_origin = f"generated with P5's sampler (99 per user, seed {seed})"
    if encoders:
        if data.item_asins is None:
            raise ValueError("image features are keyed by ASIN: the source needs datamaps.json (or raw reviews)")
        for encoder in encoders:
            directory = feature_dir(features_root, encoder, data.domain)
            data.features[encoder] = read_feature_dir(directory, data.item_asins, encoder, missing_image)
            missing = data.num_items - int(data.features[encoder][1][1:].sum())
            if missing:
                data.notes.append(f"{encoder}: {missing} items without a feature file (zero vector, has_image False)")
    return data


def build_domain(
    source: str,
    input_dir: str | Path,
    domain: str,
    output_dir: str | Path,
    *,
    indexing: str = DEFAULT_INDEXING,
    seed: int = 2022,
    encoders: tuple[str, ...] = (),
    features_root: str | Path | None = None,
    missing_image: str = "zero",
    category: str | None = None,
) -> dict:
    """Build one domain into `output_dir` (other domains already there are kept). Returns its manifest entry."""
    if not DOMAIN_NAME.match(domain):
        raise ValueError(f"domain name {domain!r} must be lower-case letters and digits (it names configs and folders)")
    check_indexing(indexing)
    data = read_source(source, input_dir, domain, category=category, seed=seed)
    data = complete(data, seed, tuple(encoders), features_root_of(input_dir, features_root), missing_image)
    encoder = encoders[0] if encoders else None  # `visual` indexing clusters the first encoder's features
    features = data.features[encoder] if encoder else None
    new_id = item_index(indexing, data.num_items, data.interactions, seed, features)
    data = data.reindexed(new_id, indexing_record(indexing, seed, encoder))

    tables = domain_tables(data)
    skipped = {config: why for config, why in available_configs(data).items() if why}
    entry = {
        "source": source,
        "indexing": data.indexing,
        "files": {
            config: {split: parquet_name(domain, config, split) for split in splits}
            for config, splits in tables.items()
        },
        "rows": {config: {split: t.num_rows for split, t in splits.items()} for config, splits in tables.items()},
        "skipped_configs": skipped,
        "encoders": {
            encoder: {
                "dim": int(matrix.shape[1]),
                "items": data.num_items,
                "items_with_feature": int(has[1:].sum()),
                "file": feature_array_name(domain, encoder),
            }
            for encoder, (matrix, has) in data.features.items()
        },
        "negatives_origin": data.negatives_origin,
        "explanation_origin": data.explanation_origin,
        "provenance": data.provenance,
        "notes": data.notes + [f"config {c} skipped: {why}" for c, why in skipped.items()],
        "stats": table_stats(tables),
        "built_with": _versions(),
    }
    write_domain(output_dir, domain, tables, {e: m for e, (m, _) in data.features.items()}, entry)
    return entry
