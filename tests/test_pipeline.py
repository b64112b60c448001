"""`pipeline("vip5-recommendation")` and the catalogue: only catalogue items, never the history when excluded, the
same rankings as vip5-evaluate's protocols, ASIN input, clear errors, and saved folders that load with the package
imported and in a fresh process without it (trust_remote_code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_config_kwargs
from transformers import pipeline

from modeling_vip5 import Catalogue, VIP5Config, VIP5ForConditionalGeneration, VIP5Processor
from modeling_vip5.pipeline_vip5 import REMOTE_TASK, TASK, VIP5RecommendationPipeline, save_pipeline_files
from modeling_vip5.ranking import rank_candidates
from training.evaluate import EvaluateConfig
from training.examples import Example
from training.protocols import ProtocolRunner

REPO = Path(__file__).resolve().parents[1]
HISTORY = [5, 17, 42]


@pytest.fixture(scope="session")
def vip5_folder(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny random VIP5 saved as vip5-train saves its final folder: model, processor, catalogue, pipeline code."""
    folder = tmp_path_factory.mktemp("vip5_pipeline") / "model"
    processor = VIP5Processor.from_pretrained(tiny_dataset["processor"])
    torch.manual_seed(0)
    model = VIP5ForConditionalGeneration(VIP5Config(**tiny_config_kwargs(
        image_feature_dim=512, vocab_size=len(processor.tokenizer), image_token_id=processor.image_token_id)))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    save_pipeline_files(folder, Catalogue.from_dataset(tiny_dataset["dataset"], "toy", "vitb32"))
    return folder


@pytest.fixture(scope="module")
def pipe(vip5_folder) -> VIP5RecommendationPipeline:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small gain nothing from a second thread on a shared machine
    yield pipeline(TASK, model=str(vip5_folder))
    torch.set_num_threads(threads)


def test_catalogue_from_dataset_saves_and_loads(tiny_dataset, vip5_folder, tmp_path):
    items = pq.read_table(next((tiny_dataset["dataset"] / "toy" / "items").glob("*.parquet"))).to_pydict()
    catalogue = Catalogue.load(vip5_folder)
    assert catalogue.item_ids == sorted(items["item_id"]) and len(catalogue) == 130
    for item, asin, has_image in zip(items["item_id"], items["asin"], items["has_image"], strict=True):
        assert catalogue.asin(item) == asin and catalogue.item_id_of(asin) == item
        assert catalogue.has_image(item) == has_image
    assert isinstance(catalogue.features, np.memmap) and catalogue.features.shape == (131, 512)
    np.testing.assert_array_equal(catalogue.features[items["item_id"]], np.stack(items["vitb32"]))
    manifest = json.loads((vip5_folder / "catalogue" / "catalogue.json").read_text())
    assert manifest["encoder"] == "vitb32" and manifest["feature_dim"] == 512 and manifest["num_items"] == 130
    again = Catalogue.load(catalogue.save(tmp_path).parent)
    assert again.item_ids == catalogue.item_ids
    for item in catalogue.item_ids:
        assert (again.asin(item), again.title(item), again.has_image(item)) == \
            (catalogue.asin(item), catalogue.title(item), catalogue.has_image(item))
    np.testing.assert_array_equal(again.features, catalogue.features)
    with pytest.raises(FileNotFoundError, match="no item catalogue"):
        Catalogue.load(tmp_path / "elsewhere")


def test_unknown_items_name_the_value_and_the_catalogue(pipe, vip5_folder):
    where = str(vip5_folder / "catalogue")
    with pytest.raises(KeyError, match=f"ASIN 'B99999999' is not in the catalogue at {where}"):
        pipe.catalogue.item_id_of("B99999999")
    with pytest.raises(ValueError, match=f"'history': ASIN 'B99999999' is not in the catalogue at {where}"):
        pipe({"history": [5, "B99999999"]})
    with pytest.raises(ValueError, match="'candidates': item id 999 is not in the catalogue"):
        pipe({"history": [5], "candidates": [1, 999]}, protocol="scoring")
    with pytest.raises(ValueError, match=r"unknown user keys \['histroy'\]"):
        pipe({"histroy": [5]})
    with pytest.raises(ValueError, match="needs the user's 'candidates'"):
        pipe({"history": [5]}, protocol="scoring")
    with pytest.raises(ValueError, match="'C-3' is not a prompt that answers with an item id"):
        pipe({"history": [5], "template_id": "C-3"})
    with pytest.raises(ValueError, match="protocol must be one of"):
        pipe({"history": [5]}, protocol="beam")


