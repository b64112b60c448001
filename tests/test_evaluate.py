"""vip5-evaluate: protocols on a model trained in the test to memorise a few users, results file, baselines, card,
adapters, settings, and a run under two processes."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import datasets
import pytest
import torch
from conftest import tiny_config_kwargs
from data_fixture import write_features, write_p5_domain
from huggingface_hub import ModelCard
from peft import get_peft_model
from transformers import T5Config, T5ForConditionalGeneration

from data_builders import build_domain
from modeling_vip5 import VIP5AdapterConfig, VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.processing_vip5 import VIP5Processor
from training.evaluate import EvaluateConfig, parse_args, run_evaluation
from training.evaluation_data import data_fingerprint, examples_for, load_evaluation_data, load_model, load_processor
from training.protocols import ProtocolRunner
from training.results import read_results
from training.train import Collator

REPO = Path(__file__).resolve().parents[1]
USERS = 4  # users whose test prompts the model memorises (and the examples evaluated)
TEMPLATES = ["A-3", "A-9", "B-5", "C-3"]


def config_for(root: Path, **overrides) -> EvaluateConfig:
    settings = dict(model=str(root / "model"), dataset=str(root / "dataset"), domain="toys", templates=TEMPLATES,
                    max_examples=USERS, batch_size=USERS, cache_dir=str(root / "cache"),
                    output=str(root / "results.json"), predictions=str(root / "predictions.jsonl"))
    return EvaluateConfig(**settings | overrides)


@pytest.fixture(scope="module")
def memorised(tmp_path_factory, t5_tokenizer):
    """A built dataset (with reviews and user names) and a tiny VIP5 trained to give the first users' test items for
    the sequential prompts A-3 and A-9; then one evaluation of it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small gain nothing from a second thread, which costs 10x on a busy machine
    try:
        yield _memorise_and_evaluate(tmp_path_factory.mktemp("evaluate"), t5_tokenizer)
    finally:
        torch.set_num_threads(threads)


def _memorise_and_evaluate(root: Path, t5_tokenizer) -> dict:
    raw = write_p5_domain(root / "raw", domain="toys", num_users=40, num_items=140)
    write_features(root / "raw" / "features", "vitb32", "toys", raw.asins, dim=512)
    build_domain("p5", root / "raw", "toys", root / "dataset", encoders=("vitb32",))
    processor = VIP5Processor(t5_tokenizer)
    config = config_for(root)
    data = load_evaluation_data(config, processor)
    train = examples_for("sequential", "A-3", data, config) + examples_for("sequential", "A-9", data, config)
    batch = Collator(processor, config.max_input_length, config.truncation, config.max_target_length)(train)

    torch.manual_seed(0)
    model = VIP5ForConditionalGeneration(VIP5Config(**tiny_config_kwargs(
        image_feature_dim=512, vocab_size=len(t5_tokenizer), image_token_id=processor.image_token_id,
        loss_normalization="token_mean")))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05, f"the tiny model did not memorise its {len(train)} prompts (loss {loss.item():.3f})"
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    (root / "train_config.json").write_text(json.dumps({"method": "full", "learning_rate": 1e-2}))

    evaluation = run_evaluation(config_for(root, generate={"max_new_tokens": 3}, model_card=str(root / "README.md"),
                                           model_id="vip5/test-model", dataset_id="vip5/test-data"))
    return {"root": root, "evaluation": evaluation, "data": data, "processor": processor}


def runs(evaluation) -> dict[tuple[str, str], object]:
    return {(r.template_id, r.protocol): r for r in evaluation.results.results}


