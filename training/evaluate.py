"""`vip5-evaluate`: the paper's evaluation protocols and honest ones beside them, on the same fixed examples.

    vip5-evaluate --model out/adapter --dataset <folder or Hub id> --domain beauty --output results.json
    accelerate launch -m training.evaluate --model ...      # examples split over processes, results gathered

For every template (default: seen A-3, B-5, C-3 and unseen A-9, B-8, C-12, as the released notebook; spec §6.1) the
protocols run on the same examples, and each number is labelled with its protocol (`training.results.PROTOCOLS`):

- sequential `paper` (free 20-beam search parsed as item ids), `constrained` (beam search over a prefix trie of the
  existing items) and `full_ranking` (exact likelihood of every item id);
- direct `paper` (free 20-beam search over a prompt listing 100 candidates) and `scoring` (exact likelihood of each);
- explanation `paper` (greedy, `max_length=20`, the original's config defaults) and `generation` (`--generate` flags);
- popularity, item-transition and random baselines for both ranking families, so every report has a floor.

The original notebook redrew the direct candidates at random at test time (spec §8.3); here they are the dataset's
fixed ones unless `--redraw-candidates` asks for the original behaviour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from peft import PeftConfig, PeftModel
from transformers import AutoConfig, GenerationConfig
from transformers.utils.peft_utils import find_adapter_config_file

from data_builders.atomic import write_text_atomic
from data_builders.loading import load_config, read_dataset_manifest
from model_cards.model_card import write_model_card
from modeling_vip5 import VIP5ForConditionalGeneration
from modeling_vip5.processing_vip5 import TRUNCATIONS, VIP5Processor
from modeling_vip5.ranking import (
    ENCODER_INPUTS,
    ItemTrie,
    ParsedOutputs,
    generate_ranked_items,
    item_token_ids,
    rank_candidates,
    rank_items,
)

from .baselines import RandomBaseline, TransitionBaseline
from .examples import YES_NO_TEMPLATES, DomainTables, Example, evaluation_examples
from .ranking import ranking_metrics, valid_share
from .results import (
    BASELINE_PROTOCOLS,
    DatasetInfo,
    EvaluationResults,
    ModelInfo,
    TaskResult,
    format_table,
    package_version,
    utc_timestamp,
    write_results,
)
from .text_metrics import explanation_metrics, metric_settings
from .train import Collator, attach_item_features

TASKS = ("sequential", "direct", "explanation")
DEFAULT_TEMPLATES = ("A-3", "B-5", "C-3", "A-9", "B-8", "C-12")
# Model protocols that `--protocols` selects; explanation `generation` runs when `--generate` gives settings.
SELECTABLE_PROTOCOLS = ("paper", "constrained", "full_ranking", "scoring")
IMAGE_FEATURE_MODES = ("real", "shuffled")
# The original's generate() calls (spec §1.11): 20-beam search for ranking; for explanation the T5 config defaults,
# i.e. greedy with max_length 20, the decoder start token included.
PAPER_BEAM_SEARCH = {"num_beams": 20, "num_return_sequences": 20, "max_length": 50, "no_repeat_ngram_size": 0,
                     "early_stopping": True}
PAPER_EXPLANATION = {"num_beams": 1, "do_sample": False, "max_length": 20}
# Constrained beams are ranked by their summed log-probability (no length normalisation), the quantity full_ranking
# computes exactly, so the two protocols differ only by the beam-search approximation.
CONSTRAINED_LENGTH_PENALTY = 0.0
RANKING_DEPTH = 20  # items kept per example: the paper's 20 beams; the metrics look at the first 10
NOT_EVALUATED = {
    **{t: "a yes/no prompt; the original never evaluates those (spec §6.1)" for t in sorted(YES_NO_TEMPLATES)},
    "C-7": "its target starts with a rating, which the explanation metrics do not evaluate (spec §6.1)",
    "C-8": "its target starts with a rating, which the explanation metrics do not evaluate (spec §6.1)",
}
TRAIN_CONFIG_FILE = "train_config.json"  # written by vip5-train next to the adapter / model folder
ADAPTER_SUBFOLDER = "adapter"


@dataclass
class EvaluateConfig:
    """Everything a run depends on; stored in the results file as its `configuration`."""

    model: str
    dataset: str
    domain: str = "beauty"
    output: str = "evaluation.json"
    base_model: str = ""
    processor: str = ""
    image_encoder: str = "vitb32"
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    protocols: list[str] = field(default_factory=lambda: list(SELECTABLE_PROTOCOLS))
    baselines: bool = True
    generate: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    batch_size: int = 16
    max_examples: int = 0
    exclude_history: bool = False
    redraw_candidates: bool = False
    image_features: str = "real"  # real | shuffled: the photographed items' feature rows permuted (seeded), an ablation
    max_history: int = 0  # sequential prompts keep the latest N history items (0 = all); match the training setting
    scoring_chunk_size: int = 128
    max_input_length: int = 1024
    max_target_length: int = 64
    truncation: str = "right"
    seed: int = 2022
    dataset_revision: str = ""
    cache_dir: str = ""
    predictions: str = ""
    model_card: str = ""
    model_id: str = ""
    dataset_id: str = ""

    def validate(self) -> None:
        """Reject settings that cannot work, naming the setting, before anything is loaded."""
        if not self.model or not self.dataset:
            raise ValueError("model and dataset are required (a model or adapter folder / Hub id, a dataset built by "
                             "`vip5-data build`)")
        for name, values, allowed in (("tasks", self.tasks, TASKS),
                                      ("protocols", self.protocols, SELECTABLE_PROTOCOLS)):
            unknown = sorted(set(values) - set(allowed))
            if unknown:
                raise ValueError(f"{name}: unknown {unknown}; choose from {list(allowed)}")
        if not self.tasks:
            raise ValueError(f"tasks: give at least one of {list(TASKS)}")
        refused = {t: NOT_EVALUATED[t] for t in self.templates if t in NOT_EVALUATED}
        if refused:
            raise ValueError(f"templates: cannot evaluate {refused}")
        if self.image_features not in IMAGE_FEATURE_MODES:
            raise ValueError(f"image_features: expected one of {IMAGE_FEATURE_MODES}, got {self.image_features!r}")
        if self.split not in ("validation", "test"):
            raise ValueError(f"split: expected validation or test, got {self.split!r}")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation: expected one of {TRUNCATIONS}, got {self.truncation!r}")
        for name in ("batch_size", "scoring_chunk_size", "max_input_length", "max_target_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("max_examples", "max_history"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be 0 (all) or positive, got {getattr(self, name)}")
        defaults = GenerationConfig()
        unknown = sorted(key for key in self.generate if not hasattr(defaults, key))
        if unknown:
            raise ValueError(f"generate: {unknown} are not generation settings (see transformers.GenerationConfig)")
        if self.model_card and not self.model_id:
            raise ValueError("model_card: give --model-id (the Hub id the card describes)")


@dataclass
class Evaluation:
    """What a run produced: the results document and, per run, the example-level outputs behind each number."""

    results: EvaluationResults
    predictions: dict[tuple[str, str, str], list[dict[str, Any]]]


@dataclass
class EvaluationData:
    """The evaluated split and what the protocols need besides it, loaded once for all templates."""

    tables: DomainTables
    catalogue: list[int]
    rows: dict[str, datasets.Dataset]
    item_indexing: dict[str, Any]
    fingerprint: str


# ---------------------------------------------------------------- loading


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
    table, mask = np.array(extractor.item_features), extractor._item_has_image
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


# ---------------------------------------------------------------- protocols


def _batches(examples: Sequence[Example], size: int) -> Iterator[Sequence[Example]]:
    for start in range(0, len(examples), size):
        yield examples[start : start + size]


class ProtocolRunner:
    """Runs each protocol over examples in batches; one per evaluation, as it holds the item trie and token ids."""

    def __init__(self, model, processor: VIP5Processor, config: EvaluateConfig, catalogue: Sequence[int]):
        self.model, self.processor, self.config = model, processor, config
        self.collate = Collator(processor, config.max_input_length, config.truncation, config.max_target_length)
        self.tokenizer = processor.tokenizer
        self.catalogue = list(catalogue)
        self.catalogue_ids = frozenset(self.catalogue)
        self._trie: ItemTrie | None = None
        self._catalogue_tokens: dict[int, list[int]] | None = None

    @property
    def trie(self) -> ItemTrie:
        if self._trie is None:
            self._trie = ItemTrie.from_tokenizer(self.tokenizer, self.catalogue)
        return self._trie

    @property
    def catalogue_tokens(self) -> dict[int, list[int]]:
        if self._catalogue_tokens is None:
            self._catalogue_tokens = item_token_ids(self.tokenizer, self.catalogue)
        return self._catalogue_tokens

    def excluded(self, example: Example) -> set[int]:
        return set(example.fields.get("history", ())) if self.config.exclude_history else set()

    @torch.no_grad()
    def run(self, family: str, protocol: str, examples: Sequence[Example]) -> list:
        """Per example: a `ParsedOutputs` (ranking protocols) or the generated text (explanation)."""
        step = {
            ("sequential", "paper"): lambda b, x: self._free_beams(x, self.catalogue_ids),
            ("sequential", "constrained"): self._constrained,
            ("sequential", "full_ranking"): self._full_ranking,
            ("direct", "paper"): lambda b, x: self._free_beams(x, [set(e.fields["candidates"]) for e in b]),
            ("direct", "scoring"): self._scoring,
            ("explanation", "paper"): lambda b, x: self._explain(x, PAPER_EXPLANATION),
            ("explanation", "generation"): lambda b, x: self._explain(x, PAPER_EXPLANATION | self.config.generate),
        }[family, protocol]
        device = self.model.device
        outputs: list = []
        for batch in _batches(examples, self.config.batch_size):
            inputs = {k: v.to(device) for k, v in self.collate(list(batch)).items() if k in ENCODER_INPUTS}
            outputs += step(batch, inputs)
        return outputs

    def _free_beams(self, inputs, valid_ids) -> list[ParsedOutputs]:
        """The paper protocol: unconstrained 20-beam search, beams parsed against the catalogue (sequential) or each
        prompt's own 100 candidates (direct)."""
        return generate_ranked_items(self.model, inputs, tokenizer=self.tokenizer, valid_ids=valid_ids,
                                     max_new_tokens=None, **PAPER_BEAM_SEARCH)

    def _constrained(self, batch: Sequence[Example], inputs) -> list[ParsedOutputs]:
        depth = max(map(len, self.catalogue_tokens.values()))
        return generate_ranked_items(
            self.model, inputs, trie=self.trie, num_beams=PAPER_BEAM_SEARCH["num_beams"],
            excluded=[self.excluded(e) for e in batch], max_new_tokens=depth, early_stopping=True,
            length_penalty=CONSTRAINED_LENGTH_PENALTY,
        )

    def _full_ranking(self, batch: Sequence[Example], inputs) -> list[ParsedOutputs]:
        ranked = rank_items(self.model, inputs, [self.catalogue] * len(batch), self.catalogue_tokens, k=RANKING_DEPTH,
                            excluded=[self.excluded(e) for e in batch], chunk_size=self.config.scoring_chunk_size)
        return [_exact(r.items) for r in ranked]

    def _scoring(self, batch: Sequence[Example], inputs) -> list[ParsedOutputs]:
        rankings = rank_candidates(self.model, inputs, [e.fields["candidates"] for e in batch], self.tokenizer,
                                   chunk_size=self.config.scoring_chunk_size)
        return [_exact(r) for r in rankings]

    def _explain(self, inputs, settings: Mapping[str, Any]) -> list[str]:
        sequences = self.model.generate(**inputs, **settings)
        return [text.strip() for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]


