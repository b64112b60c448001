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

from data_builders.errors import DataFormatError, add_debug_argument, one_line
from data_builders.features import ENCODERS

TUNING_METHODS = ("vip5_adapter", "lora", "full")
TASKS = ("sequential", "direct", "explanation")
SEQUENTIAL_TARGETS = ("paper", "all")
ITEM_EMBEDDING_INITS = ("", "co_purchase")
BATCHINGS = ("random", "task", "task_length")  # see training/batching.py
DIRECT_POSITIVES = ("uniform", "latest")
DIRECT_NEGATIVES = ("uniform", "popularity")
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
    item_embedding_init: str = ""
    batching: str = "random"
    direct_positives: str = "uniform"
    direct_negatives: str = "uniform"
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
    compile: bool = False
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
        """Reject values that cannot work, naming the key: types first, then choices and ranges."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, checked_value(f.name, getattr(self, f.name)))
        from modeling_vip5.configuration_vip5 import LOSS_NORMALIZATIONS  # late: `--help` needs no transformers
        from modeling_vip5.processing_vip5 import TRUNCATIONS

        choices = {"method": TUNING_METHODS, "sequential_targets": SEQUENTIAL_TARGETS,
                   "item_embedding_init": ITEM_EMBEDDING_INITS, "batching": BATCHINGS,
                   "direct_positives": DIRECT_POSITIVES, "direct_negatives": DIRECT_NEGATIVES,
                   "mixed_precision": MIXED_PRECISIONS, "truncation": TRUNCATIONS,
                   "loss_normalization": LOSS_NORMALIZATIONS, "image_encoder": tuple(ENCODERS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks: expected a non-empty subset of {TASKS}, got {self.tasks}")
        if not self.dataset:
            raise ValueError("dataset: give the folder or Hub id of a dataset built by `vip5-data build`")
        for name in AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be 0 or more, got {getattr(self, name)}")
        for name in POSITIVE:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be greater than 0, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio: must be between 0 and 1, got {self.warmup_ratio}")
        if self.method == "lora" and not self.lora_target_modules:
            raise ValueError("lora_target_modules: give at least one module name for method lora (e.g. [q, v])")
        if self.model_config:
            check_model_config(self.model_config)


def check_model_config(fields: dict[str, Any]) -> None:
    """`model_config` names VIP5Config fields with valid values (VIP5Config itself keeps unknown keys silently)."""
    from huggingface_hub.errors import StrictDataclassError

    from modeling_vip5 import VIP5Config

    defaults = VIP5Config()
    unknown = sorted(key for key in fields if not hasattr(defaults, key) and key not in VIP5Config.attribute_map)
    if unknown:
        raise ValueError(f"model_config: {unknown} are not VIP5Config fields")
    try:
        VIP5Config(**fields)
    except StrictDataclassError as error:
        raise ValueError(f"model_config: {one_line(error)}") from None


# Ranges, checked by `validate` (types come from the annotations above).
AT_LEAST_ONE = ("per_device_batch_size", "gradient_accumulation_steps", "max_input_length", "max_target_length",
                "epochs", "num_image_tokens", "reduction_factor", "lora_r", "lora_alpha", "keep_checkpoints",
                "log_every")
NON_NEGATIVE = ("sequential_per_user", "direct_per_user", "max_history", "max_users", "max_steps", "seed",
                "num_workers", "eval_every", "eval_examples", "save_every", "weight_decay")
POSITIVE = ("learning_rate", "adam_epsilon", "max_grad_norm")
TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list of strings", dict: "a mapping",
              bool: "true or false"}
VALUE_NAMES = {str: "the string", int: "the integer", float: "the number", list: "the list", dict: "the mapping"}


def checked_value(name: str, value: Any, raw: str | None = None) -> Any:
    """`value` as field `name`'s annotated type, or a ValueError saying what was wrong. Integers pass as floats, and
    numeric strings too (PyYAML reads `1e-3` without a dot as a string). `raw` is the YAML text of the value, to explain
    YAML's booleans: an unquoted `no` for a string field is an error, except `mixed_precision: no` (documented)."""
    kind = typing.get_origin(FIELD_TYPES[name]) or FIELD_TYPES[name]
    if kind is str and value is False and name == "mixed_precision":  # YAML 1.1 reads an unquoted `no` as false
        return "no"
    if isinstance(value, bool) and kind is not bool:
        written = raw or str(value).lower()
        hint = f"; quote it ('{written}') to mean the string" if kind is str else ""
        raise ValueError(f"{name}: expected {TYPE_NAMES[kind]}, got `{written}`, which YAML reads as the boolean "
                         f"{str(value).lower()}{hint}")
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
        shown = "nothing (null)" if value is None else f"{VALUE_NAMES.get(type(value), type(value).__name__)} {value!r}"
        hint = "; quote it" if kind is str and isinstance(value, (int, float)) else ""
        raise ValueError(f"{name}: expected {TYPE_NAMES[kind]}, got {shown}{hint}")
    return value


