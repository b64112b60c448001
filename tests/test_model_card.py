"""Evaluation-results files (schema, atomic writes, validation, table) and the model cards generated from them."""

import json
import math
from dataclasses import replace

import pytest
from huggingface_hub import ModelCard

from model_cards.model_card import build_model_card, load_paper_results, main, write_model_card
from training.ranking import parse_outputs, ranking_metrics, valid_share
from training.results import (
    DatasetInfo,
    EvaluationResults,
    ModelInfo,
    TaskResult,
    format_table,
    package_version,
    read_results,
    results_from_dict,
    results_to_dict,
    utc_timestamp,
    write_results,
)
from training.text_metrics import explanation_metrics, metric_settings

TARGETS = [7, 3, 9]


def ranking_result(template: str, prompt: str, protocol: str, indexing: str, rankings, family="sequential"):
    return TaskResult(
        task_family=family,
        template_id=template,
        prompt=prompt,
        protocol=protocol,
        item_indexing=indexing,
        split="test",
        num_examples=len(TARGETS),
        metrics=ranking_metrics(rankings, TARGETS),
        valid_share=1.0,
        settings={},
    )


@pytest.fixture
def results() -> EvaluationResults:
    beams = [["7", "x", "7", "12"], ["1", "2", "3"], ["oops"]]
    parsed = [parse_outputs(b, valid_ids=set(range(1, 11))) for b in beams]
    paper = ranking_result("A-3", "seen", "paper", "paper", [p.ranking for p in parsed])
    paper.valid_share = valid_share(parsed)
    hypotheses, references = ["great color and smell", "too sticky"], ["great color", "it is too sticky"]
    return EvaluationResults(
        package_version=package_version(),
        created_at=utc_timestamp(),
        model=ModelInfo(name_or_path="outputs/vip5-beauty", base_model="google-t5/t5-small"),
        dataset=DatasetInfo(name="vip5/amazon-p5", domain="beauty", config="beauty", fingerprint="f00d"),
        configuration={"tasks": ["sequential", "direct", "explanation"], "batch_size": 16},
        training_configuration={"learning_rate": 0.001, "epochs": 10, "adapter_reduction_factor": 8},
        results=[
            paper,
            ranking_result("A-3", "seen", "full_ranking", "paper", [[7, 1], [3], [2, 9]]),
            ranking_result("A-9", "unseen", "constrained", "random", [[1, 7], [2, 3], [9]]),
            ranking_result("A-3", "seen", "popularity", "paper", [[1, 2], [3], [4]]),
            ranking_result("B-5", "seen", "scoring", "paper", [[7], [1, 3], [9]], family="direct"),
            TaskResult(
                task_family="explanation",
                template_id="C-12",
                prompt="unseen",
                protocol="paper",
                item_indexing="paper",
                split="test",
                num_examples=2,
                metrics=explanation_metrics(hypotheses, references),
                settings=metric_settings(),
            ),
        ],
    )


def test_results_round_trip_through_json(results, tmp_path):
    path = tmp_path / "eval" / "results.json"
    write_results(results, path)
    assert read_results(path) == results
    assert json.loads(path.read_text())["results"][0]["valid_share"] == pytest.approx(5 / 8)
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left behind