@pytest.mark.parametrize("protocol", ["constrained", "full_ranking", "scoring"])
def test_only_catalogue_items_best_first_and_never_the_history(pipe, protocol):
    catalogue = set(pipe.catalogue.item_ids)
    user = {"history": HISTORY, "user_id": 3, "candidates": HISTORY + list(range(60, 80))}
    result = pipe(user, protocol=protocol, top_k=12)
    assert set(result) == {"protocol", "template_id", "items"} and result["protocol"] == protocol
    assert result["template_id"] == ("B-5" if protocol == "scoring" else "A-3")
    items = [r["item_id"] for r in result["items"]]
    assert len(items) == 12 == len(set(items)) and set(items) <= catalogue and not set(items) & set(HISTORY)
    scores = [r["score"] for r in result["items"]]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    assert [r["asin"] for r in result["items"]] == [pipe.catalogue.asin(i) for i in items]
    if protocol == "scoring":
        assert set(items) <= set(user["candidates"])


def test_exclude_history_switches_the_history_in_and_out(pipe):
    every = len(pipe.catalogue)
    kept = pipe({"history": HISTORY}, protocol="full_ranking", top_k=every, exclude_history=False)["items"]
    dropped = pipe({"history": HISTORY}, protocol="full_ranking", top_k=every)["items"]
    assert {r["item_id"] for r in kept} == set(pipe.catalogue.item_ids)
    assert {r["item_id"] for r in dropped} == set(pipe.catalogue.item_ids) - set(HISTORY)


def test_constrained_scores_are_the_exact_likelihoods_of_full_ranking(pipe):
    user = {"history": HISTORY, "user_id": 3}
    exact = {r["item_id"]: r["score"] for r in pipe(user, protocol="full_ranking", top_k=len(pipe.catalogue))["items"]}
    constrained = pipe(user, protocol="constrained", top_k=10)["items"]
    assert len(constrained) == 10
    for record in constrained:
        assert record["score"] == pytest.approx(exact[record["item_id"]], abs=1e-4)


def test_scoring_and_full_ranking_rank_as_vip5_evaluate(pipe):
    users = [{"user_id": u, "user_desc": f"user_{u}", "history": [u, u + 20, u + 40],
              "candidates": list(range(u, u + 30))} for u in (1, 2, 3)]
    config = EvaluateConfig(model="in-memory", dataset="in-memory", batch_size=2, exclude_history=True)
    runner = ProtocolRunner(pipe.model, pipe.processor, config, pipe.catalogue.item_ids)

    direct = [Example("B-5", {k: u[k] for k in ("user_id", "user_desc", "candidates")}) for u in users]
    scored = pipe(users, protocol="scoring", top_k=30, exclude_history=False, batch_size=2)
    assert [[r["item_id"] for r in s["items"]] for s in scored] == [p.ranking for p in runner.run(
        "direct", "scoring", direct)]
    inputs = pipe.processor([pipe.processor.render("B-5", **e.fields) for e in direct], return_tensors="pt")
    assert [[r["item_id"] for r in s["items"]] for s in scored] == rank_candidates(
        pipe.model, inputs, [e.fields["candidates"] for e in direct], pipe.processor.tokenizer)

    sequential = [Example("A-3", {"user_id": u["user_id"], "history": u["history"]}) for u in users]
    ranked = pipe([{k: u[k] for k in ("user_id", "history")} for u in users], protocol="full_ranking", top_k=20)
    assert [[r["item_id"] for r in s["items"]] for s in ranked] == [p.ranking for p in runner.run(
        "sequential", "full_ranking", sequential)]


