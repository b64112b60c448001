"""Training configuration: one dataclass whose defaults are the paper's, read from a YAML file and command-line flags.

Precedence: dataclass defaults < `--config file.yaml` < flags (`--learning-rate 5e-4`). Unknown keys, values of the
wrong type and values out of range are errors that name the key (and the file and line), before anything is loaded or
trained. Every key is documented once, by its comment in `configs/vip5_paper.yaml`; `vip5-train --help` shows those
comments.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from data_builders.errors import DataFormatError, add_debug_argument

TUNING_METHODS = ("vip5_adapter", "lora", "full")
TASKS = ("sequential", "direct", "explanation")
SEQUENTIAL_TARGETS = ("paper", "all")
MIXED_PRECISIONS = ("", "auto", "no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Every key is documented by its comment in `training/configs/vip5_paper.yaml` (shown by `--help`)."""

    # data
    dataset: str = ""
    domain: str = "beauty"
    image_encoder: str = "vitb32"
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    sequential_per_user: int = 10
    direct_per_user: int = 10
    sequential_targets: str = "paper"
    max_history: int = 0
    max_users: int = 0
    # model
    model: str = ""
    model_config: dict[str, Any] = field(default_factory=dict)
    processor: str = "t5-small"
    num_image_tokens: int = 2
    loss_normalization: str = "paper"
    # tuning method
    method: str = "vip5_adapter"
    reduction_factor: int = 8
    lora_r: int = 8
    lora_alpha: int = 16
    lora_target_modules: list[str] = field(default_factory=lambda: ["q", "v"])
    # optimisation
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-6
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 5.0
    per_device_batch_size: int = 36
    gradient_accumulation_steps: int = 1
    epochs: int = 10
    max_steps: int = 0
    max_input_length: int = 1024
    max_target_length: int = 64
    truncation: str = "right"
    mixed_precision: str = ""
    seed: int = 2022
    num_workers: int = 0
    # evaluation, checkpoints, logging
    eval_every: int = 0
    eval_examples: int = 256
    save_every: int = 0
    keep_checkpoints: int = 3
    log_every: int = 10
    output_dir: str = "vip5-output"
    resume_from: str = ""
    push_to_hub: str = ""

    def validate(self) -> None:
        """Reject values that cannot work, naming the key."""
        if self.method not in TUNING_METHODS:
            raise ValueError(f"method: expected one of {TUNING_METHODS}, got {self.method!r}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks: expected a non-empty subset of {TASKS}, got {self.tasks}")
        if self.sequential_targets not in SEQUENTIAL_TARGETS:
            raise ValueError(f"sequential_targets: expected one of {SEQUENTIAL_TARGETS}, got {self.sequential_targets!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision: expected one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}")
        if not self.dataset:
            raise ValueError("dataset: give the folder or Hub id of a dataset built by `vip5-data build`")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "max_input_length", "max_target_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")


def default_config_path() -> Path:
    return Path(str(resources.files("training").joinpath("configs/vip5_paper.yaml")))


def load_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file given with `--config`, then command-line flags."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    parser = argparse.ArgumentParser(description="Adapter tuning of VIP5 (run under `accelerate launch` for GPUs).")
    parser.add_argument("--config", type=Path, help="YAML file of training settings (keys as below, with underscores)")
    for name, f in fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS,
                            help=f"(default: {_default(f)!r})", type=_parser_for(f))
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    if config_file := args.pop("config", None):
        loaded = yaml.safe_load(config_file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a mapping of settings, got {type(loaded).__name__}")
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            raise ValueError(f"{config_file}: unknown keys {unknown}; valid keys: {sorted(fields)}")
        if loaded.get("mixed_precision") is False:  # YAML 1.1 reads an unquoted `no` as false
            loaded["mixed_precision"] = "no"
        values.update(loaded)
    values.update(args)
    config = TrainConfig(**values)
    config.validate()
    return config


def resolve_mixed_precision(setting: str) -> str:
    """The `Accelerator` argument. "" = what `accelerate launch` set (its ACCELERATE_MIXED_PRECISION), else fp32 ("no"),
    stated explicitly: with None, a second run in the same process silently inherited the first one's precision.
    `auto` = bf16 autocast where the hardware computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX:
    0.46x the fp32 step time at t5-small geometry in docs/benchmarks.md), fp32 elsewhere."""
    if setting != "auto":
        return setting or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence the getattr
    return "bf16" if any(getattr(torch.cpu, probe, lambda: False)() for probe in probes) else "no"


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _parser_for(f: dataclasses.Field):
    """Flags take the field's type; lists and dicts are given as JSON (`--tasks '["sequential"]'`)."""
    default = _default(f)
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes")
    if isinstance(default, (list, dict)):
        return json.loads
    return type(default)
