"""CLIP features: image fetching (folder, HTTP with retries and cache), resumable extraction with open_clip
(`pretrained=None`, generated images), and the feature table that training loads."""

from __future__ import annotations

import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_builders import DataFormatError, build_domain, item_features_from_dataset, load_config, load_item_features
from data_builders.clip_extract import REPORT, extract_features, load_clip
from data_builders.features import INCOMPLETE_MARKER, feature_dir
from data_builders.images import ImageFetcher, ImageResult
from tests.data_fixture import write_features, write_images, write_p5_domain


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return load_clip("vitb32", pretrained=None)


def _encode(clip, paths: list[Path]) -> np.ndarray:
    model, preprocess = clip
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        return model.encode_image(pixels).numpy()


def test_extraction_is_raw_clip_resumable_and_counts_missing_images(clip, tmp_path):
    asins = ["B1", "B2", "B3", "B4"]
    images = write_images(tmp_path / "photos", asins[:3])
    fetcher = ImageFetcher(image_dir=tmp_path / "photos", download=False)
    items = [(a, None) for a in asins]
    report = extract_features(
        items, "vitb32", tmp_path / "feats", "toys", fetcher, clip=clip, batch_size=2, progress=False
    )
    assert (report.extracted, report.already_done, list(report.missing)) == (3, 0, ["B4"])
    folder = feature_dir(tmp_path / "feats", "vitb32", "toys")
    saved = np.stack([np.load(folder / f"{a}.npy") for a in asins[:3]])
    np.testing.assert_allclose(saved, _encode(clip, [images[a] for a in asins[:3]]), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(saved, axis=1), 1.0)  # raw encode_image outputs, not normalised
    assert not (folder / INCOMPLETE_MARKER).exists() and (folder / REPORT).is_file()

    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    again = extract_features(items, "vitb32", tmp_path / "feats", "toys", fetcher, clip=clip, progress=False)
    assert (again.extracted, again.already_done, list(again.missing)) == (0, 3, ["B4"])
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")} == stamps


def test_interrupted_extraction_is_not_mistaken_for_complete(clip, tmp_path):
    domain = write_p5_domain(tmp_path / "toys", num_users=40)
    write_images(tmp_path / "photos", domain.asins[:3])
    items = [(a, None) for a in domain.asins[:3]]
    calls = []

    class Flaky(ImageFetcher):
        def fetch(self, asin: str, url: str | None) -> ImageResult:
            calls.append(asin)
            if len(calls) > 2:
                raise KeyboardInterrupt  # the run is killed during the second batch
            return super().fetch(asin, url)

    root = tmp_path / "feats"
    with pytest.raises(KeyboardInterrupt):
        extract_features(
            items,
            "vitb32",
            root,
            "toys",
            Flaky(image_dir=tmp_path / "photos"),
            clip=clip,
            batch_size=2,
            workers=1,
            progress=False,
        )
    folder = feature_dir(root, "vitb32", "toys")
    assert sorted(p.stem for p in folder.glob("*.npy")) == domain.asins[:2]
    assert not list(folder.glob(".tmp-*")) and not (folder / REPORT).exists()
    with pytest.raises(DataFormatError, match="feature extraction was interrupted"):
        build_domain("p5", domain.root, "toys", tmp_path / "out", encoders=("vitb32",), features_root=root)
    report = extract_features(
        items, "vitb32", root, "toys", ImageFetcher(image_dir=tmp_path / "photos"), clip=clip, progress=False
    )
    assert (report.extracted, report.already_done) == (1, 2)


