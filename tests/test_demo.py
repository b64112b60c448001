"""The main job: the embedded Beauty sample, synthetic images and explanations, content-named datasets, the offline
tokenizer, and `vip5-demo` end to end on a tiny setting (two stages, evaluation, cards, curves, report)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared
from huggingface_hub import ModelCard

from data_builders.domain import Interactions
from data_builders.features import feature_dir
from data_builders.loading import load_config
from data_builders.p5_reader import read_exp_splits, read_p5_domain
from data_builders.sample import BEAUTY_SAMPLE
from data_builders.sample.make_sample import (
    DEFAULT_ITEMS,
    DEFAULT_MIN_LENGTH,
    DEFAULT_USERS,
    SEQUENTIAL_GZ,
    dense_sample,
    write_sample,
)
from data_builders.synthetic import COLOURS, SHAPES, Look, co_purchase_clusters, explanation_splits, item_looks
from modeling_vip5.prompts import IMAGE_TOKEN, load_templates
from training.demo import parse_args, run
from training.demo.runner import _busy_cores, idle_cores
from training.demo.steps import build_dataset, mark_card, prepare_source, synthetic_explanations
from training.offline_tokenizer import corpus_lines, domain_prompts, train_t5_tokenizer
from training.results import read_results

TINY_BACKBONE = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 4,
                 "dropout_rate": 0.0}


def sample_sequences() -> list[list[int]]:
    text = gzip.decompress((BEAUTY_SAMPLE / SEQUENTIAL_GZ).read_bytes()).decode()
    return [[int(i) for i in line.split()[1:]] for line in text.splitlines()]


def text_only_dataset(root: Path, users: int) -> Path:
    """The first `users` users of the sample with synthetic explanations, built without images (no CLIP needed)."""
    prepare_source(BEAUTY_SAMPLE, root / "source", users)
    synthetic_explanations(root / "source", "beauty", seed=2022)
    empty = root / "no-images"
    feature_dir(empty, "vitb32", "beauty").mkdir(parents=True, exist_ok=True)
    return build_dataset(root / "source", "beauty", root / "datasets", "text", empty, "vitb32", "random", 2022)


# ---------------------------------------------------------------- the embedded sample


def test_dense_sample_keeps_frequent_items_and_renumbers_as_p5():
    sequences = [[5, 1, 9], [2, 5, 7, 1], [9, 9, 3], [5, 2, 1, 8]]  # counts: 1, 5 and 9: 3; 2: 2; 3, 7, 8: 1
    sample = dense_sample(sequences, num_users=2, num_items=3, min_length=2)
    # items 1, 5, 9 are kept; users 1 ([5, 1, 9]) and 2 ([5, 1]) are the first with 2+ of them
    assert sample.source_users == [1, 2]
    assert sample.source_items == [5, 1, 9]  # sample ids 1, 2, 3 in order of first appearance
    assert sample.sequences == [[1, 2, 3], [1, 2]]
    with pytest.raises(ValueError, match="only 1 users have 3\\+ of the 3 most frequent items"):
        dense_sample(sequences, num_users=3, num_items=3, min_length=3)


def test_shipped_sample_is_a_p5_domain_as_its_readme_says(tmp_path):
    sequences = sample_sequences()
    assert len(sequences) == DEFAULT_USERS and min(map(len, sequences)) >= DEFAULT_MIN_LENGTH
    flat = [i for s in sequences for i in s]
    first_seen = list(dict.fromkeys(flat))
    assert first_seen == list(range(1, len(first_seen) + 1)) and len(first_seen) <= DEFAULT_ITEMS
    readme = (BEAUTY_SAMPLE / "README.md").read_text()
    assert f"| {len(sequences):,} | {len(first_seen):,} | {len(flat):,} |" in readme
    assert "MIT" in readme and "research use" in readme and "synthetic" in readme
    prepare_source(BEAUTY_SAMPLE, tmp_path / "source")  # the P5 reader checks the files against each other
    data = read_p5_domain(tmp_path / "source", "beauty")
    assert (data.interactions.num_users, data.num_items) == (len(sequences), len(first_seen))


def test_shipped_sample_regenerates_from_the_shared_files(tmp_path):
    source = require_shared("data", "amazon-beauty-p5")
    write_sample(source, tmp_path)
    for name in ("datamaps.json", "README.md"):
        assert (tmp_path / name).read_text() == (BEAUTY_SAMPLE / name).read_text(), name
    assert gzip.decompress((tmp_path / SEQUENTIAL_GZ).read_bytes()) == \
        gzip.decompress((BEAUTY_SAMPLE / SEQUENTIAL_GZ).read_bytes())
    maps = json.loads((source / "datamaps.json").read_text())
    ours = json.loads((BEAUTY_SAMPLE / "datamaps.json").read_text())
    full = [line.split() for line in (source / "sequential_data.txt").read_text().splitlines()]
    # sample user 1 is the first full-data user with enough kept items: same reviewer, same purchases in order
    reviewer = ours["id2user"]["1"]
    full_items = [maps["id2item"][i] for i in full[int(maps["user2id"][reviewer]) - 1][1:]]
    sample_items = [ours["id2item"][str(i)] for i in sample_sequences()[0]]
    assert [a for a in full_items if a in ours["item2id"]] == sample_items


def test_prepare_source_cuts_users_and_refuses_user_keyed_files(tmp_path):
    prepare_source(BEAUTY_SAMPLE, tmp_path / "cut", num_users=25)
    data = read_p5_domain(tmp_path / "cut", "beauty")
    assert data.interactions.num_users == 25
    assert data.interactions.first_appearance_order().tolist() == list(range(1, data.num_items + 1))
    original = json.loads((BEAUTY_SAMPLE / "datamaps.json").read_text())
    assert data.user_raw_ids == [original["id2user"][str(u)] for u in range(1, 26)]

    full = tmp_path / "full"
    prepare_source(BEAUTY_SAMPLE, full)
    (full / "negative_samples.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"negative_samples.txt.*keyed by the full data's user ids"):
        prepare_source(full, tmp_path / "again", num_users=10)
    prepare_source(full, tmp_path / "linked")  # without a cut every file is taken as it is
    assert (tmp_path / "linked" / "negative_samples.txt").is_symlink()


# ---------------------------------------------------------------- synthetic images and explanations


def test_looks_come_from_training_interactions_and_carry_co_purchase_signal():
    sequences = sample_sequences()
    interactions = Interactions.from_lists(sequences)
    num_items = max(map(max, sequences))
    clusters = co_purchase_clusters(interactions, num_items)
    threads = torch.get_num_threads()
    try:  # the same colours whatever the thread count (the demo's threads follow the machine's load)
        for count in (1, 2):
            torch.set_num_threads(count)
            assert np.array_equal(clusters, co_purchase_clusters(interactions, num_items))
    finally:
        torch.set_num_threads(threads)
    shuffled_tails = [s[:-2] + s[-2:][::-1] for s in sequences]  # held-out items play no part
    assert np.array_equal(clusters, co_purchase_clusters(Interactions.from_lists(shuffled_tails), num_items))
    same = np.mean([clusters[s[-1]] == clusters[s[-2]] for s in sequences])
    shares = np.bincount(clusters[[i for s in sequences for i in s]]) / sum(map(len, sequences))
    assert same > 1.5 * float((shares**2).sum())  # next items look like the last one far more often than chance
    looks = item_looks(interactions, [f"B{i:09d}" for i in range(1, num_items + 1)])
    assert {look.colour for look in looks} == set(COLOURS) and {look.shape for look in looks} == set(SHAPES)


def test_look_images_differ_by_colour_and_shape():
    pixels = {(c, s): np.asarray(Look(c, s).image(64)) for c in ("red", "blue") for s in ("round", "tall")}
    assert len({p.tobytes() for p in pixels.values()}) == 4
    assert np.array_equal(np.asarray(Look("red", "round").image(64)), pixels["red", "round"])
    assert tuple(pixels["red", "round"][2, 2]) == COLOURS["red"]  # the colour fills the frame around the shape


def test_explanations_are_readable_p5_records_describing_the_looks(tmp_path):
    sequences = sample_sequences()[:60]
    interactions = Interactions.from_lists(sequences)
    num_items = max(map(max, sequences))
    users, asins = [f"U{u}" for u in range(1, 61)], [f"B{i:09d}" for i in range(1, num_items + 1)]
    looks = item_looks(interactions, asins)
    splits = explanation_splits(interactions, users, asins, looks)
    sizes = {name: len(records) for name, records in splits.items()}
    assert sum(sizes.values()) == len(interactions.items)
    assert sizes["train"] == round(0.8 * len(interactions.items)) and sizes["val"] == round(0.1 * len(interactions.items))
    path = tmp_path / "exp_splits.pkl"
    path.write_bytes(pickle.dumps(splits, protocol=4))
    tables = read_exp_splits(path, users, asins)  # the P5 reader's restricted unpickler and record checks
    assert tables["train"].num_rows == sizes["train"]
    for record in splits["test"]:
        look = looks[asins.index(record["asin"])]
        assert f"the {look.colour} {look.noun} , its {record['feature']} is" in record["explanation"]
        assert 1 <= record["overall"] <= 5


# ---------------------------------------------------------------- datasets, tokenizer, cards


def test_dataset_folders_carry_their_content_so_the_datasets_cache_cannot_mix_them(tmp_path):
    """`datasets` caches a local folder by its name: two builds under one name would share the first one's rows."""
    first, second = text_only_dataset(tmp_path / "a", 30), text_only_dataset(tmp_path / "b", 45)
    assert first.name != second.name and first.name.startswith("text-")
    assert len(load_config(first, "beauty", "sequential", split="test")) == 30
    assert len(load_config(second, "beauty", "sequential", split="test")) == 45
    items = load_config(second, "beauty", "items", split="train")
    assert not any(items["has_image"])  # the text-only variant: no image placeholders anywhere
    assert text_only_dataset(tmp_path / "a", 30) == first  # same content, same name


