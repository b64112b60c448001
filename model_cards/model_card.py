"""Model cards written from an evaluation-results file, never by hand.

Every number in the card comes from the results JSON with its protocol and item indexing beside it; the metadata
carries the same numbers as `model-index` (through `huggingface_hub.EvalResult`, which renders and parses it); the
paper's numbers are shown next to ours with a plain statement of whether the two are comparable.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

from data_builders.atomic import write_text_atomic
from data_builders.errors import add_debug_argument, cli_boundary
from training.preflight import check_output_file, check_repo_id
from training.ranking import REPORTED_CUTOFFS
from training.results import (
    BASELINE_PROTOCOLS,
    ITEM_INDEXINGS,
    PROTOCOLS,
    EvaluationResults,
    ItemIndexing,
    TaskFamily,
    TaskResult,
    read_results,
)

PAPER_RESULTS_PATH = Path(__file__).with_name("paper_results.json")
TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md.jinja"

# model-index groups results by task type and keeps one task name per group, so each family gets its own type.
TASK_TYPES = {
    "sequential": ("sequential-recommendation", "Sequential recommendation"),
    "direct": ("direct-recommendation", "Direct recommendation (100 candidates)"),
    "explanation": ("text2text-generation", "Explanation generation"),
}
# Columns of the card's tables; the full set of metrics is in the metadata and in the results file.
CARD_COLUMNS = {
    "sequential": [f"{m}@{k}" for m, ks in REPORTED_CUTOFFS.items() for k in ks],
    "direct": [f"{m}@{k}" for m, ks in REPORTED_CUTOFFS.items() for k in ks],
    "explanation": [
        "bleu1",
        "bleu4",
        "rouge1_f",
        "rouge2_f",
        "rougeL_f",
        "bleu1_char_original",
        "bleu4_char_original",
        "rouge1_f_unique_ngram_original",
        "rouge2_f_unique_ngram_original",
        "rougeL_f_unique_ngram_original",
    ],
}


@strict
@dataclass
class PaperResult:
    """One published group of numbers, keyed by this package's metric names."""

    source: str
    domain: str
    task_family: TaskFamily
    template_id: str
    protocol: str
    item_indexing: ItemIndexing
    metrics: dict[str, float]


def load_paper_results(path: Path = PAPER_RESULTS_PATH) -> tuple[dict[str, dict[str, str]], list[PaperResult]]:
    """The published numbers and their sources; errors name the file and the entry."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}: invalid JSON ({error.msg})") from error
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("sources"), dict)
        or not isinstance(data.get("results"), list)
    ):
        raise ValueError(f"{path}: expected an object with a `sources` object and a `results` array")
    sources, entries = data["sources"], []
    for index, entry in enumerate(data["results"]):
        try:
            result = PaperResult(**entry)
        except (TypeError, StrictDataclassFieldValidationError, StrictDataclassClassValidationError) as error:
            raise ValueError(f"{path}: results[{index}]: {error}") from error
        if result.source not in sources:
            raise ValueError(f"{path}: results[{index}].source {result.source!r} is not one of {sorted(sources)}")
        if result.protocol not in PROTOCOLS[result.task_family]:
            raise ValueError(
                f"{path}: results[{index}].protocol {result.protocol!r} is not a {result.task_family} protocol"
            )
        entries.append(result)
    return sources, entries


def _run_label(result: TaskResult) -> str:
    return f"{result.template_id} ({result.prompt}), {result.protocol}, {result.item_indexing} ids, {result.split}"


def eval_results(results: EvaluationResults, dataset_id: str) -> list[EvalResult]:
    """`model-index` entries for the model's own numbers (baselines are floors, not results of this model)."""
    entries = []
    for result in results.results:
        if result.protocol in BASELINE_PROTOCOLS:
            continue
        task_type, task_name = TASK_TYPES[result.task_family]
        for key, value in result.metrics.items():
            entries.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset_id,
                    dataset_name=f"Amazon {results.dataset.domain.title()} (VIP5)",
                    dataset_config=results.dataset.config,
                    dataset_split=result.split,
                    dataset_revision=results.dataset.revision,
                    metric_type=key,
                    metric_value=value,
                    metric_name=f"{key} · {_run_label(result)}",
                    metric_config=result.protocol,
                    metric_args={
                        "template_id": result.template_id,
                        "prompt": result.prompt,
                        "protocol": result.protocol,
                        "item_indexing": result.item_indexing,
                        "num_examples": result.num_examples,
                        "valid_share": result.valid_share,
                    },
                )
            )
    return entries


