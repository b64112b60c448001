"""Builders for the VIP5 Amazon datasets: P5/VIP5 files or raw Amazon 2014 files -> Parquet configs per domain with
CLIP image features, a dataset card and a manifest; plus the loaders training and evaluation use."""

from .build import build_domain
from .errors import DataFormatError
from .loading import config_name, item_features_from_dataset, load_config, load_item_features, read_dataset_manifest
from .push import push_dataset
from .stats import folder_stats

__all__ = [
    "DataFormatError",
    "build_domain",
    "config_name",
    "folder_stats",
    "item_features_from_dataset",
    "load_config",
    "load_item_features",
    "push_dataset",
    "read_dataset_manifest",
]