def _exact(ranking: Sequence[int]) -> ParsedOutputs:
    """A ranking of existing items by likelihood: every output is valid by construction."""
    return ParsedOutputs(ranking=list(ranking), num_outputs=len(ranking), num_valid=len(ranking))


def baseline_rankings(family: str, examples: Sequence[Example], data: EvaluationData,
                      config: EvaluateConfig) -> dict[str, list[ParsedOutputs]]:
    """Popularity, item-transition (both from the training interactions only) and random rankings of the same
    examples. The transition baseline follows the last item of the prompt's history (sequential) or of the user's
    training interactions (direct)."""
    transition = TransitionBaseline(data.tables.train_sequences, data.catalogue)
    popularity = transition.popularity  # the transition baseline's tie-breaker, counted once
    uniform = RandomBaseline(data.catalogue, seed=config.seed)
    last_trained = {int(u): int(s[-1]) for u, s in zip(data.tables.user_ids, data.tables.train_sequences, strict=True)}
    runs: dict[str, list[ParsedOutputs]] = {name: [] for name in BASELINE_PROTOCOLS}
    for example in examples:
        key = int(example.fields["user_id"])
        if family == "direct":
            candidates = example.fields["candidates"]
            runs["popularity"].append(_exact(popularity.rank_candidates(candidates)))
            runs["transition"].append(_exact(transition.rank_candidates(candidates, last=last_trained[key])))
            runs["random"].append(_exact(uniform.rank_candidates(candidates, key=key)))
        else:
            history = example.fields["history"]
            excluded = set(history) if config.exclude_history else set()
            runs["popularity"].append(_exact(popularity.rank_catalogue(RANKING_DEPTH, exclude=excluded)))
            runs["transition"].append(_exact(transition.rank_catalogue(RANKING_DEPTH, last=int(history[-1]),
                                                                       exclude=excluded)))
            runs["random"].append(_exact(uniform.rank_catalogue(RANKING_DEPTH, key=key, exclude=excluded)))
    return runs


