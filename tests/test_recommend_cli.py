"""`vip5-recommend`: one output line per user, the pipeline's answers, and bad users lines rejected with their line
number before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_pipeline import HISTORY, vip5_folder  # noqa: F401  (the saved model folder fixture)
from transformers import pipeline

from modeling_vip5.pipeline_vip5 import TASK
from training.recommend import main

REPO = Path(__file__).resolve().parents[1]


def write_users(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_recommends_every_user_in_order(vip5_folder, tmp_path, capsys):  # noqa: F811
    pipe = pipeline(TASK, model=str(vip5_folder))
    users = [{"history": HISTORY, "user_id": 1},
             {"history": [pipe.catalogue.asin(i) for i in (20, 21)], "candidates": list(range(20, 50))},
             {"history": [3], "template_id": "A-9", "user_desc": "Ann"}]
    lines = [json.dumps(users[0]), "", json.dumps(users[1]), json.dumps(users[2])]
    output = tmp_path / "out" / "recs.jsonl"
    main(["--model", str(vip5_folder), "--users", str(write_users(tmp_path / "users.jsonl", lines)),
          "--output", str(output), "--top-k", "4", "--protocol", "full_ranking", "--batch-size", "2"])
    assert f"3 users -> {output}" in capsys.readouterr().out
    got = [json.loads(line) for line in output.read_text().splitlines()]
    for result, want in zip(got, [pipe(u, top_k=4, protocol="full_ranking") for u in users], strict=True):
        assert [r | {"score": 0} for r in result["items"]] == [r | {"score": 0} for r in want["items"]]
        assert [r["score"] for r in result["items"]] == pytest.approx([r["score"] for r in want["items"]], abs=1e-4)
    assert len(got) == 3
    assert [g["template_id"] for g in got] == ["A-3", "A-3", "A-9"]
    assert all(len(g["items"]) == 4 for g in got)

    with pytest.raises(SystemExit, match=r"users\.jsonl:1: protocol 'scoring' with template B-5 needs the user's "
                                         r"'candidates'"):
        main(["--model", str(vip5_folder), "--users", str(tmp_path / "users.jsonl"), "--output", str(output),
              "--protocol", "scoring"])
    scored = tmp_path / "scored.jsonl"
    main(["--model", str(vip5_folder), "--users", str(write_users(tmp_path / "one.jsonl", [json.dumps(users[1])])),
          "--output", str(scored), "--protocol", "scoring", "--top-k", "30", "--no-exclude-history"])
    items = [r["item_id"] for r in json.loads(scored.read_text())["items"]]
    assert sorted(items) == users[1]["candidates"]  # every candidate, the history (20, 21) included


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"history": [1, 2', r"users\.jsonl:2: invalid JSON"),
        ('{"history": ["B99999999"]}', r"users\.jsonl:2: 'history': ASIN 'B99999999' is not in the catalogue at "),
        ('{"history": []}', r"users\.jsonl:2: 'history' must be a non-empty list"),
        ('[1, 2]', r"users\.jsonl:2: a user must be a dict"),
    ],
)
def test_bad_lines_name_the_line_and_write_nothing(vip5_folder, tmp_path, line, message):  # noqa: F811
    users = write_users(tmp_path / "users.jsonl", [json.dumps({"history": HISTORY}), line])
    output = tmp_path / "recs.jsonl"
    with pytest.raises(SystemExit, match=f"^vip5-recommend: error: {users.parent}/{message}"):
        main(["--model", str(vip5_folder), "--users", str(users), "--output", str(output)])
    assert not output.exists() and list(tmp_path.iterdir()) == [users]


def test_command_line_exits_1_with_the_error_on_stderr(vip5_folder, tmp_path):  # noqa: F811
    users = write_users(tmp_path / "users.jsonl", [json.dumps({"history": HISTORY}), '{"history": [5], "x": 1}'])
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "training.recommend", "--model", str(vip5_folder), "--users",
                             str(users), "--output", str(tmp_path / "recs.jsonl")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"vip5-recommend: error: {users}:2: unknown user keys ['x']; a user has "
        "['history', 'user_id', 'user_desc', 'template_id', 'candidates']")
    assert not (tmp_path / "recs.jsonl").exists()
