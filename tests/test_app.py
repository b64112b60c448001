"""vip5-app without a browser or a model: history parsing, what each request shows, item pictures, the page's
components and the Hugging Face Space export, over a small fake engine with the pipeline's interface."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest
import yaml
from packaging.requirements import Requirement
from PIL import Image

from app.app import Demo, build_app
from app.cli import main, parse_args
from app.engine import Engine
from app.history import HeldOutUser, HistoryError, parse_history
from app.images import SYNTHETIC_MARKER, ItemImages, placeholder

NUMERIC_ASIN = "0764226118"  # book-style ASINs are all digits


class FakeCatalogue:
    """30 items; ASIN B<9 digits> (item 7 has a numeric one), every 5th item without a title."""

    item_ids = list(range(1, 31))

    def asin(self, item_id: int) -> str:
        return NUMERIC_ASIN if item_id == 7 else f"B{item_id:09d}"

    def title(self, item_id: int) -> str | None:
        return None if item_id % 5 == 0 else f"Item {item_id}"

    def has_image(self, item_id: int) -> bool:
        return True

    def item_id_of(self, asin: str) -> int:
        ids = {self.asin(i): i for i in self.item_ids}
        if asin not in ids:
            raise KeyError(asin)  # the real catalogue raises UnknownItemError, a KeyError
        return ids[asin]


class FakePipeline:
    """Recommends the ids after the last history item, scores falling; records what it was asked."""

    catalogue = FakeCatalogue()

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, user: dict, top_k: int = 10) -> dict:
        self.calls.append(user)
        start = user["history"][-1]
        items = [(start + n) % 30 + 1 for n in range(top_k)]
        return {"protocol": "constrained", "template_id": "A-3", "items": [
            {"item_id": i, "asin": self.catalogue.asin(i), "title": self.catalogue.title(i), "score": -1.0 - n / 10}
            for n, i in enumerate(items)]}

    def explain(self, user_id: int, item_id: int, history: list[int]) -> str:
        return f" user {user_id} would like item {item_id} after {history} "


@pytest.fixture
def engine() -> Engine:
    return Engine(FakePipeline())


@pytest.fixture
def images(tmp_path: Path) -> ItemImages:
    folder = tmp_path / "item-images"
    folder.mkdir()
    for item_id, suffix in ((1, ".png"), (2, ".jpg"), (3, ".JPEG"), (4, ".webp")):
        Image.new("RGB", (8, 8), (200, 20, 20)).save(folder / f"B{item_id:09d}{suffix}")
    (folder / "notes.txt").write_text("not a picture")
    (folder / SYNTHETIC_MARKER).write_text("drawn from the ids\n")
    return ItemImages(folder)


@pytest.fixture
def demo(engine: Engine, images: ItemImages) -> Demo:
    return Demo(engine, {3: HeldOutUser(3, (1, 2, 5), target=7), 4: HeldOutUser(4, (9,), target=30)}, images)


def test_history_parsing_takes_ids_and_asins(engine):
    assert parse_history("1, B000000002 -> 3;4  5", engine) == [1, 2, 3, 4, 5]
    assert parse_history(f"{NUMERIC_ASIN}, 7", engine) == [7, 7]  # a number the catalogue lacks as an id: an ASIN
    with pytest.raises(HistoryError, match=r"^unknown item id or ASIN: BNOTREAL$"):
        parse_history("1, BNOTREAL", engine)
    with pytest.raises(HistoryError, match=r"^unknown item ids or ASINs: 31, 999$"):
        parse_history("31 999 2", engine)
    with pytest.raises(HistoryError, match="at least one"):
        parse_history(" , -> ", engine)


def test_a_test_user_shows_history_top_10_and_the_held_out_item(demo):
    text, view = demo.pick_user(3)
    assert text == "1, 2, 5"
    assert [caption for _, caption in view.history] == ["1. Item 1", "2. Item 2", "3. B000000005"]
    assert len(view.recommendations) == 10
    assert [caption for _, caption in view.recommendations[:2]] == ["#1 · -1.00 · Item 6", "#2 · -1.10 · Item 7"]
    assert "user 3" in view.status and "Held-out next purchase: Item 7 (item 7), rank 2." in view.status
    assert view.state == {"user_id": 3, "history": [1, 2, 5], "items": [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]}
    assert demo.engine.pipe.calls == [{"history": [1, 2, 5], "user_id": 3}]
    assert "not in the top 10" in demo.pick_user(4)[1].status
    assert demo.pick_user(99)[1].status == "no test user 99"


def test_a_typed_history_without_a_user_is_a_new_users(demo):
    view = demo.recommend("B000000004", None)
    assert demo.engine.pipe.calls == [{"history": [4]}]
    assert view.status == "Top 10 for a new user from a history of 1 item."
    assert view.state["user_id"] is None
    assert demo.explain(view.state, 0) == "Why B000000005 (item 5)? user 0 would like item 5 after [4]"
    edited = demo.recommend("1, 2", 3)  # a test user's id with another history: no held-out item to report
    assert edited.status == "Top 10 for user 3 from a history of 2 items."


def test_an_unknown_asin_is_reported_in_the_view_not_raised(demo):
    view = demo.recommend("1, B0NOTREAL", 3)
    assert view.status == "⚠️ unknown item id or ASIN: B0NOTREAL"
    assert (view.history, view.recommendations, view.state) == ([], [], {})
    assert demo.engine.pipe.calls == []
    assert demo.explain(view.state, 0) == ""


def test_explanation_of_a_clicked_recommendation(demo):
    _, view = demo.pick_user(3)
    assert demo.explain(view.state, 1) == "Why Item 7 (item 7)? user 3 would like item 7 after [1, 2, 5]"
    assert demo.explain(view.state, 10) == ""


def test_item_pictures_files_placeholders_and_the_synthetic_label(images, tmp_path):
    assert sorted(images.files) == [f"B00000000{i}" for i in (1, 2, 3, 4)]
    assert images.synthetic
    assert images.image("B000000003") == str(images.folder / "B000000003.JPEG")
    assert images.image("B000000009") is placeholder() and images.image(None) is placeholder()
    (images.folder / SYNTHETIC_MARKER).unlink()
    assert not ItemImages(images.folder).synthetic and ItemImages(images.folder, synthetic=True).synthetic
    assert not ItemImages().synthetic and ItemImages().image("B000000001") is placeholder()
    with pytest.raises(FileNotFoundError, match="no such images folder"):
        ItemImages(tmp_path / "absent")


def test_page_has_its_components_and_labels_synthetic_pictures(demo):
    def elements(blocks: gr.Blocks) -> dict[str, dict]:
        return {c["props"]["elem_id"]: c["props"] for c in blocks.config["components"] if c["props"].get("elem_id")}

    page = elements(build_app(demo))
    assert {"user", "history-text", "recommend", "status", "history", "recommendations", "explanation"} < set(page)
    assert "Synthetic images" in page["synthetic-note"]["value"]
    assert page["recommendations"]["label"].endswith(" (synthetic images)")
    assert page["user"]["choices"] == [("user 3 (3 items)", 3), ("user 4 (1 item)", 4)]
    demo.images.synthetic = False
    page = elements(build_app(demo))
    assert "synthetic-note" not in page and page["history"]["label"] == "History, oldest first"


def test_command_line_needs_a_model_and_dataset_or_an_export(capsys):
    for argv in ([], ["--model", "m"], ["--export-space", "out", "--model-id", "me/m"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
    assert "--export-space needs --model-id and --dataset-id" in capsys.readouterr().err


def test_space_export_is_a_runnable_space(images, tmp_path):
    space = tmp_path / "space"
    main(["--export-space", str(space), "--model-id", "me/vip5-beauty", "--dataset-id", "me/vip5-amazon",
          "--domain", "beauty", "--images", str(images.folder), "--max-users", "200"])
    readme = (space / "README.md").read_text()
    assert readme.startswith("---\n")
    header = yaml.safe_load(readme.split("---\n")[1])
    assert header["sdk"] == "gradio" and header["sdk_version"] == gr.__version__ and header["app_file"] == "app.py"
    assert header["title"] == "VIP5 recommendations" and header["models"] == ["me/vip5-beauty"]
    assert "synthetic" in readme.split("---\n", 2)[2]
    source = (space / "app.py").read_text()
    compile(source, "app.py", "exec")
    assert "'--model', 'me/vip5-beauty', '--dataset', 'me/vip5-amazon'" in source
    assert "'--domain', 'beauty'" in source and "'--images', 'item-images'" in source
    parse_args(eval(source.split("main(", 1)[1].rsplit(")", 1)[0]))  # the Space's flags are valid vip5-app flags
    required = {Requirement(line).name for line in (space / "requirements.txt").read_text().splitlines()}
    assert {"gradio", "torch", "transformers", "peft", "datasets", "pillow"} <= required
    assert "pytest" not in required and "playwright" not in required
    assert (space / "item-images" / SYNTHETIC_MARKER).exists() and (space / "item-images" / "B000000001.png").exists()
    # the Space's own copies of the packages are the ones its app.py imports
    probe = ("import app.cli, data_builders, model_cards, modeling_vip5.catalogue, training.config; "
             "print(app.cli.__file__, data_builders.__file__, modeling_vip5.catalogue.__file__)")
    env = {**os.environ, "PYTHONPATH": ""}
    files = subprocess.run([sys.executable, "-c", probe], cwd=space, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert all(Path(f).resolve().is_relative_to(space.resolve()) for f in files), files