def protocol_settings(family: str, protocol: str, config: EvaluateConfig) -> dict[str, Any]:
    """What qualifies a run's numbers beyond its protocol name, stored with them."""
    settings: dict[str, Any] = {"batch_size": config.batch_size, "max_input_length": config.max_input_length,
                                "truncation": config.truncation}
    if family == "sequential" and config.max_history:
        settings["max_history"] = config.max_history
    if config.image_features != "real":
        settings["image_features"] = config.image_features
    if family == "direct":
        settings["candidates"] = "redrawn (seeded per user)" if config.redraw_candidates else "fixed by the dataset"
    if family == "sequential" and protocol != "paper":
        settings["exclude_history"] = config.exclude_history
    if protocol in BASELINE_PROTOCOLS:
        settings["seed"] = config.seed
        return settings
    if family == "explanation":
        generation = PAPER_EXPLANATION | (config.generate if protocol == "generation" else {})
        return settings | {"generation": generation} | metric_settings()
    if protocol == "paper":
        return settings | {"generation": PAPER_BEAM_SEARCH}
    if protocol == "constrained":
        return settings | {"generation": {"num_beams": PAPER_BEAM_SEARCH["num_beams"], "early_stopping": True,
                                          "length_penalty": CONSTRAINED_LENGTH_PENALTY}}
    return settings | {"scoring_chunk_size": config.scoring_chunk_size}


