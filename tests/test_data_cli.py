"""The `vip5-data` console script end to end: build, stats, extract-features, push (to an in-process fake Hub)."""

from __future__ import annotations

import base64
import json

import httpx2
import pytest
from huggingface_hub import DatasetCard, set_client_factory
from huggingface_hub.utils._http import default_client_factory

from data_builders.cli import main
from tests.data_fixture import write_images, write_p5_domain


def _run(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_build_then_stats(tmp_path, capsys):
    domain = write_p5_domain(tmp_path / "sports")
    out = tmp_path / "out"
    built = _run(
        capsys, "build", "--source", "p5", "--input", str(domain.root), "--domain", "sports", "--output", str(out)
    )
    assert built["rows"]["sequential"] == {"train": 40, "validation": 40, "test": 40}
    stats = _run(capsys, "stats", str(out))["sports"]
    lengths = [len(s) for s in domain.sequences]
    assert stats["num_users"] == 40 and stats["num_items"] == len(domain.asins)
    assert stats["num_interactions"] == sum(lengths)
    assert stats["sequence_length"]["min"] == min(lengths) and stats["sequence_length"]["max"] == max(lengths)
    assert stats["sequence_length"]["mean"] == pytest.approx(sum(lengths) / 40)
    assert stats["leave_one_out"] == {"train": sum(lengths) - 80, "validation": 40, "test": 40}
    assert stats["indexing"] == "random"
    assert stats["explanation_rows"] == {
        s: len(domain.exp_splits[k]) for k, s in (("train", "train"), ("val", "validation"), ("test", "test"))
    }

    card = DatasetCard.load(out / "README.md")
    configs = {c["config_name"]: c for c in card.data.configs}
    assert set(configs) == {f"sports_{c}" for c in ("sequential", "direct", "explanation", "items", "users")}
    assert configs["sports_direct"]["data_files"] == [
        {"split": "validation", "path": "sports/direct/validation-00000-of-00001.parquet"},
        {"split": "test", "path": "sports/direct/test-00000-of-00001.parquet"},
    ]
    assert f"| sports | 40 | {len(domain.asins)} | {sum(lengths)} |" in card.text
    assert card.data.license == "other"


def test_errors_are_one_line_with_exit_code_1(tmp_path, capsys):
    domain = write_p5_domain(tmp_path / "toys")
    (domain.root / "sequential_data.txt").write_text("1 1 2 3\n1 4 5 6\n")
    code = main(
        ["build", "--source", "p5", "--input", str(domain.root), "--domain", "toys", "--output", str(tmp_path / "o")]
    )
    assert code == 1
    assert "sequential_data.txt:2: duplicate user 1" in capsys.readouterr().err
    assert main(["stats", str(tmp_path / "nothing")]) == 1
    assert "not a VIP5 dataset folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", "--source", "p5", "--input", "x", "--domain", "toys", "--output", "o", "--encoders", "vit"])


def test_extract_features_then_build_with_them(tmp_path, capsys, monkeypatch):
    import torch

    from data_builders import clip_extract

    domain = write_p5_domain(tmp_path / "toys")
    write_images(tmp_path / "photos", domain.asins[:2])
    tiny = torch.nn.Linear(3, 1024)  # stands in for CLIP: any module with encode_image of the right width

    class Stand:
        def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
            return tiny(pixels.mean(dim=(2, 3)))

    monkeypatch.setattr(clip_extract, "load_clip", lambda *a, **k: (Stand(), lambda image: torch.rand(3, 4, 4)))
    feats = tmp_path / "feats"
    common = [
        "--source",
        "p5",
        "--input",
        str(domain.root),
        "--domain",
        "toys",
        "--features-root",
        str(feats),
        "--encoders",
        "rn50",
    ]
    report = _run(capsys, "extract-features", *common, "--image-dir", str(tmp_path / "photos"), "--no-download")
    assert report["rn50"]["extracted"] == 2 and report["rn50"]["missing"] == len(domain.asins) - 2
    built = _run(capsys, "build", *common, "--output", str(tmp_path / "out"))
    assert f"rn50: {len(domain.asins) - 2} items without a feature file" in " ".join(built["notes"])
    stats = _run(capsys, "stats", str(tmp_path / "out"), "--domain", "toys")
    assert stats["toys"]["items_with_image"] == 2


@pytest.fixture
def fake_hub():
    """An in-process Hub (huggingface_hub's client-factory hook) recording created repos and committed files."""
    seen: dict[str, list] = {"created": [], "files": []}

    def handler(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == "/api/repos/create":
            seen["created"].append(json.loads(request.content))
            return httpx2.Response(200, json={"url": "https://hub.local/datasets/me/vip5"})
        if path == "/api/validate-yaml":  # the Hub checks the card's YAML header before the commit
            seen["validated"] = json.loads(request.content)
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(
                200,
                json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
            )
        if "/commit/" in path:
            for line in request.content.decode().splitlines():
                op = json.loads(line)
                if op["key"] == "file":
                    seen["files"].append((op["value"]["path"], base64.b64decode(op["value"]["content"])))
            return httpx2.Response(
                200,
                json={
                    "success": True,
                    "commitOid": "a" * 40,
                    "commitUrl": "https://hub.local/datasets/me/vip5/commit/aaaa",
                },
            )
        return httpx2.Response(404, json={"error": f"unmocked {request.method} {path}"})

    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler)))
    yield seen
    set_client_factory(default_client_factory)


def test_push_uploads_the_built_folder_without_staging_leftovers(tmp_path, capsys, fake_hub):
    domain = write_p5_domain(tmp_path / "toys")
    out = tmp_path / "out"
    assert main(["build", "--source", "p5", "--input", str(domain.root), "--domain", "toys", "--output", str(out)]) == 0
    (out / ".tmp-build-toys-leftover").mkdir()
    (out / ".tmp-build-toys-leftover" / "junk.parquet").write_bytes(b"x")
    capsys.readouterr()
    result = _run(
        capsys, "push", str(out), "--repo-id", "me/vip5", "--endpoint", "https://hub.local", "--token", "hf_x"
    )
    assert result["commit_url"] == "https://hub.local/datasets/me/vip5/commit/aaaa"
    assert fake_hub["created"][0]["type"] == "dataset" and fake_hub["created"][0]["name"] == "vip5"
    expected = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".tmp-" not in str(p)}
    assert {path for path, _ in fake_hub["files"]} == expected
    assert dict(fake_hub["files"])["README.md"] == (out / "README.md").read_bytes()
    assert fake_hub["validated"]["repoType"] == "dataset"


def test_push_refuses_a_folder_that_is_not_a_build(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert main(["push", str(tmp_path / "half"), "--repo-id", "me/x"]) == 1
    assert "not a VIP5 dataset folder" in capsys.readouterr().err