def test_offline_tokenizer_covers_every_template_of_the_domain(tmp_path):
    dataset = text_only_dataset(tmp_path, 40)
    prompts = domain_prompts(dataset, "beauty")
    assert {p.template.id for p in prompts} == set(load_templates())  # seen and held-out prompts
    tokenizer = train_t5_tokenizer(corpus_lines(prompts), tmp_path / "tokenizer", vocab_size=600)
    assert tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == len(tokenizer) - 1
    assert (tmp_path / "tokenizer" / "spm" / "spiece.model").is_file()
    source = next(p for p in prompts if p.template.id == "C-12").source
    decoded = tokenizer.decode(tokenizer(source)["input_ids"], skip_special_tokens=True)
    assert decoded == " ".join(source.replace(IMAGE_TOKEN, " ").split())


def test_mark_card_keeps_the_metadata(tmp_path):
    card = ModelCard("---\nlicense: apache-2.0\ntags:\n- vip5\n---\n\n# model\n\nbody\n")
    card.save(tmp_path / "README.md")
    mark_card(tmp_path / "README.md", "> **Demo data.** synthetic")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.license == "apache-2.0" and loaded.data.tags == ["vip5"]
    assert loaded.text.index("**Demo data.**") < loaded.text.index("# model")


def test_demo_flags_are_checked_before_anything_runs(tmp_path):
    assert parse_args([]).stage1_steps > 0 and parse_args([]).input is None
    with pytest.raises(ValueError, match="images: 'features' reads <input>/features/"):
        run(["--output", str(tmp_path), "--images", "features"])
    with pytest.raises(ValueError, match="stage2_steps: stage 2"):
        run(["--output", str(tmp_path), "--stage2-steps", "0"])
    with pytest.raises(FileNotFoundError, match="input: .* is not a folder"):
        run(["--output", str(tmp_path), "--input", str(tmp_path / "missing")])
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_demo_runs_both_stages_and_documents_them(tmp_path):
    out = tmp_path / "out"
    summary = run(["--output", str(out), "--users", "40", "--backbone", json.dumps(TINY_BACKBONE), "--vocab-size",
                   "800", "--sequential-steps", "2", "--stage1-steps", "3", "--stage2-steps", "3", "--batch-size", "4",
                   "--eval-users", "3", "--eval-batch-size", "8", "--curve-users", "3", "--curve-points", "1",
                   "--threads", "1"])
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(summary, default=str))
    names = [step["name"] for step in summary["steps"]]
    assert any(n.startswith("stage1-sequential: full training on sequential prompts") for n in names)
    assert any(n.startswith("stage1: full training") for n in names)
    assert any(n.startswith("stage2: VIP5 adapters") for n in names)
    assert all(step["how"] for step in summary["steps"]) and all(step["seconds"] >= 0 for step in summary["steps"])
    assert {"vip5-train", "vip5-evaluate", "python"} <= {s["how"].split()[0] for s in summary["steps"]}

    templates = {"A-3": "seen", "A-9": "unseen", "B-5": "seen", "B-8": "unseen", "C-3": "seen", "C-12": "unseen"}
    for stage, folder in ((1, out / "stage1" / "model"), (2, out / "stage2" / "adapter")):
        results = read_results(out / f"stage{stage}" / "evaluation" / "results.json")
        evaluated = set(templates.items()) if stage == 2 else {(t, p) for t, p in templates.items() if p == "seen"}
        assert {(r.template_id, r.prompt) for r in results.results} == evaluated
        assert {r.task_family for r in results.results} == {"sequential", "direct", "explanation"}
        assert (out / f"stage{stage}" / "training_curve.png").stat().st_size > 1000
        card = ModelCard.load(folder / "README.md")
        assert "**synthetic**" in card.text and card.data.model_name == f"vip5-demo-stage{stage}"
    stage2 = read_results(out / "stage2" / "evaluation" / "results.json")
    assert stage2.model.base_model == str(out / "stage1" / "model")  # adapters on the stage-1 backbone
    shuffled = read_results(out / "stage2" / "evaluation-shuffled" / "results.json")
    assert {(r.template_id, r.protocol) for r in shuffled.results} == {("B-5", "scoring")}
    assert all(r.settings["image_features"] == "shuffled" for r in shuffled.results)
    # the learning curve: validation HR@10 logged while training, drawn with the floors
    logged = [json.loads(line) for line in (out / "stage1-sequential" / "logs" / "log.jsonl").read_text().splitlines()]
    assert any("val_sequential_hr@10" in r and "val_direct_hr@10" in r for r in logged)
    assert (out / "learning_curve.png").stat().st_size > 1000
    # the app's pictures: one per item, labelled synthetic
    assert (out / "item-images" / "SYNTHETIC").is_file() and len(list((out / "item-images").glob("*.png"))) > 10

    # stage 1 saw text-only prompts; stage 2 the same examples with image tokens
    base_config = json.loads((out / "stage1" / "train_config.json").read_text())
    adapter_config = json.loads((out / "stage2" / "train_config.json").read_text())
    assert (base_config["method"], adapter_config["method"]) == ("full", "vip5_adapter")
    assert not any(load_config(base_config["dataset"], "beauty", "items", split="train")["has_image"])
    assert all(load_config(adapter_config["dataset"], "beauty", "items", split="train")["has_image"])

    # a recorded step is a command that repeats it: the synthetic explanations come back record for record
    step = next(s for s in summary["steps"] if s["name"].startswith("synthetic explanation"))
    records = out / "source" / "beauty" / "exp_splits.pkl"
    written = pickle.loads(records.read_bytes())
    records.unlink()
    venv = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # as activated
    subprocess.run(step["how"], shell=True, check=True, cwd=tmp_path, env=venv)
    assert pickle.loads(records.read_bytes()) == written

    families = {row["family"] for row in summary["contributions"]}
    assert families == {"sequential", "direct", "explanation"}
    assert all(row["stage 2"] is not None and (row["stage 1"] is not None) == (row["prompt"] == "seen")
               for row in summary["contributions"])
    report = (out / "report.md").read_text()
    assert "**synthetic**" in report and "## What each stage contributed" in report
    assert "images shuffled" in report and "learning_curve.png" in report and "vip5-app --model" in report
    for template, prompt in templates.items():
        assert f"{template} ({prompt})" in report