def test_asins_and_ids_give_the_same_recommendations(pipe):
    by_id = pipe({"history": HISTORY, "user_id": 7}, top_k=5)
    by_asin = pipe({"history": [pipe.catalogue.asin(i) for i in HISTORY], "user_id": 7}, top_k=5)
    assert by_asin == by_id
    assert pipe([{"history": HISTORY, "user_id": 7}], top_k=5) == [by_id]


def test_batches_give_the_results_of_single_calls(pipe):
    users = [{"history": [i, i + 1], "user_id": i} for i in range(1, 6)]
    batched = pipe(users, protocol="full_ranking", top_k=5, batch_size=3)
    for user, result in zip(users, batched, strict=True):
        single = pipe(user, protocol="full_ranking", top_k=5)
        assert [r["item_id"] for r in result["items"]] == [r["item_id"] for r in single["items"]]
        assert [r["score"] for r in result["items"]] == pytest.approx([r["score"] for r in single["items"]], abs=1e-4)


def test_explain_decodes_the_explanation_prompt(pipe):
    asin = pipe.catalogue.asin(9)
    prompt = pipe.processor.render("C-3", user_id=4, star_rating=5, item_title="unknown title", item_id=9)
    inputs = pipe.processor(prompt, return_tensors="pt")
    words = {"max_new_tokens": 4, "suppress_tokens": [0, 1]}  # a random model says </s> or <pad> otherwise
    expected = pipe.model.generate(**inputs, do_sample=False, num_beams=1, **words)
    text = pipe.explain(user_id=4, item_id=asin, **words)
    assert text == pipe.processor.tokenizer.decode(expected[0], skip_special_tokens=True).strip() and text
    with pytest.raises(ValueError, match="'A-3' is not an explanation prompt"):
        pipe.explain(user_id=4, item_id=9, template_id="A-3")
    with pytest.raises(ValueError, match="needs field 'feature'"):
        pipe.explain(user_id=4, item_id=9, template_id="C-9")


def test_save_pretrained_round_trip_with_the_package(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["custom_pipelines"][REMOTE_TASK]["impl"] == "pipeline_vip5.VIP5RecommendationPipeline"
    for name in ("pipeline_vip5.py", "catalogue.py", "ranking.py", "catalogue/features.npy", "processor_config.json"):
        assert (tmp_path / "saved" / name).is_file(), name
    loaded = pipeline(TASK, model=str(tmp_path / "saved"))
    assert type(loaded) is VIP5RecommendationPipeline  # the package's class: no remote code needed
    user = {"history": HISTORY, "user_id": 2}
    assert loaded(user, top_k=5) == pipe(user, top_k=5)


def test_fresh_process_without_the_package_loads_the_folder(pipe, vip5_folder, tmp_path):
    """A user without this package: transformers runs the pipeline code saved in the folder."""
    users = [{"history": [pipe.catalogue.asin(i) for i in HISTORY], "user_id": 2},
             {"history": HISTORY, "candidates": list(range(30, 60))}]
    expected = [pipe(users[0], top_k=5), pipe(users[1], protocol="scoring", top_k=5)]
    script = f"""
import importlib.util, json, sys
sys.meta_path = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]  # pip's editable finder
sys.path = [p for p in sys.path if p not in ('', {str(REPO)!r})]
assert importlib.util.find_spec('modeling_vip5') is None, 'package must not be importable here'
from transformers import pipeline
pipe = pipeline(model={str(vip5_folder)!r}, trust_remote_code=True)
assert type(pipe).__module__.startswith('transformers_modules'), type(pipe).__module__
users = {json.dumps(users)!r}
users = json.loads(users)
print(json.dumps([pipe(users[0], top_k=5), pipe(users[1], protocol="scoring", top_k=5)]))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    for got, want in zip(remote, expected, strict=True):
        assert [r["item_id"] for r in got["items"]] == [r["item_id"] for r in want["items"]]
        assert [r["score"] for r in got["items"]] == pytest.approx([r["score"] for r in want["items"]], abs=1e-4)
