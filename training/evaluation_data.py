"""What `vip5-evaluate` evaluates: the model (or adapter), its processor, the fixed examples of a split and what the
protocols and baselines need besides them (the catalogue, the training interactions), loaded once for all templates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from peft import PeftConfig, PeftModel
from transformers import AutoConfig
from transformers.utils.peft_utils import find_adapter_config_file

from data_builders.loading import load_config, read_dataset_manifest
from modeling_vip5 import VIP5ForConditionalGeneration
from modeling_vip5.processing_vip5 import VIP5Processor

from .examples import DomainTables, Example, evaluation_examples
from .results import (
    ModelInfo,
)
from .train import attach_item_features

if TYPE_CHECKING:
    from .evaluate import EvaluateConfig

TRAIN_CONFIG_FILE = "train_config.json"  # written by vip5-train next to the adapter / model folder
ADAPTER_SUBFOLDER = "adapter"



@dataclass
class EvaluationData:
    """The evaluated split and what the protocols need besides it, loaded once for all templates."""

    tables: DomainTables
    catalogue: list[int]
    rows: dict[str, datasets.Dataset]
    item_indexing: dict[str, Any]
    fingerprint: str




def adapter_subfolder(name_or_path: str) -> str | None:
    """Where a PEFT adapter sits in a folder / Hub repo: "" (the root), "adapter" (vip5-train's published layout: the
    base model at the root, its adapter and processor in `adapter/`), or None for a full model."""
    for subfolder in ("", ADAPTER_SUBFOLDER):
        if find_adapter_config_file(name_or_path, subfolder=subfolder) is not None:
            return subfolder
    return None


def load_model(name_or_path: str, base_model: str = "") -> tuple[torch.nn.Module, ModelInfo]:
    """A full VIP5 folder / Hub id, or a PEFT adapter on its base model (`base_model` overrides the adapter's record).

    Returns the model to evaluate: for an adapter, the base model with PEFT's layers injected into it, which computes
    the tuned function and exposes `generate` and `get_encoder` as the ranking helpers expect.
    """
    subfolder = adapter_subfolder(name_or_path)
    if subfolder is None:
        if base_model:
            raise ValueError(f"--base-model is for adapters, but {name_or_path} has no adapter_config.json")
        return VIP5ForConditionalGeneration.from_pretrained(name_or_path).eval(), ModelInfo(name_or_path)
    base_id = base_model or PeftConfig.from_pretrained(name_or_path, subfolder=subfolder).base_model_name_or_path
    if not base_id:
        raise ValueError(f"{name_or_path}: the adapter does not record its base model; give it with --base-model")
    model_type = AutoConfig.from_pretrained(base_id).model_type
    if model_type != "vip5":
        raise ValueError(
            f"{name_or_path}: the adapter's base {base_id} is a {model_type!r} checkpoint, not a VIP5 model; VIP5's "
            "frozen random whole-word and category tables are not stored in an adapter, so give the VIP5 base folder "
            "the adapter was trained on with --base-model")
    base = VIP5ForConditionalGeneration.from_pretrained(base_id)
    tuned = PeftModel.from_pretrained(base, name_or_path, subfolder=subfolder or None)
    return tuned.get_base_model().eval(), ModelInfo(name_or_path, base_model=base_id)


def load_processor(config: EvaluateConfig) -> VIP5Processor:
    """`--processor`, else the one saved with the model (next to the adapter when there is one)."""
    if config.processor:
        return VIP5Processor.from_pretrained(config.processor)
    subfolder = adapter_subfolder(config.model)
    return VIP5Processor.from_pretrained(config.model, **({"subfolder": subfolder} if subfolder else {}))


def training_configuration(name_or_path: str) -> dict[str, Any] | None:
    """The `train_config.json` vip5-train wrote next to a local adapter / model folder, if there is one."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return None
    for candidate in (folder / TRAIN_CONFIG_FILE, folder.parent / TRAIN_CONFIG_FILE):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ValueError(f"{candidate}: line {error.lineno}: invalid JSON ({error.msg})") from error
    return None


def data_fingerprint(parts: Mapping[str, datasets.Dataset]) -> str:
    """SHA-256 of the rows of the named datasets: the same for the same data wherever and however it is stored.

    (`datasets`' own fingerprint of a local folder hashes paths and modification times, not contents.)
    """
    digest = hashlib.sha256()
    for name in sorted(parts):
        table = parts[name].with_format("arrow")[:]
        # `take` copies into fresh buffers: slices, chunks and index mappings would otherwise change the bytes
        table = table.take(pa.array(range(table.num_rows))).combine_chunks().replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(name.encode() + b"\0" + sink.getvalue().to_pybytes())
    return digest.hexdigest()


def load_evaluation_data(config: EvaluateConfig, processor: VIP5Processor) -> EvaluationData:
    """The split's rows per task family, the domain tables, the catalogue and the item features (into the processor)."""
    hub = {"revision": config.dataset_revision} if config.dataset_revision else {}
    manifest = read_dataset_manifest(config.dataset, **hub)
    if config.domain not in manifest["domains"]:
        raise ValueError(f"{config.dataset}: no domain {config.domain!r}; built domains: {sorted(manifest['domains'])}")
    entry = manifest["domains"][config.domain]
    built = set(entry["files"])
    needed = {"sequential", "items"} | ({"direct"} if "direct" in config.tasks else set()) | \
        ({"explanation"} if "explanation" in config.tasks else set())
    if needed - built:
        raise ValueError(f"{config.dataset}: domain {config.domain!r} lacks the configs {sorted(needed - built)} that "
                         f"tasks {config.tasks} need (skipped at build time: {entry.get('skipped_configs', {})})")
    kwargs = hub | ({"cache_dir": config.cache_dir} if config.cache_dir else {})

    def load(name: str, split: str | None = None):
        return load_config(config.dataset, config.domain, name, split=split, **kwargs)

    sequential, items = load("sequential"), load("items", "train")
    users = load("users", "train") if "users" in built else None
    attach_item_features(processor, items, config.dataset, config.domain, config.image_encoder, **hub)
    if config.image_features == "shuffled":
        shuffle_item_features(processor, config.seed)

    rows = {"sequential": sequential[config.split]}
    if "direct" in config.tasks:
        rows["direct"] = load("direct", config.split)
    if "explanation" in config.tasks:  # the original's test set holds the reviews with an extracted sentence
        rows["explanation"] = load("explanation", config.split).filter(lambda row: row["explanation"] is not None)
    rows = {family: split.select(range(min(config.max_examples, len(split)))) if config.max_examples else split
            for family, split in rows.items() if family in config.tasks}
    # everything the prompts, targets and baselines are made of: the evaluated rows, the training interactions
    # (popularity), the items (ids, titles, photos, features) and the users' names
    fingerprinted = {f"{family}/{config.split}": split for family, split in rows.items()}
    fingerprinted |= {"sequential/train": sequential["train"], "items": items}
    if users is not None:
        fingerprinted["users"] = users
    return EvaluationData(
        tables=DomainTables.from_datasets(sequential, users, items),
        catalogue=sorted(int(i) for i in items["item_id"]),
        rows=rows,
        item_indexing=entry["indexing"],
        fingerprint=data_fingerprint(fingerprinted),
    )


def shuffle_item_features(processor: VIP5Processor, seed: int) -> None:
    """Give every photographed item another photographed item's features (a seeded permutation): the same model and
    prompts with image tokens that no longer describe their items, to measure what the images contribute."""
    extractor = processor.feature_extractor
    table, mask = np.array(extractor.item_features), extractor.item_has_image
    rows = np.flatnonzero(mask) if mask is not None else np.arange(1, len(table))
    table[rows] = table[np.random.default_rng(seed).permutation(rows)]
    extractor.set_item_features(table, mask)


def examples_for(family: str, template_id: str, data: EvaluationData, config: EvaluateConfig) -> list[Example]:
    """The fixed examples of one template; with `redraw_candidates`, direct negatives drawn afresh as the original did
    (seeded per user, so a rerun draws the same ones)."""
    rows = data.rows[family]
    if family == "direct" and config.redraw_candidates:
        position = {int(u): i for i, u in enumerate(data.tables.user_ids)}
        redrawn = [dict(row) | {"negatives": data.tables.negatives(
            np.random.default_rng([config.seed, int(row["user_id"])]), position[int(row["user_id"])],
            len(row["negatives"]))} for row in rows]
        return evaluation_examples(family, template_id, redrawn, data.tables, config.seed)
    examples = evaluation_examples(family, template_id, rows, data.tables, config.seed)
    if config.max_history and family == "sequential":
        examples = [dataclasses.replace(e, fields={**e.fields, "history": list(e.fields["history"])[-config.max_history:]})
                    for e in examples]
    return examples


