"""A dependency-free accelerate tracker (JSON lines) and the training-curve plot drawn from its file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from accelerate.tracking import GeneralTracker, on_main_process


class JSONLinesTracker(GeneralTracker):
    """Writes `config.json` and one JSON object per `accelerator.log` call to `log.jsonl` (main process only)."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, logging_dir: str | Path):
        super().__init__()
        self.logging_dir = Path(logging_dir)

    @property
    def tracker(self) -> Path:
        return self.logging_dir / "log.jsonl"

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        (self.logging_dir / "config.json").write_text(json.dumps(values, indent=2, default=str))

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        with self.tracker.open("a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")


def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_training_curve(log_path: str | Path, png_path: str | Path) -> Path | None:
    """Training and validation loss against the step; None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    series = {name: [(r["step"], r[name]) for r in records if name in r] for name in ("loss", "eval_loss")}
    if not any(series.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label in (("loss", "training loss"), ("eval_loss", "validation loss")):
        if series[name]:
            steps, values = zip(*series[name], strict=True)
            ax.plot(steps, values, marker="o" if name == "eval_loss" else None, label=label)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