def _result_tables(results: EvaluationResults) -> list[dict[str, Any]]:
    tables = []
    for family in PROTOCOLS:
        rows = [r for r in results.results if r.task_family == family]
        if not rows:
            continue
        columns = [c for c in CARD_COLUMNS[family] if any(c in r.metrics for r in rows)]
        tables.append(
            {
                "family": family,
                "title": TASK_TYPES[family][1],
                "columns": columns,
                "rows": [
                    {
                        "result": r,
                        "baseline": r.protocol in BASELINE_PROTOCOLS,
                        "valid": "–" if r.valid_share is None else f"{r.valid_share:.4f}",
                        "values": [f"{r.metrics[c]:.4f}" if c in r.metrics else "–" for c in columns],
                    }
                    for r in rows
                ],
            }
        )
    return tables


def _paper_rows(results: EvaluationResults, paper: list[PaperResult]) -> list[dict[str, Any]]:
    """Our number next to each published number for the same domain, template and metric."""
    rows = []
    for result in results.results:
        if result.protocol in BASELINE_PROTOCOLS:
            continue
        for published in paper:
            if (published.domain, published.task_family, published.template_id) != (
                results.dataset.domain,
                result.task_family,
                result.template_id,
            ):
                continue
            for key, value in published.metrics.items():
                if key in result.metrics:
                    rows.append(
                        {
                            "result": result,
                            "metric": key,
                            "ours": f"{result.metrics[key]:.4f}",
                            "paper": f"{value:.4f}",
                            "source": published.source,
                            "comparable": (result.protocol, result.item_indexing)
                            == (published.protocol, published.item_indexing),
                        }
                    )
    return rows


def build_model_card(
    results: EvaluationResults,
    model_id: str,
    dataset_id: str | None = None,
) -> ModelCard:
    """Render the card: metadata with `model-index`, tables with protocols, indexing, paper numbers, configuration."""
    dataset_id = dataset_id or results.dataset.name
    sources, paper = load_paper_results()
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text2text-generation",
        base_model=results.model.base_model,
        datasets=[dataset_id],
        tags=["vip5", "recommendation", "multimodal", "t5", "adapters"],
        model_name=model_id,
        eval_results=eval_results(results, dataset_id),
    )
    used = {(r.task_family, r.protocol) for r in results.results}
    paper_rows = _paper_rows(results, paper)
    indexings = sorted({r.item_indexing for r in results.results})

    def dump(config: dict[str, Any] | None) -> str | None:
        return None if config is None else yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip()

    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_id=model_id,
        dataset_id=dataset_id,
        results=results,
        tables=_result_tables(results),
        protocols=[
            {"family": family, "protocol": protocol, "description": description}
            for family, described in PROTOCOLS.items()
            for protocol, description in described.items()
            if (family, protocol) in used
        ],
        indexings=[{"name": name, "description": ITEM_INDEXINGS[name]} for name in indexings],
        leaky_indexing="paper" in indexings,
        paper_rows=paper_rows,
        paper_sources={name: sources[name] for name in sorted({row["source"] for row in paper_rows})},
        run_settings=[
            {"label": _run_label(r), "settings": json.dumps(r.settings, sort_keys=True)}
            for r in results.results
            if r.settings
        ],
        training_configuration=dump(results.training_configuration),
        evaluation_configuration=dump(results.configuration),
    )


def write_model_card(
    results_path: str | Path, output_path: str | Path, model_id: str, dataset_id: str | None = None
) -> ModelCard:
    """Read an evaluation-results file and write its model card atomically (usually as `README.md`)."""
    card = build_model_card(read_results(results_path), model_id=model_id, dataset_id=dataset_id)
    write_text_atomic(output_path, str(card))
    return card


@cli_boundary("vip5-card")
def main(argv: list[str]) -> None:
    """Command line: `vip5-card results.json out/README.md --model-id org/name`; checks the paths and ids first."""
    parser = argparse.ArgumentParser(prog="vip5-card",
                                     description="Write a VIP5 model card from an evaluation-results JSON file.")
    parser.add_argument("results", type=Path, help="evaluation-results JSON written by vip5-evaluate")
    parser.add_argument("output", help="where to write the card (README.md of the model folder), atomically")
    parser.add_argument("--model-id", required=True, help="Hub id of the model, e.g. org/vip5-small-beauty")
    parser.add_argument("--dataset-id", help="Hub id of the dataset (default: the dataset name in the results)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if not args.results.is_file():
        raise FileNotFoundError(f"{args.results}: no such results file" if not args.results.exists() else
                                f"{args.results}: is a folder; give the results JSON written by vip5-evaluate")
    check_output_file("output", args.output)
    check_repo_id("--model-id", args.model_id)
    if args.dataset_id:
        check_repo_id("--dataset-id", args.dataset_id)
    write_model_card(args.results, args.output, model_id=args.model_id, dataset_id=args.dataset_id)


__all__ = ["PaperResult", "build_model_card", "eval_results", "load_paper_results", "main", "write_model_card"]

if __name__ == "__main__":
    sys.exit(main())