def test_failed_write_keeps_the_previous_file(results, tmp_path):
    path = tmp_path / "results.json"
    write_results(results, path)
    before = path.read_text()
    results.results[0].metrics["hr@1"] = math.nan  # mutated after construction: caught before writing
    with pytest.raises(ValueError, match="finite"):
        write_results(results, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def corrupt(results: EvaluationResults, edit) -> dict:
    data = results_to_dict(results)
    edit(data)
    return data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["results"][1].update(protocol="scoring"),
            r"results\[1\]: .*'scoring' is not defined for .*sequential",
        ),
        (lambda d: d["results"][0].update(item_indexing="shuffled"), r"results\[0\]: .*item_indexing"),
        (lambda d: d["results"][0].update(valid_share=None), r"results\[0\]: .*valid_share must be a share"),
        (lambda d: d["results"][5].update(valid_share=0.5), r"results\[5\]: .*must be null for explanation"),
        (lambda d: d["results"][2].update(num_examples="3"), r"results\[2\]: .*num_examples"),
        (lambda d: d["results"][2].pop("split"), r"results\[2\]: unknown fields \[\], missing fields \['split'\]"),
        (lambda d: d["dataset"].update(sha="x"), r"results.json: dataset: unknown fields \['sha'\]"),
        (lambda d: d.update(schema_version=2), "schema_version 2 is not supported"),
        (lambda d: d["results"].append(dict(d["results"][0])), "two results for the same"),
        (lambda d: d.update(results={}), r"results.json: results: expected a JSON array"),
    ],
)
def test_invalid_results_name_file_and_field(results, tmp_path, edit, message):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(corrupt(results, edit)))
    with pytest.raises(ValueError, match=message):
        read_results(path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{\n  "package_version": "0.1.0",\n  oops\n}\n')
    with pytest.raises(ValueError, match=r"results.json: line 3, column 3: invalid JSON"):
        read_results(path)


def test_table_labels_every_number(results):
    table = format_table(results)
    lines = table.splitlines()
    protocol_row = next(line for line in lines if line.startswith("protocol") and "full_ranking" in line)
    assert protocol_row.split()[1:] == ["paper", "full_ranking", "constrained", "popularity"]
    hr10 = next(line for line in lines if line.startswith("hr@10"))
    assert hr10.split()[1:5] == [f"{r.metrics['hr@10']:.4f}" for r in results.results[:4]]
    assert "[explanation]" in table and "bleu4_char_original" in table


def test_model_card_round_trip(results, tmp_path):
    results_path, card_path = tmp_path / "results.json", tmp_path / "card" / "README.md"
    write_results(results, results_path)
    write_model_card(results_path, card_path, model_id="vip5/vip5-small-beauty")
    card = ModelCard.load(card_path)
    assert card.data.base_model == "google-t5/t5-small" and card.data.datasets == ["vip5/amazon-p5"]
    loaded = card.data.eval_results
    own = [r for r in results.results if r.protocol != "popularity"]  # baselines are floors, not model results
    assert len(loaded) == sum(len(r.metrics) for r in own)
    by_label = {(e.metric_type, e.metric_args["template_id"], e.metric_args["protocol"]): e for e in loaded}
    for result in own:
        for key, value in result.metrics.items():
            entry = by_label[(key, result.template_id, result.protocol)]
            assert entry.metric_value == pytest.approx(value)
            assert entry.metric_args["item_indexing"] == result.item_indexing
            assert entry.metric_args["num_examples"] == result.num_examples
            assert entry.dataset_split == result.split and entry.metric_config == result.protocol
    assert {e.task_type for e in loaded} == {
        "sequential-recommendation",
        "direct-recommendation",
        "text2text-generation",
    }


def test_model_card_body_labels_protocols_and_warns_about_leakage(results):
    text = build_model_card(results, model_id="vip5/vip5-small-beauty").text
    assert "Warning: item-id leakage" in text
    assert "| A-3 | seen | popularity (baseline) | paper |" in text
    for protocol in ("paper", "full_ranking", "constrained", "scoring", "popularity"):
        assert f"/ `{protocol}`**" in text
    assert "learning_rate: 0.001" in text and "batch_size: 16" in text
    assert "Intended use and limits" in text

    honest = replace(results, results=[r for r in results.results if r.item_indexing != "paper"])
    assert "Warning: item-id leakage" not in build_model_card(honest, model_id="vip5/x").text


def test_model_card_puts_the_paper_numbers_beside_ours(results):
    _, published = load_paper_results()
    paper_a3 = next(p for p in published if (p.source, p.domain, p.template_id) == ("vip5_paper", "beauty", "A-3"))
    ours = {(r.template_id, r.protocol): r for r in results.results}
    text = build_model_card(results, model_id="vip5/x").text
    same = f"| A-3 | hr@10 | {ours['A-3', 'paper'].metrics['hr@10']:.4f} | paper | paper | {paper_a3.metrics['hr@10']:.4f} |"
    other = f"| A-3 | hr@10 | {ours['A-3', 'full_ranking'].metrics['hr@10']:.4f} | full_ranking | paper |"
    assert f"{same} vip5_paper | yes |" in text
    assert other in text and f"{paper_a3.metrics['hr@10']:.4f} | vip5_paper | no |" in text
    assert "| A-3 | hr@10 | " + f"{ours['A-3', 'popularity'].metrics['hr@10']:.4f} | popularity" not in text
    assert "arxiv.org/abs/2305.14302" in text

    no_paper = replace(results, dataset=replace(results.dataset, domain="garden"))
    assert "No published number exists" in build_model_card(no_paper, model_id="vip5/x").text


def test_paper_numbers_use_this_packages_metric_names():
    sources, published = load_paper_results()
    known = set(ranking_metrics([[1]], [1])) | set(explanation_metrics(["a"], ["a"]))
    assert published and all(set(p.metrics) <= known for p in published)
    assert {p.source for p in published} == set(sources)
    assert all(source["url"].startswith("https://") for source in sources.values())


def test_bad_paper_file_names_the_entry(tmp_path):
    path = tmp_path / "paper.json"
    path.write_text(json.dumps({"sources": {"s": {}}, "results": [{"source": "s", "domain": "toys"}]}))
    with pytest.raises(ValueError, match=r"paper.json: results\[0\]"):
        load_paper_results(path)


def test_command_line_writes_the_card(results, tmp_path):
    results_path = tmp_path / "results.json"
    write_results(results, results_path)
    main([str(results_path), str(tmp_path / "README.md"), "--model-id", "vip5/cli", "--dataset-id", "vip5/data"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.model_name == "vip5/cli"
    assert {e.dataset_type for e in card.data.eval_results} == {"vip5/data"}


def test_results_from_dict_rejects_non_objects():
    with pytest.raises(ValueError, match="x.json: top level: expected a JSON object, got list"):
        results_from_dict([], source="x.json")
