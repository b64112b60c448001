"""The evaluation-results file: one JSON document per evaluation run, written atomically and validated on read.

The original kept its numbers in notebook outputs whose cell source no longer matched the run (spec §8.3, item 23).
Here every group of metrics carries its task family, template, seen/unseen prompt, protocol, item indexing, split,
number of examples and valid-output share, and the document carries the full configuration, the package version and
the dataset fingerprint, so a number can never be separated from how it was obtained. Model cards are built from it.
"""

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

from data_builders.atomic import write_text_atomic

SCHEMA_VERSION = 1
DISTRIBUTION_NAME = "vip5-hf"

TaskFamily = Literal["sequential", "direct", "explanation"]
ItemIndexing = Literal["paper", "random", "sequential_train_first", "collaborative", "visual"]

# Which protocols exist for which task family, and what each one means (printed into model cards).
PROTOCOLS: dict[str, dict[str, str]] = {
    "sequential": {
        "paper": "free 20-beam search, 20 returned sequences parsed as item ids (invalid ids stay in the ranking as "
        "misses); the original VIP5 protocol",
        "constrained": "20-beam search restricted to existing item ids by a prefix trie",
        "full_ranking": "exact likelihood of every item id given the prompt; the exact top-k that beam search "
        "approximates",
        "popularity": "baseline: the most popular training items",
        "transition": "baseline: the items that most often followed the history's last item in the training "
        "interactions (first-order Markov chain), then popularity",
        "random": "baseline: uniformly random items (seeded per example)",
    },
    "direct": {
        "paper": "free 20-beam search over a prompt listing 100 candidates, outputs parsed as item ids (outputs "
        "outside the candidates count as misses); candidates fixed by the dataset unless redrawn",
        "scoring": "exact likelihood of each of the prompt's 100 candidates; deterministic",
        "popularity": "baseline: the prompt's candidates by training popularity",
        "transition": "baseline: the prompt's candidates by how often they followed the user's last training item, "
        "then by popularity",
        "random": "baseline: the prompt's candidates in random order (seeded per example)",
    },
    "explanation": {
        "paper": "greedy decoding with the original length limit (max_length 20)",
        "generation": "decoding with the generation settings recorded in `settings`",
    },
}
BASELINE_PROTOCOLS = ("popularity", "transition", "random")

ITEM_INDEXINGS: dict[str, str] = {
    "paper": "P5's ids, assigned in order of first appearance including test items; next-item ids are partly "
    "predictable from id arithmetic (data leakage, jeykigung/P5 PR #3), so numbers are inflated and only comparable "
    "to other `paper`-indexed numbers",
    "random": "ids assigned by a seeded random permutation; no id arithmetic leaks the target",
    "sequential_train_first": "sequential ids assigned over training interactions first (OpenP5 style), so "
    "held-out items cannot be predicted from id order",
    "collaborative": "structured ids from training interactions only: ids sharing a decimal prefix are one cluster of "
    "co-purchased items (hierarchical clustering of the co-purchase graph, Hua et al. 2023)",
    "visual": "structured ids from the items' CLIP image features only: ids sharing a decimal prefix are one cluster "
    "of similar-looking items",
}


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@strict
@dataclass
class TaskResult:
    """The metrics of one (task family, template, protocol) run over one split, with everything that qualifies them."""

    task_family: TaskFamily
    template_id: str
    prompt: Literal["seen", "unseen"]
    protocol: str
    item_indexing: ItemIndexing
    split: str
    num_examples: int
    metrics: dict[str, float]
    valid_share: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def validate_protocol(self) -> None:
        if self.protocol not in PROTOCOLS[self.task_family]:
            raise ValueError(
                f"protocol {self.protocol!r} is not defined for task family {self.task_family!r}; "
                f"expected one of {sorted(PROTOCOLS[self.task_family])}"
            )

    def validate_counts(self) -> None:
        if self.num_examples < 1:
            raise ValueError(f"num_examples must be at least 1, got {self.num_examples}")
        if not self.metrics:
            raise ValueError("metrics is empty")
        for key, value in self.metrics.items():
            _finite(f"metrics[{key!r}]", value)

    def validate_valid_share(self) -> None:
        # Ranking protocols always report how many outputs were valid item ids; text generation has no such notion.
        if self.task_family == "explanation":
            if self.valid_share is not None:
                raise ValueError("valid_share applies to ranking protocols only; it must be null for explanation")
        elif self.valid_share is None or not 0.0 <= self.valid_share <= 1.0:
            raise ValueError(f"valid_share must be a share in [0, 1] for ranking protocols, got {self.valid_share!r}")


@strict
@dataclass
class DatasetInfo:
    """Which data the numbers come from: `domain` selects the paper's numbers, `fingerprint` pins the exact rows."""

    name: str
    domain: str
    config: str | None
    fingerprint: str
    revision: str | None = None


@strict
@dataclass
class ModelInfo:
    """What was evaluated: a local folder or Hub id, and the backbone it was trained from (for card metadata)."""

    name_or_path: str
    base_model: str | None = None