def test_constrained_and_full_ranking_agree_on_the_memorised_items(memorised):
    evaluation, data = memorised["evaluation"], memorised["data"]
    catalogue = set(data.catalogue)
    by_run = runs(evaluation)
    for template in ("A-3", "A-9"):
        constrained = evaluation.predictions["sequential", template, "constrained"]
        exact = evaluation.predictions["sequential", template, "full_ranking"]
        assert [r["ranking"][0] for r in constrained] == [r["ranking"][0] for r in exact]
        assert [r["ranking"][0] for r in exact] == [r["target"] for r in exact]  # memorised
        for records in (constrained, exact):
            assert all(set(r["ranking"]) <= catalogue and len(r["ranking"]) == 20 for r in records)
        for protocol in ("constrained", "full_ranking"):
            assert by_run[template, protocol].valid_share == 1.0
            assert by_run[template, protocol].metrics["hr@1"] == 1.0

        # free beams rank the memorised item first, but the other beams are often no item at all
        paper = evaluation.predictions["sequential", template, "paper"]
        assert [r["ranking"][0] for r in paper] == [r["target"] for r in paper]
        assert by_run[template, "paper"].valid_share < 1.0
        outputs = sum(r["num_outputs"] for r in paper)
        assert by_run[template, "paper"].valid_share == sum(r["num_valid"] for r in paper) / outputs
        assert all(r["num_outputs"] == 20 for r in paper)


