"""The README's main-job command end to end (in-process, on the embedded default)."""

import json

from training.demo import run


def test_demo_saves_reloads_and_generates(tmp_path):
    summary = run(["--output", str(tmp_path)])
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert json.loads((tmp_path / "demo.json").read_text()) == summary
    assert len(summary["generated_ids"]) == 2