def model_protocols(family: str, config: EvaluateConfig) -> list[str]:
    """The model protocols of one family that this configuration runs."""
    if family == "explanation":
        return ["paper"] + (["generation"] if config.generate else [])  # greedy text is its one protocol
    defined = {"sequential": ("paper", "constrained", "full_ranking"), "direct": ("paper", "scoring")}[family]
    return [p for p in defined if p in config.protocols]


# ---------------------------------------------------------------- the run


def run_evaluation(config: EvaluateConfig, accelerator: Accelerator | None = None) -> Evaluation:
    """Evaluate, gather the outputs of all processes, and (main process) write the results and print the table."""
    config.validate()
    accelerator = accelerator or Accelerator()
    model, model_info = load_model(config.model, config.base_model)
    model.to(accelerator.device)
    processor = load_processor(config)
    processor.check_model_config(model.config)
    unknown = [t for t in config.templates if t not in processor.templates]
    if unknown:
        raise ValueError(f"templates: {unknown} are not among the processor's templates {list(processor.templates)}")
    families = {t: processor.templates[t].task for t in config.templates}
    stray = {t: f for t, f in families.items() if f not in config.tasks}
    if stray:
        raise ValueError(f"templates {stray} belong to task families not in tasks {config.tasks}")
    with accelerator.main_process_first():  # the main process fills the datasets cache, the others then read it
        data = load_evaluation_data(config, processor)
    runner = ProtocolRunner(model, processor, config, data.catalogue)

    results: list[TaskResult] = []
    predictions: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for template_id, family in families.items():
        examples = examples_for(family, template_id, data, config)
        if not examples:
            raise ValueError(f"{config.dataset}: the {family} {config.split} split of {config.domain!r} is empty")
        outputs: dict[str, list] = {}
        seconds: dict[str, float] = {}
        for protocol in model_protocols(family, config):
            start = time.perf_counter()
            with accelerator.split_between_processes(examples) as shard:
                outputs[protocol] = gather_object(runner.run(family, protocol, shard))
            seconds[protocol] = round(time.perf_counter() - start, 3)
        if config.baselines and family != "explanation":
            outputs |= baseline_rankings(family, examples, data, config)
        for protocol, produced in outputs.items():
            result, records = _score(family, template_id, protocol, examples, produced, processor, data, config)
            if protocol in seconds:  # what each protocol costs, next to what it measures
                result.settings["wall_seconds"] = seconds[protocol]
            results.append(result)
            predictions[family, template_id, protocol] = records

    evaluation = Evaluation(
        EvaluationResults(
            package_version=package_version(), created_at=utc_timestamp(), model=model_info,
            dataset=DatasetInfo(name=config.dataset, domain=config.domain, config=config.domain,
                                fingerprint=data.fingerprint, revision=config.dataset_revision or None),
            configuration=dataclasses.asdict(config) | {"num_processes": accelerator.num_processes,
                                                        "item_indexing": data.item_indexing},
            results=results, training_configuration=training_configuration(config.model),
        ),
        predictions,
    )
    if accelerator.is_main_process:
        write_outputs(evaluation, config)
        print(format_table(evaluation.results))
    accelerator.wait_for_everyone()
    return evaluation