def test_results_file_validates_and_labels_every_run(memorised):
    evaluation, root = memorised["evaluation"], memorised["root"]
    stored = read_results(root / "results.json")
    assert stored == evaluation.results
    assert stored.configuration["templates"] == TEMPLATES and stored.configuration["num_processes"] == 1
    assert stored.configuration["item_indexing"]["name"] == "random" == stored.results[0].item_indexing
    assert stored.training_configuration == {"method": "full", "learning_rate": 1e-2}
    assert len(stored.dataset.fingerprint) == 64 and stored.package_version
    assert set(runs(evaluation)) == {
        *[(t, p) for t in ("A-3", "A-9")
          for p in ("paper", "constrained", "full_ranking", "popularity", "transition", "random")],
        *[("B-5", p) for p in ("paper", "scoring", "popularity", "transition", "random")],
        ("C-3", "paper"), ("C-3", "generation"),
    }
    assert {r.prompt for r in stored.results if r.template_id == "A-9"} == {"unseen"}
    assert all(r.num_examples == USERS for r in stored.results)
    lines = [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == USERS * len(stored.results)


def test_baselines_rank_the_same_examples(memorised):
    evaluation, data = memorised["evaluation"], memorised["data"]
    counts: dict[int, int] = {}
    for sequence in data.tables.train_sequences:
        for item in sequence:
            counts[int(item)] = counts.get(int(item), 0) + 1
    most_popular = sorted(data.catalogue, key=lambda i: (-counts.get(i, 0), i))[:20]
    followers: dict[int, Counter[int]] = defaultdict(Counter)
    for sequence in data.tables.train_sequences:
        for item, following in zip(sequence.tolist(), sequence[1:].tolist(), strict=False):
            followers[item][following] += 1
    last_trained = {int(u): int(s[-1]) for u, s in zip(data.tables.user_ids, data.tables.train_sequences, strict=True)}
    sequential = examples_for("sequential", "A-3", data, config_for(memorised["root"]))
    chains = evaluation.predictions["sequential", "A-3", "transition"]
    for record in evaluation.predictions["sequential", "A-3", "popularity"]:
        assert record["ranking"] == most_popular
    for example, record in zip(sequential, chains, strict=True):
        after = followers.get(example.fields["history"][-1], {})
        assert record["ranking"][:len(after)] == sorted(after, key=lambda i: (-after[i], -counts.get(i, 0), i))[:20]
    examples = examples_for("direct", "B-5", data, config_for(memorised["root"]))
    popularity = evaluation.predictions["direct", "B-5", "popularity"]
    shuffled = evaluation.predictions["direct", "B-5", "random"]
    chained = evaluation.predictions["direct", "B-5", "transition"]
    for example, by_popularity, by_chance, by_chain in zip(examples, popularity, shuffled, chained, strict=True):
        candidates = example.fields["candidates"]
        assert by_popularity["ranking"] == sorted(candidates, key=lambda i: -counts.get(i, 0))[:20]
        after = followers.get(last_trained[example.fields["user_id"]], {})
        assert by_chain["ranking"] == sorted(candidates, key=lambda i: (-after.get(i, 0), -counts.get(i, 0)))[:20]
        assert set(by_chance["ranking"]) <= set(candidates) and len(set(by_chance["ranking"])) == 20
        assert by_popularity["target"] == by_chance["target"] == example.fields["target_item_id"]


def test_direct_protocols_rank_the_prompts_candidates(memorised):
    evaluation, data = memorised["evaluation"], memorised["data"]
    config = config_for(memorised["root"])
    examples = examples_for("direct", "B-5", data, config)
    scoring = evaluation.predictions["direct", "B-5", "scoring"]
    for example, record in zip(examples, scoring, strict=True):
        assert set(record["ranking"]) <= set(example.fields["candidates"]) and len(record["ranking"]) == 20
    paper = evaluation.predictions["direct", "B-5", "paper"]  # valid = among the prompt's candidates
    share = runs(evaluation)["B-5", "paper"].valid_share
    assert share == sum(r["num_valid"] for r in paper) / sum(r["num_outputs"] for r in paper) < 1.0


def test_explanation_runs_use_the_paper_length_and_the_given_settings(memorised):
    evaluation, tokenizer = memorised["evaluation"], memorised["processor"].tokenizer
    by_run = runs(evaluation)
    for protocol, limit in (("paper", 19), ("generation", 3)):  # max_length 20 counts the decoder start token
        records = evaluation.predictions["explanation", "C-3", protocol]
        assert all(len(tokenizer(r["hypothesis"], add_special_tokens=False)["input_ids"]) <= limit for r in records)
        assert all(r["reference"].startswith("the ") for r in records)
        metrics = by_run["C-3", protocol].metrics
        assert {"bleu4", "rouge1_f", "rougeL_f", "bleu4_char_original"} <= set(metrics)
        assert all(math.isfinite(v) for v in metrics.values())
    assert by_run["C-3", "generation"].settings["generation"]["max_new_tokens"] == 3


def test_model_card_is_written_from_the_results(memorised):
    card = ModelCard.load(memorised["root"] / "README.md")
    assert card.data.model_name == "vip5/test-model" and card.data.datasets == ["vip5/test-data"]
    protocols = {e.metric_args["protocol"] for e in card.data.eval_results}
    assert protocols == {"paper", "constrained", "full_ranking", "scoring", "generation"}  # baselines are not results


def test_excluding_history_never_ranks_history_items(memorised):
    root, data = memorised["root"], memorised["data"]
    config = config_for(root, exclude_history=True)
    model, _ = load_model(config.model)
    runner = ProtocolRunner(model, memorised["processor"], config, data.catalogue)
    examples = examples_for("sequential", "A-3", data, config)
    for protocol in ("constrained", "full_ranking"):
        for example, parsed in zip(examples, runner.run("sequential", protocol, examples), strict=True):
            assert parsed.ranking and not set(parsed.ranking) & set(example.fields["history"])


def test_redrawn_candidates_are_fresh_negatives_seeded_per_user(memorised):
    root, data = memorised["root"], memorised["data"]
    fixed = examples_for("direct", "B-5", data, config_for(root))
    redrawn = examples_for("direct", "B-5", data, config_for(root, redraw_candidates=True))
    again = examples_for("direct", "B-5", data, config_for(root, redraw_candidates=True))
    assert [e.fields for e in redrawn] == [e.fields for e in again]
    for a, b in zip(fixed, redrawn, strict=True):
        assert a.fields["target_item_id"] == b.fields["target_item_id"] in b.fields["candidates"]
        assert len(set(b.fields["candidates"])) == 100 and set(a.fields["candidates"]) != set(b.fields["candidates"])
        user = list(data.tables.user_ids).index(a.fields["user_id"])
        assert not set(b.fields["candidates"]) - {b.fields["target_item_id"]} & data.tables.interacted[user]


@pytest.mark.parametrize("layout", ["adapter folder", "published repository"])
def test_adapter_evaluates_the_tuned_model(tmp_path, t5_tokenizer, layout):
    """An adapter folder, or vip5-train's Hub layout (base model at the root, adapter and processor in adapter/)."""
    torch.manual_seed(0)
    base_folder = tmp_path / "repo"
    VIP5ForConditionalGeneration(VIP5Config(**tiny_config_kwargs())).save_pretrained(base_folder)
    base = VIP5ForConditionalGeneration.from_pretrained(base_folder)  # the adapter records where its base is
    tuned = get_peft_model(base, VIP5AdapterConfig(reduction_factor=4)).eval()
    adapter = base_folder / "adapter" if layout == "published repository" else tmp_path / "adapter"
    tuned.save_pretrained(adapter)
    VIP5Processor(t5_tokenizer).save_pretrained(adapter)
    model_path = str(base_folder if layout == "published repository" else adapter)

    loaded, info = load_model(model_path)
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 1]]), "decoder_input_ids": torch.tensor([[0, 9]])}
    with torch.no_grad():
        expected = tuned(**inputs).logits
        untuned = VIP5ForConditionalGeneration.from_pretrained(base_folder)(**inputs).logits
        torch.testing.assert_close(loaded(**inputs).logits, expected)
    assert not torch.allclose(untuned, expected)  # the adapters really change the function
    assert info.base_model == str(base_folder)
    processor = load_processor(EvaluateConfig(model=model_path, dataset="unused"))
    assert processor.tokenizer.get_vocab() == t5_tokenizer.get_vocab()

    T5ForConditionalGeneration(T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2)).save_pretrained(
        tmp_path / "t5")
    with pytest.raises(ValueError, match="not a VIP5 model.*--base-model"):
        load_model(model_path, base_model=str(tmp_path / "t5"))