@strict
@dataclass
class EvaluationResults:
    """One evaluation run: its results and everything needed to reproduce or label them."""

    package_version: str
    created_at: str
    model: ModelInfo
    dataset: DatasetInfo
    configuration: dict[str, Any]
    results: list[TaskResult]
    training_configuration: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def validate_schema_version(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this code reads {SCHEMA_VERSION})"
            )

    def validate_unique_results(self) -> None:
        seen: set[tuple[str, ...]] = set()
        for result in self.results:
            key = (result.task_family, result.template_id, result.protocol, result.item_indexing, result.split)
            if key in seen:
                raise ValueError(f"two results for the same (family, template, protocol, indexing, split) {key}")
            seen.add(key)


def package_version() -> str:
    """Version of the installed `vip5-hf` distribution, recorded with every result."""
    try:
        return version(DISTRIBUTION_NAME)
    except PackageNotFoundError as error:
        raise RuntimeError(f"the {DISTRIBUTION_NAME} distribution is not installed (pip install -e .)") from error


def utc_timestamp() -> str:
    """ISO-8601 UTC time for `created_at`."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _build(cls: type, data: Any, source: str, where: str) -> Any:
    """Instantiate a schema dataclass from parsed JSON; errors read `<source>: <field path>: <problem>`."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: {where}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = sorted(set(data) - names), sorted(required - set(data))
    if unknown or missing:
        raise ValueError(f"{source}: {where}: unknown fields {unknown}, missing fields {missing}")
    values = dict(data)
    if cls is EvaluationResults:
        values["model"] = _build(ModelInfo, data["model"], source, "model")
        values["dataset"] = _build(DatasetInfo, data["dataset"], source, "dataset")
        if not isinstance(data["results"], list):
            raise ValueError(f"{source}: results: expected a JSON array, got {type(data['results']).__name__}")
        values["results"] = [_build(TaskResult, r, source, f"results[{i}]") for i, r in enumerate(data["results"])]
    try:
        return cls(**values)
    except (StrictDataclassFieldValidationError, StrictDataclassClassValidationError) as error:
        problem = " ".join(str(error).split())  # the library's message spans lines
        raise ValueError(f"{source}: {where}: {problem}") from error


def results_from_dict(data: Any, source: str = "results") -> EvaluationResults:
    """Validate parsed JSON and build the results object; errors name `source` and the field path."""
    return _build(EvaluationResults, data, source, "top level")


def results_to_dict(results: EvaluationResults) -> dict[str, Any]:
    """Plain JSON-ready dict (dataclasses → dicts and lists)."""
    return asdict(results)


def write_results(results: EvaluationResults, path: str | os.PathLike) -> None:
    """Validate and write the results as JSON atomically (NaN/inf are rejected: they are not JSON)."""
    data = results_to_dict(results)
    results_from_dict(data, source=f"results to write to {path}")  # re-checks values mutated after construction
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_results(path: str | os.PathLike) -> EvaluationResults:
    """Read and validate a results file; errors name the file and the line or field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg})") from error
    return results_from_dict(data, source=str(path))


def format_table(results: EvaluationResults) -> str:
    """Plain-text tables, one per task family: a column per run, its labels on top, then one row per metric.

    Runs are columns because explanation has over twenty metrics; every number stays under the labels that qualify it.
    """
    lines = [
        f"model: {results.model.name_or_path}   dataset: {results.dataset.name} ({results.dataset.domain}, "
        f"fingerprint {results.dataset.fingerprint})   vip5-hf {results.package_version}"
    ]
    for family in PROTOCOLS:
        runs = [r for r in results.results if r.task_family == family]
        if not runs:
            continue
        rows = [
            ("template", [r.template_id for r in runs]),
            ("prompt", [r.prompt for r in runs]),
            ("protocol", [r.protocol for r in runs]),
            ("indexing", [r.item_indexing for r in runs]),
            ("split", [r.split for r in runs]),
            ("examples", [str(r.num_examples) for r in runs]),
            ("valid", ["-" if r.valid_share is None else f"{r.valid_share:.4f}" for r in runs]),
        ]
        for key in dict.fromkeys(key for r in runs for key in r.metrics):
            rows.append((key, [f"{r.metrics[key]:.4f}" if key in r.metrics else "-" for r in runs]))
        label_width = max(len(label) for label, _ in rows)
        widths = [max(len(cells[i]) for _, cells in rows) for i in range(len(runs))]
        lines += ["", f"[{family}]"]
        for label, cells in rows:
            padded = (cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
            lines.append(f"{label.ljust(label_width)}  {'  '.join(padded)}")
    return "\n".join(lines)


__all__ = [
    "BASELINE_PROTOCOLS",
    "ITEM_INDEXINGS",
    "PROTOCOLS",
    "SCHEMA_VERSION",
    "DatasetInfo",
    "EvaluationResults",
    "ModelInfo",
    "TaskResult",
    "format_table",
    "package_version",
    "read_results",
    "results_from_dict",
    "results_to_dict",
    "utc_timestamp",
    "write_results",
]