FIELD_TYPES = typing.get_type_hints(TrainConfig)


def default_config_path() -> Path:
    return Path(str(resources.files("training").joinpath("configs/vip5_paper.yaml")))


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML file, checked key by key; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataFormatError(path, f"cannot read the config file ({getattr(error, 'strerror', None) or error})") \
            from error
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark, start = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        if start is not None and getattr(error, "context", None):
            problem += f" ({error.context} started on line {start.line + 1})"
        raise DataFormatError(path, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not isinstance(root, yaml.MappingNode):
        raise DataFormatError(path, f"expected a mapping of settings (key: value lines), got {type(loaded).__name__}")
    nodes: dict[str, tuple[int, str | None]] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        if key_node.value in nodes:
            raise DataFormatError(path, f"{key_node.value} is given twice (also on line {nodes[key_node.value][0]})",
                                  line=line)
        nodes[key_node.value] = (line, value_node.value if isinstance(value_node, yaml.ScalarNode) else None)
    values = {}
    for key, value in loaded.items():
        line, raw = nodes.get(str(key), (None, None))
        if key not in FIELD_TYPES:
            close = difflib.get_close_matches(str(key), FIELD_TYPES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataFormatError(path, f"unknown keys [{str(key)!r}] (line {line}; {hint}`vip5-train --help` lists "
                                        "every key)")
        try:
            values[key] = checked_value(key, value, raw)
        except ValueError as error:
            raise DataFormatError(path, str(error), line=line) from None
    return values


def documentation(path: Path | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """`({key: comment}, {key: section})` from the comments of the paper's YAML file, the one place keys are
    documented: a key's comment runs from its line's `#` over the comment-only lines below it."""
    docs: dict[str, str] = {}
    sections: dict[str, str] = {}
    section, key = "settings", None
    for line in (path or default_config_path()).read_text(encoding="utf-8").splitlines():
        if heading := re.fullmatch(r"#\s*-+\s*(.*?)\s*-+\s*", line):
            section, key = heading[1], None
        elif entry := re.match(r"(\w+):[^#]*(?:#\s?(.*))?$", line):
            key = entry[1]
            docs[key], sections[key] = (entry[2] or "").strip(), section
        elif key and (more := re.fullmatch(r"\s+#\s?(.*)", line)):
            docs[key] = f"{docs[key]} {more[1].strip()}"
        else:
            key = None
    return docs, sections


OUTPUT_POLICY = """output_dir: a new or empty folder, or a run to continue with --resume-from (latest or a checkpoint
folder). A folder with other content is refused unless --overwrite, which first deletes what an earlier run wrote
there (checkpoints, logs, adapter or model, base-model, train_config.json, training_curve.png) and keeps other files.
A failed or interrupted run removes what it wrote, except complete checkpoints: --resume-from latest continues them.
Errors are one line (exit status 1); --debug or VIP5_DEBUG=1 shows the traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Flags for every TrainConfig key, grouped and described as in the paper's YAML file."""
    docs, sections = documentation()
    parser = argparse.ArgumentParser(prog="vip5-train", epilog=OUTPUT_POLICY,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Adapter tuning of VIP5 (run under `accelerate launch` for GPUs).")
    parser.add_argument("--config", type=Path, help="YAML file of training settings (keys as below, with underscores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an output_dir that holds an earlier run (see below)")
    add_debug_argument(parser)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        section = sections.get(f.name, "settings")
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(section))
        default = _default(f)
        shown = json.dumps(default) if isinstance(default, (list, dict, str)) else default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                           type=_parser_for(f), metavar=_metavar(f),
                           help=f"{docs.get(f.name, '')} (default: {shown})".replace("%", "%%"))
    return parser


def parse_command_line(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Defaults, then the YAML file given with `--config`, then command-line flags; plus the options that are not
    settings of the run (`--overwrite`)."""
    args = vars(build_parser().parse_args(argv))
    options = argparse.Namespace(overwrite=args.pop("overwrite"), config=args.pop("config"))
    args.pop("debug", None)
    values: dict[str, Any] = read_config_file(options.config) if options.config else {}
    values.update(args)
    config = TrainConfig(**values)
    config.validate()
    return config, options


def load_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file given with `--config`, then command-line flags."""
    return parse_command_line(argv)[0]


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


def _metavar(f: dataclasses.Field) -> str:
    kind = typing.get_origin(FIELD_TYPES[f.name]) or FIELD_TYPES[f.name]
    return {int: "N", float: "X", list: "JSON", dict: "JSON", bool: "BOOL"}.get(kind, "TEXT")