def test_fingerprint_follows_the_content_not_the_storage():
    rows = datasets.Dataset.from_dict({"user_id": [1, 2, 3], "history": [[3, 4], [5], [6]], "name": ["a", None, "c"]})
    chunked = datasets.Dataset.from_dict({"user_id": [1], "history": [[3, 4]], "name": ["a"]}).add_item(
        {"user_id": 2, "history": [5], "name": None})
    first_two = data_fingerprint({"sequential/test": rows.select(range(2))})
    assert data_fingerprint({"sequential/test": chunked}) == first_two  # two Arrow chunks, same rows
    assert data_fingerprint({"sequential/test": rows.select([0, 1])}) == first_two  # an indices mapping, same rows
    assert data_fingerprint({"sequential/test": rows}) != first_two
    assert data_fingerprint({"sequential/validation": rows.select(range(2))}) != first_two


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"templates": ["A-3", "B-1"]}, r"B-1.*yes/no prompt"),
        ({"templates": ["C-7"]}, r"C-7.*rating"),
        ({"protocols": ["beam"]}, r"protocols: unknown \['beam'\]"),
        ({"generate": {"num_beam": 4}}, r"generate: \['num_beam'\] are not generation settings"),
        ({"split": "train"}, "split: expected validation or test"),
        ({"model_card": "README.md"}, "--model-id"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_evaluation(config_for(tmp_path, **overrides))


def test_command_line_flags():
    config = parse_args(["--model", "m", "--dataset", "d", "--generate", "num_beams=12", "min_length=9",
                         "early_stopping=true", "--templates", "A-3", "--no-baselines", "--exclude-history"])
    assert config.generate == {"num_beams": 12, "min_length": 9, "early_stopping": True}
    assert (config.templates, config.baselines, config.exclude_history) == (["A-3"], False, True)
    assert parse_args(["--model", "m", "--dataset", "d"]).templates == ["A-3", "B-5", "C-3", "A-9", "B-8", "C-12"]


def test_two_processes_give_the_one_process_numbers(memorised, tmp_path):
    """Examples are split over two ranks (gloo on CPU) and gathered; the numbers equal the single-process run's."""
    root = memorised["root"]
    output = tmp_path / "results.json"
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with socket.socket() as probe:  # a free port, so parallel runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", port, "-m", "training.evaluate", "--model", str(root / "model"),
               "--dataset", str(root / "dataset"), "--domain", "toys", "--templates", "A-3", "B-5",
               "--tasks", "sequential", "direct", "--max-examples", str(USERS), "--batch-size", "1",
               "--cache-dir", str(root / "cache"), "--output", str(output)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = read_results(output)
    assert two.configuration["num_processes"] == 2
    one = runs(memorised["evaluation"])
    for result in two.results:
        assert result.metrics == pytest.approx(one[result.template_id, result.protocol].metrics)
        assert result.valid_share == pytest.approx(one[result.template_id, result.protocol].valid_share)
