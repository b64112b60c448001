"""vip5-app end to end: a tiny VIP5 trained here, served through the real `vip5-recommendation` pipeline by the
`vip5-app` command, and driven in headless Chromium (Debian's `chromium` through Playwright's Python package).

Set VIP5_UPDATE_SCREENSHOT=1 to copy the page's screenshot to docs/app-screenshot.png (the README's picture)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from data_fixture import write_features, write_p5_domain
from train_fixture import TINY_MODEL

from app.engine import Engine
from app.history import load_test_users, parse_history
from app.images import SYNTHETIC_MARKER

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOMAIN = "toys"
NO_PICTURE_EVERY = 6  # every 6th item has no picture file: the page shows the placeholder tile
SERVER_START_SECONDS = 180


@pytest.fixture(scope="session")
def app_model(tmp_path_factory, t5_tokenizer) -> dict[str, Path]:
    """A P5 domain with titles and explanations -> dataset -> tiny VIP5 trained ~30 s on sequential and explanation
    prompts -> `{"model", "dataset", "images"}` (synthetic pictures with the SYNTHETIC marker)."""
    from data_builders.build import build_domain
    from data_builders.synthetic import COLOURS, SHAPES, Look
    from modeling_vip5.processing_vip5 import VIP5Processor
    from training.config import load_config
    from training.train import train

    root = tmp_path_factory.mktemp("app_model")
    domain = write_p5_domain(root / "raw", domain=DOMAIN)
    write_features(root / "raw" / "features", "vitb32", DOMAIN, domain.asins, 512)
    build_domain("p5", root / "raw", DOMAIN, root / "dataset", encoders=("vitb32",))
    VIP5Processor(t5_tokenizer).save_pretrained(root / "processor")
    settings = {"dataset": root / "dataset", "domain": DOMAIN, "processor": root / "processor",
                "model_config": json.dumps(TINY_MODEL), "tasks": '["sequential", "explanation"]',
                "sequential_per_user": 1, "per_device_batch_size": 8, "epochs": 6, "learning_rate": 1e-2,
                "eval_examples": 4, "output_dir": root / "run"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a d_model-32 model gains nothing from a second thread, and loses much on a busy machine
    try:
        trained = train(load_config([a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]))
    finally:
        torch.set_num_threads(threads)
    images = root / "item-images"
    images.mkdir()
    looks = [Look(colour, shape) for shape in SHAPES for colour in COLOURS]
    for n, asin in enumerate(domain.asins):
        if n % NO_PICTURE_EVERY:
            looks[n % len(looks)].image(size=96).save(images / f"{asin}.png")
    (images / SYNTHETIC_MARKER).write_text("drawn from the item ids\n")
    return {"model": trained.folder, "dataset": root / "dataset", "images": images}


def test_engine_over_the_real_pipeline(app_model):
    engine = Engine.load(str(app_model["model"]))
    users = load_test_users(app_model["dataset"])
    user = next(iter(users.values()))
    ranked = engine.recommend(user.history, user.user_id, top_k=10)
    assert len(ranked) == 10 and len({r.item_id for r in ranked}) == 10
    assert {r.item_id for r in ranked} <= engine.item_ids and not {r.item_id for r in ranked} & set(user.history)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    assert all(r.asin == engine.item(r.item_id).asin for r in ranked)
    asin = engine.item(user.history[0]).asin
    assert parse_history(f"{asin}, {user.history[1]}", engine) == list(user.history[:2])
    assert engine.item_id_of("B0NOTREAL") is None
    assert isinstance(engine.explain(user.user_id, ranked[0].item_id, user.history), str)
    assert isinstance(engine.explain(None, ranked[0].item_id, user.history), str)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_app(app_model, tmp_path) -> Iterator[str]:
    """`vip5-app` in its own process on a free local port; yields its URL once it answers."""
    port = free_port()
    log = (tmp_path / "app.log").open("w")
    command = [sys.executable, "-m", "app.cli", "--model", str(app_model["model"]), "--dataset",
               str(app_model["dataset"]), "--images", str(app_model["images"]), "--host", "127.0.0.1",
               "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"vip5-app exited with {server.returncode}:\n{(tmp_path / 'app.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vip5-app did not answer in {SERVER_START_SECONDS} s:\n"
                                f"{(tmp_path / 'app.log').read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def require_chromium() -> None:
    """Skip without a browser on a developer's machine; CI (.ci/run installs chromium) must never skip."""
    if not Path(CHROMIUM).exists():
        message = f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI installs it in .ci/run, so it must be there")
        pytest.skip(message)


@pytest.mark.slow
def test_app_in_a_real_browser(app_model, served_app, tmp_path):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    user = next(iter(load_test_users(app_model["dataset"]).values()))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served_app)
            expect(page.locator("#synthetic-note")).to_contain_text("Synthetic images", timeout=60_000)
            page.locator("#user input").click()
            page.get_by_role("option", name=re.compile(rf"^user {user.user_id} \(")).click()

            recommendations = page.locator("#recommendations img")
            expect(recommendations).to_have_count(10, timeout=120_000)
            expect(page.locator("#history img")).to_have_count(len(user.history))
            expect(page.locator("#history-text textarea")).to_have_value(", ".join(map(str, user.history)))
            expect(page.locator("#status")).to_contain_text(f"Top 10 for user {user.user_id}")
            expect(page.locator("#status")).to_contain_text("Held-out next purchase")
            expect(page.locator("#recommendations")).to_contain_text("#1 · -")
            expect(page.locator("#recommendations")).to_contain_text("(synthetic images)")

            recommendations.nth(2).click()
            expect(page.locator("#explanation textarea")).to_have_value(re.compile(r"^Why .+ \(item \d+\)\? "),
                                                                        timeout=60_000)
            expect(page.locator("#explanation")).not_to_have_class(re.compile(r"\bpending\b"))  # faded until done
            screenshot = tmp_path / "app-screenshot.png"
            page.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("VIP5_UPDATE_SCREENSHOT"):
                shutil.copy(screenshot, REPO / "docs" / "app-screenshot.png")

            page.locator("#history-text textarea").fill(f"B0NOTREAL, {user.history[0]}")
            page.locator("#recommend").click()
            expect(page.locator("#status")).to_contain_text("unknown item id or ASIN: B0NOTREAL", timeout=30_000)
            expect(recommendations).to_have_count(0)
        finally:
            browser.close()
