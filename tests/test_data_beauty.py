"""The real Amazon Beauty files (P5 format) in ../shared: the built dataset's statistics equal the paper's."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_builders.cli import main

BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-beauty-p5"


@pytest.fixture(scope="module")
def beauty_paper(tmp_path_factory) -> Path:
    if not (BEAUTY / "sequential_data.txt").is_file():
        pytest.skip(f"real Beauty data not available at {BEAUTY}")
    out = tmp_path_factory.mktemp("beauty")
    args = ["build", "--source", "p5", "--input", str(BEAUTY), "--domain", "beauty", "--indexing", "paper"]
    assert main([*args, "--output", str(out)]) == 0
    return out


def test_stats_equal_the_paper(beauty_paper, capsys):
    capsys.readouterr()
    assert main(["stats", str(beauty_paper)]) == 0
    stats = json.loads(capsys.readouterr().out)["beauty"]
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (22_363, 12_101, 198_502)
    lengths = stats["sequence_length"]
    assert (lengths["min"], round(lengths["mean"], 4), lengths["max"]) == (5, 8.8764, 204)
    assert stats["leave_one_out"] == {"train": 153_776, "validation": 22_363, "test": 22_363}
    assert stats["catalogue_items"] == 12_101


def test_paper_ids_leak_and_random_ids_do_not(beauty_paper, tmp_path, capsys):
    args = ["build", "--source", "p5", "--input", str(BEAUTY), "--domain", "beauty", "--output", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    for folder, low, high in ((beauty_paper, 0.02, 0.03), (tmp_path, 0.0, 0.001)):
        assert main(["stats", str(folder)]) == 0
        share = json.loads(capsys.readouterr().out)["beauty"]["test_item_is_last_plus_one"]
        assert low <= share <= high  # about 2.5 % under P5's ids (README of the data), ~0 after a permutation
    maps = json.loads((BEAUTY / "datamaps.json").read_text())
    items = pq.read_table(beauty_paper / "beauty/items/train-00000-of-00001.parquet", columns=["item_id", "asin"])
    assert dict(zip(map(str, items["item_id"].to_pylist()), items["asin"].to_pylist(), strict=True)) == maps["id2item"]
