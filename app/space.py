"""`vip5-app --export-space`: a Hugging Face Space folder that runs this same app over a Hub model and dataset.

The Space carries the project's packages as source (they are not on PyPI), the item pictures if given, a
requirements.txt of the package's dependencies and the Space's README with its YAML header."""

from __future__ import annotations

import shutil
from importlib.metadata import requires
from pathlib import Path

import gradio as gr
import yaml
from packaging.requirements import Requirement

DISTRIBUTION = "vip5-hf"
PACKAGES = ("app", "data_builders", "model_cards", "modeling_vip5", "training")  # setup.cfg's packages.find
SOURCE_ROOT = Path(__file__).resolve().parents[1]
IMAGES = "item-images"


def requirements(extra: str = "app") -> list[str]:
    """The installed distribution's dependencies plus those of `extra`, without markers (what the Space pip-installs)."""
    lines = []
    for text in requires(DISTRIBUTION) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
            requirement.marker = None
            lines.append(str(requirement))
    return lines


def space_readme(title: str, model_id: str, dataset_id: str, synthetic: bool) -> str:
    header = {
        "title": title, "emoji": "🛍️", "colorFrom": "indigo", "colorTo": "pink", "sdk": "gradio",
        "sdk_version": gr.__version__, "app_file": "app.py", "pinned": False, "license": "apache-2.0",
        "models": [model_id], "datasets": [dataset_id],
    }
    note = "\nThe item pictures are synthetic (drawn from the item ids), not product photos.\n" if synthetic else ""
    return (f"---\n{yaml.safe_dump(header, sort_keys=False, allow_unicode=True)}---\n\n# {title}\n\n"
            f"VIP5 recommendations from [{model_id}](https://huggingface.co/{model_id}) over the dataset "
            f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id}): pick a user of the test split or type a "
            "history, see the top 10 and click one for the model's explanation. Written by `vip5-app --export-space`."
            f"\n{note}")


def export_space(output: Path, app_argv: list[str], model_id: str, dataset_id: str, images: Path | None = None,
                 synthetic: bool = False, title: str = "VIP5 recommendations") -> Path:
    """Write the Space into `output`; `app_argv` are the `vip5-app` flags it runs with (without model, dataset and
    images, which the export sets)."""
    output.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.rmtree(output / package, ignore_errors=True)
        shutil.copytree(SOURCE_ROOT / package, output / package, ignore=ignore)
    argv = ["--model", model_id, "--dataset", dataset_id, *app_argv]
    if images is not None:
        shutil.rmtree(output / IMAGES, ignore_errors=True)
        shutil.copytree(images, output / IMAGES)
        argv += ["--images", IMAGES]
    (output / "requirements.txt").write_text("\n".join(requirements()) + "\n")
    (output / "app.py").write_text(
        f'"""{title}: `vip5-app` over {model_id} and {dataset_id} (written by `vip5-app --export-space`)."""\n\n'
        f"from app.cli import main\n\nif __name__ == \"__main__\":\n    main({argv!r})\n"
    )
    (output / "README.md").write_text(space_readme(title, model_id, dataset_id, synthetic))
    return output