class _PhotoServer(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; the first request of every `flaky-*` path fails with 503."""

    requests: list[str] = []
    failed: set[str] = set()

    def do_GET(self):  # noqa: N802 - http.server API
        type(self).requests.append(self.path)
        if "flaky" in self.path and self.path not in self.failed:
            self.failed.add(self.path)
            self.send_error(503)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def photo_server(tmp_path):
    write_images(tmp_path / "site", ["ok", "flaky-1"])
    handler = type("Handler", (_PhotoServer,), {"requests": [], "failed": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(tmp_path / "site")))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_download_retries_caches_and_gives_up_on_404(photo_server, tmp_path):
    base, handler = photo_server
    fetcher = ImageFetcher(cache_dir=tmp_path / "cache", retries=2, backoff_seconds=0.01)
    flaky = fetcher.fetch("A1", f"{base}/flaky-1.png")
    assert flaky.image is not None and flaky.image.size == (40, 40)
    assert handler.requests == ["/flaky-1.png", "/flaky-1.png"]
    assert fetcher.fetch("A2", f"{base}/ok.png").image is not None
    assert fetcher.fetch("A1", f"{base}/flaky-1.png").image is not None  # from the cache
    assert handler.requests.count("/flaky-1.png") == 2 and handler.requests.count("/ok.png") == 1
    missing = fetcher.fetch("A3", f"{base}/gone.png")
    assert missing.image is None and "HTTP 404" in missing.problem
    assert handler.requests.count("/gone.png") == 1  # a client error is not retried
    assert fetcher.fetch("A4", "photo-without-scheme.jpg").problem.startswith("invalid image URL")
    assert len(list((tmp_path / "cache").iterdir())) == 2
    (tmp_path / "broken.png").write_bytes(b"not an image")  # file:// URLs take the same download path
    broken = ImageFetcher(cache_dir=tmp_path / "cache2").fetch("x", (tmp_path / "broken.png").as_uri())
    assert broken.image is None and "unreadable image" in broken.problem


def test_build_with_features_and_the_training_table(tmp_path, monkeypatch):
    domain = write_p5_domain(tmp_path / "toys")
    vectors = write_features(tmp_path / "feats", "vitb32", "toys", domain.asins[:-4], dim=512)
    out = tmp_path / "out"
    entry = build_domain(
        "p5", domain.root, "toys", out, indexing="random", encoders=("vitb32",), features_root=tmp_path / "feats"
    )
    assert entry["encoders"]["vitb32"]["items_with_feature"] == len(domain.asins) - 4
    assert "vitb32: 4 items without a feature file" in " ".join(entry["notes"])

    table = load_item_features(out, "vitb32")
    assert isinstance(table, np.memmap) and table.shape == (len(domain.asins) + 1, 512)
    items = load_config(out, "toys", "items", split="train", cache_dir=str(tmp_path / "cache"))
    assert items.features["vitb32"].length == 512
    np.testing.assert_array_equal(item_features_from_dataset(items, "vitb32"), table)
    assert not table[0].any()
    for item_id, asin, has in zip(items["item_id"], items["asin"], items["has_image"], strict=True):
        assert has == (asin in vectors)
        np.testing.assert_array_equal(table[item_id], vectors.get(asin, np.zeros(512, np.float32)))

    fetched = []

    def hub_stand_in(repo_id, filename, *, repo_type, **kwargs):
        fetched.append((repo_id, filename, repo_type))
        target = tmp_path / "hub" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / filename, target)
        return str(target)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub_stand_in)
    np.testing.assert_array_equal(load_item_features("someone/vip5-amazon", "vitb32", domain="toys"), table)
    assert fetched == [
        ("someone/vip5-amazon", "vip5_dataset.json", "dataset"),
        ("someone/vip5-amazon", "toys/features/vitb32.npy", "dataset"),
    ]
    with pytest.raises(KeyError, match="has no 'rn50' features"):
        load_item_features(out, "rn50")


def test_bad_feature_files_are_named(tmp_path):
    domain = write_p5_domain(tmp_path / "toys")
    write_features(tmp_path / "feats", "vitb32", "toys", domain.asins, dim=512)
    np.save(feature_dir(tmp_path / "feats", "vitb32", "toys") / f"{domain.asins[3]}.npy", np.zeros(768, np.float32))
    with pytest.raises(DataFormatError, match=rf"{domain.asins[3]}.npy: expected 512 floats for vitb32"):
        build_domain(
            "p5", domain.root, "toys", tmp_path / "out", encoders=("vitb32",), features_root=tmp_path / "feats"
        )
    with pytest.raises(DataFormatError, match="items have no rn50 feature|no rn50 feature folder"):
        build_domain(
            "p5",
            domain.root,
            "toys",
            tmp_path / "out",
            encoders=("rn50",),
            features_root=tmp_path / "feats",
            missing_image="error",
        )


def test_openai_weights_use_quickgelu(monkeypatch):
    import open_clip

    calls = []

    def stand_in(name, **kwargs):
        calls.append((name, kwargs["pretrained"], kwargs["force_quick_gelu"]))
        return torch.nn.Identity(), None, lambda image: image

    monkeypatch.setattr(open_clip, "create_model_and_transforms", stand_in)
    for encoder, name in (
        ("rn50", "RN50"),
        ("rn101", "RN101"),
        ("vitb32", "ViT-B-32"),
        ("vitb16", "ViT-B-16"),
        ("vitl14", "ViT-L-14"),
    ):
        load_clip(encoder, pretrained="openai")
        load_clip(encoder, pretrained=None)
        assert calls[-2:] == [(name, "openai", True), (name, None, False)]


def test_encoder_table_agrees_with_the_model_config_and_open_clip():
    import open_clip

    from data_builders.features import ENCODERS
    from modeling_vip5.configuration_vip5 import IMAGE_FEATURE_DIMS

    assert {name: dim for name, (_, dim) in ENCODERS.items()} == IMAGE_FEATURE_DIMS
    for model, dim in ENCODERS.values():
        assert open_clip.get_model_config(model)["embed_dim"] == dim
