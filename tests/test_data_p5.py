"""Building from the P5/VIP5 layout: every config's content, partial inputs, and clear errors on bad input."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest

from data_builders import DataFormatError, build_domain, folder_stats, load_config
from data_builders.p5_reader import read_p5_domain
from tests.data_fixture import write_p5_domain


@pytest.fixture
def toys(tmp_path: Path):
    return write_p5_domain(tmp_path / "toys", crlf=True)


def _load(out: Path, config: str, tmp_path: Path) -> datasets.DatasetDict:
    return load_config(out, "toys", config, cache_dir=str(tmp_path / "hf_cache"))


def test_paper_build_reproduces_every_file(toys, tmp_path):
    out = tmp_path / "out"
    build_domain("p5", toys.root, "toys", out, indexing="paper")
    seqs = toys.sequences

    sequential = _load(out, "sequential", tmp_path)
    for split, k in (("train", 3), ("validation", 2), ("test", 1)):
        rows = sequential[split]
        assert rows["user_id"] == list(range(1, len(seqs) + 1))
        assert rows["history"] == [s[:-k] for s in seqs]
        assert rows["target"] == [s[-k] for s in seqs]

    direct = _load(out, "direct", tmp_path)
    assert set(direct) == {"validation", "test"}
    assert direct["test"]["positive"] == [s[-1] for s in seqs]
    assert direct["validation"]["positive"] == [s[-2] for s in seqs]
    assert direct["test"]["negatives"] == toys.negatives
    assert direct["test"].features["negatives"].length == 99

    items = _load(out, "items", tmp_path)["train"]
    assert items["asin"] == toys.asins
    assert items["title"] == [toys.titles.get(a) for a in toys.asins]
    assert items["image_url"] == [toys.image_urls.get(a) for a in toys.asins]
    assert items["has_image"] == [a in toys.image_urls for a in toys.asins]

    users = _load(out, "users", tmp_path)["train"]
    assert users["reviewer_id"] == toys.reviewers
    assert users["name"] == [toys.names[str(u)] for u in range(1, len(seqs) + 1)]

    explanation = _load(out, "explanation", tmp_path)
    for key, split in (("train", "train"), ("val", "validation"), ("test", "test")):
        records, rows = toys.exp_splits[key], explanation[split]
        assert rows["explanation"] == [r["explanation"] for r in records]
        assert rows["feature"] == [r["feature"] for r in records]
        assert rows["star_rating"] == [int(r["overall"]) for r in records]
        assert rows["item_id"] == [toys.asins.index(r["asin"]) + 1 for r in records]
        assert rows["user_id"] == [toys.reviewers.index(r["reviewerID"]) + 1 for r in records]
        assert rows["user_desc"] == [r.get("reviewerName", r["reviewerID"]) for r in records]
        assert rows["title"] == [toys.titles.get(r["asin"], "unknown title") for r in records]


def test_random_indexing_is_a_consistent_relabelling(toys, tmp_path):
    paper, shuffled = tmp_path / "paper", tmp_path / "random"
    build_domain("p5", toys.root, "toys", paper, indexing="paper")
    build_domain("p5", toys.root, "toys", shuffled, indexing="random", seed=7)
    items = _load(shuffled, "items", tmp_path)["train"]
    asin_of = dict(zip(items["item_id"], items["asin"], strict=True))
    assert sorted(asin_of) == list(range(1, len(toys.asins) + 1))
    assert [asin_of[i] for i in items["item_id"]] != toys.asins  # ids really changed
    # every row names the same ASINs as the paper build
    test = _load(shuffled, "sequential", tmp_path)["test"]
    assert [[asin_of[i] for i in h] for h in test["history"]] == [
        [toys.asins[i - 1] for i in s[:-1]] for s in toys.sequences
    ]
    negatives = _load(shuffled, "direct", tmp_path)["test"]["negatives"]
    assert [[asin_of[i] for i in n] for n in negatives] == [[toys.asins[i - 1] for i in n] for n in toys.negatives]
    rows = _load(shuffled, "explanation", tmp_path)["train"]
    assert [asin_of[i] for i in rows["item_id"]] == rows["asin"]
    manifest = json.loads((shuffled / "vip5_dataset.json").read_text())
    assert manifest["domains"]["toys"]["indexing"]["name"] == "random"
    assert manifest["domains"]["toys"]["indexing"]["seed"] == 7
    assert "`random` (seed 7)" in (shuffled / "README.md").read_text()
    assert folder_stats(shuffled)["toys"]["num_interactions"] == sum(map(len, toys.sequences))


def test_crlf_and_lf_files_give_the_same_data(tmp_path):
    crlf = read_p5_domain(write_p5_domain(tmp_path / "a", crlf=True).root, "toys")
    lf = read_p5_domain(write_p5_domain(tmp_path / "b", crlf=False).root, "toys")
    assert (tmp_path / "a" / "sequential_data.txt").read_bytes().count(b"\r\n") == 40
    np.testing.assert_array_equal(crlf.interactions.items, lf.interactions.items)
    np.testing.assert_array_equal(crlf.interactions.offsets, lf.interactions.offsets)


def test_partial_input_builds_what_it_can_and_says_what_it_skipped(tmp_path):
    domain = write_p5_domain(tmp_path / "in", files=("sequential_data.txt",))
    out = tmp_path / "out"
    entry = build_domain("p5", domain.root, "toys", out, indexing="paper", seed=3)
    assert set(entry["files"]) == {"sequential", "direct"}
    assert set(entry["skipped_configs"]) == {"explanation", "items", "users"}
    assert "datamaps.json absent" in entry["notes"]
    assert "seed 3" in entry["negatives_origin"]
    negatives = np.array(_load(out, "direct", tmp_path)["test"]["negatives"])
    assert negatives.shape == (40, 99)
    for sequence, row in zip(domain.sequences, negatives, strict=True):
        assert len(set(row.tolist())) == 99 and not set(row.tolist()) & set(sequence)
    assert "config items skipped" in (out / "README.md").read_text()


def test_without_sequences_the_review_configs_are_still_built(tmp_path):
    domain = write_p5_domain(tmp_path / "in", files=("datamaps.json", "exp_splits.pkl", "user_id2name.pkl"))
    out = tmp_path / "out"
    entry = build_domain("p5", domain.root, "toys", out, indexing="paper")
    assert set(entry["files"]) == {"explanation", "items", "users"}
    assert set(entry["skipped_configs"]) == {"sequential", "direct"}
    rows = _load(out, "explanation", tmp_path)["test"]
    assert rows["asin"] == [r["asin"] for r in domain.exp_splits["test"]]
    assert set(rows["title"]) == {"unknown title"}  # no meta.json.gz
    assert folder_stats(out)["toys"]["explanation_rows"]["test"] == len(domain.exp_splits["test"])
    with pytest.raises(ValueError, match="`sequential_train_first` indexing needs the interactions"):
        build_domain("p5", domain.root, "toys", out, indexing="sequential_train_first")


def test_second_domain_is_added_to_the_folder(toys, tmp_path):
    out = tmp_path / "out"
    build_domain("p5", toys.root, "toys", out)
    other = write_p5_domain(tmp_path / "beauty", seed=5)
    build_domain("p5", other.root, "beauty", out)
    assert set(datasets.get_dataset_config_names(str(out))) >= {"toys_sequential", "beauty_sequential"}
    assert set(folder_stats(out)) == {"toys", "beauty"}
    assert folder_stats(out, "beauty")["beauty"]["num_users"] == 40


def _replace_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        ("sequential_data.txt", (3, "3 5 x7 9"), r"sequential_data.txt:3: non-integer id 'x7'"),
        ("sequential_data.txt", (3, "4 1 2 3 4"), r"sequential_data.txt:3: user 4 out of order: expected user 3"),
        ("sequential_data.txt", (3, "2 1 2 3 4"), r"sequential_data.txt:3: duplicate user 2 \(first on line 2\)"),
        ("sequential_data.txt", (5, "5 1 2"), r"sequential_data.txt:5: user 5 has 2 items"),
        ("sequential_data.txt", (6, "6 1 2 999"), r"sequential_data.txt:6: item 999 is not in datamaps.json id2item"),
        (
            "negative_samples.txt",
            (2, "2 " + " ".join(["1"] * 99)),
            r"negative_samples.txt:2: negative item 1 is in user 2",
        ),
    ],
)
def test_bad_lines_name_file_and_line_and_leave_no_dataset(toys, tmp_path, file, edit, message):
    line, text = edit
    if file == "negative_samples.txt":  # make item 1 one of user 2's items
        _replace_line(toys.root / "sequential_data.txt", 2, "2 1 " + " ".join(map(str, toys.sequences[1])))
    _replace_line(toys.root / file, line, text)
    out = tmp_path / "out"
    with pytest.raises(DataFormatError, match=message):
        build_domain("p5", toys.root, "toys", out)
    assert not out.exists() or not any(out.iterdir())


def test_datamap_disagreement_and_truncated_gzip(toys, tmp_path):
    maps = json.loads((toys.root / "datamaps.json").read_text())
    last = str(len(toys.asins))
    maps["item2id"].pop(maps["id2item"][last])
    (toys.root / "datamaps.json").write_text(json.dumps(maps))
    with pytest.raises(DataFormatError, match=rf"datamaps.json: item2id and id2item disagree for item {last}"):
        read_p5_domain(toys.root, "toys")

    fresh = write_p5_domain(tmp_path / "fresh")
    data = (fresh.root / "meta.json.gz").read_bytes()
    (fresh.root / "meta.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"meta.json.gz:\d+: corrupt or truncated gzip"):
        read_p5_domain(fresh.root, "toys")


def test_exp_splits_with_unknown_reviewer_is_rejected(toys):
    splits = pickle.loads((toys.root / "exp_splits.pkl").read_bytes())
    splits["val"][2]["reviewerID"] = "NOBODY"
    (toys.root / "exp_splits.pkl").write_bytes(pickle.dumps(splits))
    with pytest.raises(DataFormatError, match=r"exp_splits.pkl: record val\[2\]: reviewerID 'NOBODY' is not in"):
        read_p5_domain(toys.root, "toys")


def test_failed_rebuild_keeps_the_previous_dataset(toys, tmp_path):
    out = tmp_path / "out"
    build_domain("p5", toys.root, "toys", out, indexing="paper")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with gzip.open(toys.root / "meta.json.gz", "wt") as handle:
        handle.write("{'asin': 'B000000001', 'title': }\n")
    with pytest.raises(DataFormatError, match=r"meta.json.gz:1: neither JSON nor a Python literal"):
        build_domain("p5", toys.root, "toys", out, indexing="random")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_a_folder_rebuilt_in_place_loads_its_new_rows(toys, tmp_path, monkeypatch):
    """`datasets` caches a local folder by name and config; load_config keys the cache by the build manifest."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    seen = {}
    for indexing in ("paper", "random"):
        build_domain("p5", toys.root, "toys", out, indexing=indexing)
        seen[indexing] = load_config(out, "toys", "sequential", split="train")["target"]
        manifest = json.loads((out / "vip5_dataset.json").read_text())
        assert manifest["domains"]["toys"]["indexing"]["name"] == indexing
    assert seen["paper"] != seen["random"]  # the random re-indexing relabels the targets
