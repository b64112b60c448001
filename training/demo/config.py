"""The demo's settings: one dataclass (the `vip5-demo` flags) and the defaults that make it finish in minutes offline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_builders.features import ENCODERS
from data_builders.p5_reader import (
    EXP_SPLITS,
    NEGATIVES,
    USER_NAMES,
)

IMAGE_SOURCES = ("synthetic", "photos", "features")
USER_KEYED_FILES = (NEGATIVES, EXP_SPLITS, USER_NAMES)  # keyed by the full data's user ids: invalid after a user cut
# The stage-1 backbone offline: small enough for minutes on a CPU, deep enough to learn the prompts.
DEFAULT_BACKBONE = {"d_model": 128, "d_kv": 32, "d_ff": 512, "num_layers": 3, "num_decoder_layers": 3, "num_heads": 4,
                    "dropout_rate": 0.0}
SYNTHETIC_NOTICE = (
    "> **Demo data.** Trained and evaluated by `vip5-demo` on {source}. The interactions are real Amazon purchases; "
    "{synthetic}. The numbers show that the pipeline works and what each stage adds; they are not comparable with "
    "published results."
)
# Headline metrics of the report, per family: (metric, label).
REPORT_METRICS = {
    "sequential": [("hr@5", "HR@5"), ("hr@10", "HR@10"), ("ndcg@10", "NDCG@10")],
    "direct": [("hr@1", "HR@1"), ("hr@10", "HR@10"), ("ndcg@10", "NDCG@10")],
    "explanation": [("bleu4", "BLEU-4"), ("rouge1_f", "ROUGE-1"), ("rougeL_f", "ROUGE-L")],
}
# The protocol whose numbers the stage-contribution table compares (exact rankings; greedy text).
MAIN_PROTOCOL = {"sequential": "full_ranking", "direct": "scoring", "explanation": "paper"}


@dataclass
class DemoConfig:
    """Everything a run depends on (the `vip5-demo` flags); stored in the output's `results.json`."""

    output: Path = Path("vip5-demo-output")
    input: Path | None = None  # P5-format domain folder; None = the embedded Beauty sample
    domain: str = "beauty"
    users: int = 0  # first N users of the source (0 = all)
    images: str = "synthetic"
    image_dir: Path | None = None  # with images="photos": local photos named <asin>.<jpg|png|...>
    clip_pretrained: str = ""  # open_clip pretrained tag ("openai"); "" = randomly initialised CLIP (offline)
    encoder: str = "vitb32"
    indexing: str = "sequential_train_first"  # leak-free (OpenP5); co-purchased items share id prefixes
    model: str = ""  # pretrained T5 / VIP5 checkpoint (e.g. t5-small); "" = a fresh backbone of `backbone`
    backbone: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKBONE))
    vocab_size: int = 1000
    num_image_tokens: int = 2
    sequential_steps: int = 700  # stage 1 opens with sequential prompts alone (0 skips this phase)
    stage1_steps: int = 250  # then sequential and explanation prompts (0 with sequential_steps 0 skips stage 1)
    stage2_steps: int = 200
    batch_size: int = 64
    stage1_learning_rate: float = 3e-3
    stage2_learning_rate: float = 3e-3
    max_history: int = 5  # sequential prompts keep the latest N purchases (training and evaluation)
    direct_per_user: int = 0  # B prompts per user and epoch in stage 2 (0 = none; see steps.stage_phases)
    mixed_precision: str = "auto"  # bf16 autocast where the hardware runs it natively (see resolve_mixed_precision)
    max_input_length: int = 512
    eval_users: int = 0  # test users per template (0 = all)
    eval_batch_size: int = 32
    curve_users: int = 100  # validation users of the learning curve
    curve_points: int = 3  # learning-curve points per training phase (0 = none)
    model_id: str = "vip5-demo"
    threads: int = 0  # torch threads; 0 = the cores idle at the start (see `idle_cores`)
    seed: int = 2022

    def validate(self) -> None:
        """Reject settings that cannot work, naming the setting, before anything runs."""
        if self.images not in IMAGE_SOURCES:
            raise ValueError(f"images: expected one of {IMAGE_SOURCES}, got {self.images!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder: expected one of {sorted(ENCODERS)}, got {self.encoder!r}")
        if self.images == "features" and self.input is None:
            raise ValueError("images: 'features' reads <input>/features/; give --input")
        if self.input is not None and not self.input.is_dir():
            raise FileNotFoundError(f"input: {self.input} is not a folder")
        for name in ("users", "sequential_steps", "stage1_steps", "stage2_steps", "eval_users", "threads",
                     "max_history", "direct_per_user", "curve_users", "curve_points"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be 0 or positive, got {getattr(self, name)}")
        for name in ("vocab_size", "num_image_tokens", "batch_size", "max_input_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.stage2_steps == 0:
            raise ValueError("stage2_steps: stage 2 (VIP5 adapters with image tokens) is the model; give at least 1")