def test_idle_cores_counts_what_is_busy_now():
    """A busy-looping process is seen at once (the load average would still be rising)."""
    import multiprocessing
    import os
    import time

    cpus = os.cpu_count() or 1
    before = _busy_cores(0.3)
    spinner = multiprocessing.get_context("fork").Process(target=_spin, args=(3.0,))
    spinner.start()
    try:
        time.sleep(0.5)
        during = _busy_cores(0.5)
    finally:
        spinner.join()
    assert 0 <= before <= cpus and 0 <= during <= cpus
    assert during >= 0.7  # the spinner's core
    assert 1 <= idle_cores(0.1) <= cpus


def _spin(seconds: float) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_thread_policy_measures_again_before_each_step(monkeypatch):
    """A moment's load at the start decides only the step it falls in: the next measurement gives the cores back."""
    import torch

    from training.demo import runner

    readings = iter([1, 2, 2])
    monkeypatch.setattr(runner, "idle_cores", lambda window: next(readings))
    previous = torch.get_num_threads()
    try:
        policy = runner.ThreadPolicy()
        assert [policy.update() for _ in range(3)] == [1, 2, 2] == policy.chosen
        assert torch.get_num_threads() == 2
        assert runner.ThreadPolicy(fixed=1).update() == 1  # --threads N is kept
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("image_features", ["real", "shuffled"])
def test_recorded_evaluation_commands_repeat_the_evaluation(tmp_path, image_features):
    """The report lists every step as a command: `vip5-evaluate` must read its own flags back into the same settings
    (history cut, image ablation, templates, baselines off)."""
    import shlex

    from training.demo.config import DemoConfig
    from training.demo.runner import evaluate_command
    from training.demo.steps import evaluate_config
    from training.evaluate_cli import parse_args

    config = DemoConfig(output=tmp_path / "out", eval_users=7)
    evaluation = evaluate_config(config, 2, tmp_path / "adapter", tmp_path / "dataset", image_features)
    command = shlex.split(evaluate_command(evaluation))
    assert command[0] == "vip5-evaluate" and parse_args(command[1:]) == evaluation