def _score(family: str, template_id: str, protocol: str, examples: Sequence[Example], produced: list,
           processor: VIP5Processor, data: EvaluationData, config: EvaluateConfig) -> tuple[TaskResult, list[dict]]:
    """The metrics of one run and its example-level records."""
    if len(produced) != len(examples):
        raise RuntimeError(f"{template_id}/{protocol}: {len(produced)} outputs gathered for {len(examples)} examples")
    common = dict(task_family=family, template_id=template_id,
                  prompt="seen" if processor.templates[template_id].seen else "unseen", protocol=protocol,
                  item_indexing=data.item_indexing["name"], split=config.split, num_examples=len(examples),
                  settings=protocol_settings(family, protocol, config))
    if family == "explanation":
        references = [processor.render(e.template_id, **e.fields).target for e in examples]
        records = [{"user_id": e.fields["user_id"], "item_id": e.fields["item_id"], "hypothesis": h, "reference": r}
                   for e, h, r in zip(examples, produced, references, strict=True)]
        return TaskResult(metrics=explanation_metrics(produced, references), **common), records
    targets = [int(e.fields["target_item_id"]) for e in examples]
    rankings = [p.ranking[:RANKING_DEPTH] for p in produced]
    records = [{"user_id": e.fields["user_id"], "target": t, "ranking": r, "num_outputs": p.num_outputs,
                "num_valid": p.num_valid} for e, t, r, p in zip(examples, targets, rankings, produced, strict=True)]
    return TaskResult(metrics=ranking_metrics(rankings, targets), valid_share=valid_share(produced), **common), records


def write_outputs(evaluation: Evaluation, config: EvaluateConfig) -> None:
    """The results JSON, and optionally the example-level predictions (JSON lines) and the model card."""
    write_results(evaluation.results, config.output)
    if config.predictions:
        lines = [json.dumps({"task_family": f, "template_id": t, "protocol": p, **record})
                 for (f, t, p), records in evaluation.predictions.items() for record in records]
        write_text_atomic(config.predictions, "\n".join(lines) + "\n")
    if config.model_card:
        write_model_card(config.output, config.model_card, model_id=config.model_id,
                         dataset_id=config.dataset_id or None)


# ---------------------------------------------------------------- command line


def __getattr__(name: str) -> Any:
    """`main` and `parse_args` (the console script, `accelerate launch -m training.evaluate`) live in
    `training.evaluate_cli`; they stay importable from here."""
    if name in ("main", "parse_args"):
        from . import evaluate_cli

        return getattr(evaluate_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from training.evaluate_cli import main

    raise SystemExit(main())
