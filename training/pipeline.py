"""The main job, step by step: a P5 domain (the embedded Beauty sample by default) -> item images -> CLIP features ->
datasets -> tokenizer -> stage 1 -> stage 2 -> evaluation of all three task families -> cards, curves and a report.

Offline there is no pretrained t5-small, and adapters on a random frozen backbone learn little, so the default follows
the paper's own two stages at small scale: stage 1 trains a small backbone fully on text-only prompts (images withheld,
as P5 was trained), stage 2 tunes VIP5 adapters with image tokens on the frozen stage-1 model. With `model` set (e.g.
`t5-small`), stage 1 fine-tunes that checkpoint instead, or is skipped with `stage1_steps=0` (the released code's
recipe: adapters directly on t5-small).

Every step is a function below; `steps.md` in the output lists the equivalent commands of a run with its paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from transformers import AutoTokenizer

from data_builders.atomic import replace_dir, staging_dir, write_text_atomic
from data_builders.build import build_domain
from data_builders.clip_extract import extract_features
from data_builders.features import ENCODERS, feature_dir, save_feature
from data_builders.images import ImageFetcher
from data_builders.p5_reader import (
    DATAMAPS,
    EXP_SPLITS,
    NEGATIVES,
    P5_FILES,
    SEQUENTIAL,
    USER_NAMES,
    read_p5_domain,
)
from data_builders.sample import BEAUTY_SAMPLE
from data_builders.sample.make_sample import dense_sample, read_source, write_p5_files
from data_builders.synthetic import explanation_splits, item_looks, write_exp_splits, write_look_images
from data_builders.writer import README as DATASET_CARD
from modeling_vip5.processing_vip5 import VIP5FeatureExtractor, VIP5Processor
from training.results import BASELINE_PROTOCOLS, EvaluationResults

from .config import TrainConfig
from .evaluate import EvaluateConfig, run_evaluation
from .offline_tokenizer import corpus_lines, domain_prompts, train_t5_tokenizer
from .train import train

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
    stage1_steps: int = 1200
    stage2_steps: int = 400
    batch_size: int = 32
    stage1_learning_rate: float = 3e-3
    stage2_learning_rate: float = 3e-3
    mixed_precision: str = "auto"  # bf16 autocast where the hardware runs it natively (see resolve_mixed_precision)
    max_input_length: int = 512
    eval_users: int = 200
    eval_batch_size: int = 32
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
        for name in ("users", "stage1_steps", "stage2_steps", "eval_users", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be 0 or positive, got {getattr(self, name)}")
        for name in ("vocab_size", "num_image_tokens", "batch_size", "max_input_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.stage2_steps == 0:
            raise ValueError("stage2_steps: stage 2 (VIP5 adapters with image tokens) is the model; give at least 1")


@dataclass
class StepRecord:
    """One step of a run: how long it took and how to run it on its own."""

    name: str
    seconds: float
    how: str  # the equivalent command or Python call


@dataclass
class Run:
    """The state a run accumulates: step records and facts for the report."""

    config: DemoConfig
    steps: list[StepRecord] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str, work: Callable[..., Any], *args: Any, how: str = "") -> Any:
        """Run `work(*args)` under a banner, timing it; recorded with `how` (default: the same call as a command)."""
        number = len(self.steps) + 1
        print(f"\n==> [{number}] {name}", flush=True)
        start = time.perf_counter()
        result = work(*args)
        seconds = time.perf_counter() - start
        self.steps.append(StepRecord(name, round(seconds, 1), how or python_call(work, *args)))
        print(f"    done in {seconds:.1f} s", flush=True)
        return result


def python_call(function: Callable[..., Any], *args: Any) -> str:
    """The shell command that makes the same call: what a user runs to repeat one step."""
    def literal(value: Any) -> str:
        return f"Path({str(value)!r})" if isinstance(value, Path) else repr(value)

    call = f"{function.__name__}({', '.join(map(literal, args))})"
    return (f'python -c "from pathlib import Path; from {function.__module__} import {function.__name__}; '
            f'{call}"')


# ---------------------------------------------------------------- data


def prepare_source(input_dir: Path, folder: Path, num_users: int = 0) -> None:
    """The P5 folder the build reads: the first `num_users` users' sequences and id maps, re-numbered as P5 does (or
    all of them as they are), plus links to the source's other files that stay valid."""
    present = [name for name in P5_FILES if (input_dir / name).is_file()]
    if num_users and (keyed := [name for name in present if name in USER_KEYED_FILES]):
        raise ValueError(f"{input_dir}: --users {num_users} renumbers the users, but {keyed} are keyed by the full "
                         "data's user ids; use --users 0 with this folder")
    with staging_dir(folder.parent, folder.name) as stage:
        if num_users or SEQUENTIAL not in present:  # a cut, or the embedded sample's compressed sequences
            sequences, users, items = read_source(input_dir)
            count = num_users or len(sequences)
            write_p5_files(dense_sample(sequences, count, len(items), min_length=0), users, items, stage)
            present = [name for name in present if name not in (SEQUENTIAL, DATAMAPS)]
        for name in present:
            (stage / name).symlink_to((input_dir / name).resolve())
        replace_dir(stage, folder)


def synthetic_explanations(folder: Path, domain: str, seed: int) -> None:
    """Write synthetic `exp_splits.pkl` records describing the items' synthetic photos into a P5 source folder."""
    data = read_p5_domain(folder, domain)
    looks = item_looks(data.interactions, data.item_asins, seed=seed)
    write_exp_splits(explanation_splits(data.interactions, data.user_raw_ids, data.item_asins, looks, seed),
                     folder / EXP_SPLITS)


def synthetic_image_features(source: Path, domain: str, work: Path, features_root: Path, encoder: str,
                             pretrained: str | None, seed: int) -> None:
    """CLIP features of the items' synthetic photos: one image per distinct look (written to `<work>/images`), its
    feature copied to every item of that look. A randomly initialised CLIP (`pretrained=None`) is seeded by `seed`."""
    data = read_p5_domain(source, domain)
    looks, asins = item_looks(data.interactions, data.item_asins, seed=seed), data.item_asins
    torch.manual_seed(seed)  # a randomly initialised CLIP draws its weights from the global generator
    names = write_look_images(looks, work / "images")
    extract_features([(name, None) for name in names], encoder, work / "look-features", "looks",
                     ImageFetcher(image_dir=work / "images", download=False), pretrained=pretrained,
                     missing_image="error")
    source = feature_dir(work / "look-features", encoder, "looks")
    vectors = {name: np.load(source / f"{name}.npy") for name in names}
    target = feature_dir(features_root, encoder, domain)
    for asin, look in zip(asins, looks, strict=True):
        save_feature(target / f"{asin}.npy", vectors[look.name])


def photo_features(source: Path, domain: str, work: Path, features_root: Path, encoder: str, pretrained: str | None,
                   image_dir: Path | None, seed: int) -> None:
    """CLIP features of the items' real photos: from `image_dir`, else downloaded from their URLs (cached)."""
    data = read_p5_domain(source, domain)
    torch.manual_seed(seed)
    urls = data.item_image_urls or [None] * data.num_items
    extract_features(list(zip(data.item_asins, urls, strict=True)), encoder, features_root, domain,
                     ImageFetcher(image_dir=image_dir, cache_dir=work / "image-cache"), pretrained=pretrained)


def build_dataset(source: Path, domain: str, datasets_dir: Path, name: str, features_root: Path, encoder: str,
                  indexing: str, seed: int) -> Path:
    """Build the domain, then name its folder `<name>-<digest of its files>`.

    `datasets` caches a local folder under its base name and config name, whatever the files hold, so a second
    folder called like a first one would be served the first one's rows; a name that carries the content cannot be.
    The digest covers the data files and the manifest; the card is derived from the manifest.
    """
    with staging_dir(datasets_dir, name) as stage:
        build_domain("p5", source, domain, stage, indexing=indexing, seed=seed, encoders=(encoder,),
                     features_root=features_root)
        digest = hashlib.sha256()
        for path in sorted(p for p in stage.rglob("*") if p.is_file() and p.name != DATASET_CARD):  # card: derived
            digest.update(str(path.relative_to(stage)).encode() + b"\0" + path.read_bytes())
        target = datasets_dir / f"{name}-{digest.hexdigest()[:12]}"
        replace_dir(stage, target)
    return target


def make_processor(folder: Path, dataset: Path, domain: str, encoder: str, num_image_tokens: int, model: str,
                   vocab_size: int, seed: int) -> None:
    """The processor: the checkpoint `model`'s tokenizer, or (offline, `model=""`) SentencePiece of `vocab_size`
    pieces trained on the domain's prompts."""
    if model:
        tokenizer = AutoTokenizer.from_pretrained(model)
    else:
        prompts = domain_prompts(dataset, domain, seed=seed)
        tokenizer = train_t5_tokenizer(corpus_lines(prompts), folder.parent / "tokenizer-work", vocab_size)
    feature_side = VIP5FeatureExtractor(ENCODERS[encoder][1], num_image_tokens)
    VIP5Processor(tokenizer, feature_side).save_pretrained(folder)


# ---------------------------------------------------------------- stages


def stage_config(config: DemoConfig, stage: int, dataset: Path, processor: Path, model: str) -> TrainConfig:
    """Stage 1: full training on text-only prompts with P5's loss; stage 2: VIP5 adapters with VIP5's loss."""
    steps = config.stage1_steps if stage == 1 else config.stage2_steps
    return TrainConfig(
        dataset=str(dataset), domain=config.domain, image_encoder=config.encoder, processor=str(processor),
        model=model, model_config={} if model else dict(config.backbone), num_image_tokens=config.num_image_tokens,
        method="full" if stage == 1 else "vip5_adapter",
        loss_normalization="example_mean" if stage == 1 else "paper",
        learning_rate=config.stage1_learning_rate if stage == 1 else config.stage2_learning_rate,
        sequential_per_user=20,  # twice the paper's share: next-item prediction is the slowest family to learn
        per_device_batch_size=config.batch_size, mixed_precision=config.mixed_precision, max_steps=steps,
        epochs=1_000_000, warmup_ratio=0.05,
        max_input_length=config.max_input_length, truncation="history", log_every=max(1, steps // 50),
        eval_every=max(1, steps // 5), eval_examples=96, seed=config.seed, output_dir=str(config.output / f"stage{stage}"),
    )


def evaluate_config(config: DemoConfig, stage: int, model: Path, dataset: Path) -> EvaluateConfig:
    """All three families, seen and unseen prompts (A-3, B-5, C-3 / A-9, B-8, C-12), every protocol and baseline."""
    folder = config.output / f"stage{stage}"
    return EvaluateConfig(
        model=str(model), dataset=str(dataset), domain=config.domain, image_encoder=config.encoder,
        output=str(folder / "results.json"), predictions=str(folder / "predictions.jsonl"),
        max_examples=config.eval_users, batch_size=config.eval_batch_size, max_input_length=config.max_input_length,
        truncation="history", seed=config.seed, model_card=str(model / "README.md"),
        model_id=f"{config.model_id}-stage{stage}",
    )


def mark_card(path: Path, notice: str) -> None:
    """Put the demo-data notice right after the metadata block of a model card written from results."""
    metadata, closing, body = path.read_text(encoding="utf-8").partition("\n---\n")
    if not closing:
        raise ValueError(f"{path}: no metadata block (expected a card written by model_cards.model_card)")
    write_text_atomic(path, f"{metadata}{closing}\n{notice}\n{body}")


# ---------------------------------------------------------------- report


def metric_rows(results: dict[str, EvaluationResults]) -> dict[str, list[dict[str, Any]]]:
    """Per family, one row per (run, protocol) with the headline metrics of every template; baselines once."""
    rows: dict[str, list[dict[str, Any]]] = {family: [] for family in REPORT_METRICS}
    seen: set[tuple[str, str]] = set()
    for run, evaluation in results.items():
        for result in evaluation.results:
            baseline = result.protocol in BASELINE_PROTOCOLS
            label = "baseline" if baseline else run
            key = (result.task_family, f"{label}/{result.protocol}")
            if key not in seen:
                seen.add(key)
                rows[result.task_family].append({"run": label, "protocol": result.protocol, "values": {}})
            row = next(r for r in rows[result.task_family] if (r["run"], r["protocol"]) == (label, result.protocol))
            if baseline and result.template_id in row["values"]:
                continue
            row["values"][result.template_id] = {name: result.metrics.get(name) for name, _ in
                                                 REPORT_METRICS[result.task_family]}
    return rows


def templates_of(results: dict[str, EvaluationResults], family: str) -> list[tuple[str, str]]:
    """(template id, seen/unseen) of a family, in evaluation order."""
    found = {r.template_id: r.prompt for e in results.values() for r in e.results if r.task_family == family}
    return list(found.items())


def results_markdown(results: dict[str, EvaluationResults]) -> str:
    """Markdown tables: per family, rows = runs x protocols (baselines first), columns = templates x metrics."""
    lines = []
    for family, rows in metric_rows(results).items():
        templates = templates_of(results, family)
        if not templates:
            continue
        metrics = REPORT_METRICS[family]
        header = [f"{t} ({prompt}) {label}" for t, prompt in templates for _, label in metrics]
        lines += [f"### {family}", "", "| run | protocol | " + " | ".join(header) + " |",
                  "|---|---|" + "---:|" * len(header)]
        for row in sorted(rows, key=lambda r: r["run"] != "baseline"):
            cells = [_number(row["values"].get(t, {}).get(name)) for t, _ in templates for name, _ in metrics]
            lines.append(f"| {row['run']} | {row['protocol']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def contributions(results: dict[str, EvaluationResults]) -> list[dict[str, Any]]:
    """What each stage added on the main protocol of each family: popularity -> stage 1 -> stage 2, beside the
    transition baseline (the floor that uses the user's history)."""
    def value(run: str, family: str, template: str, protocol: str, metric: str) -> float | None:
        for r in results[run].results if run in results else ():
            if (r.task_family, r.template_id, r.protocol) == (family, template, protocol):
                return r.metrics.get(metric)
        return None

    baseline_run = next(iter(results))
    table = []
    for family, protocol in MAIN_PROTOCOL.items():
        for template, prompt in templates_of(results, family):
            for metric, label in REPORT_METRICS[family]:
                floor = value(baseline_run, family, template, "popularity", metric)
                chain = value(baseline_run, family, template, "transition", metric)
                stage1 = value("stage 1", family, template, protocol, metric)
                stage2 = value("stage 2", family, template, protocol, metric)
                table.append({"family": family, "template": template, "prompt": prompt, "protocol": protocol,
                              "metric": label, "popularity": floor, "transition": chain, "stage 1": stage1,
                              "stage 2": stage2})
    return table


def contribution_markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| family | template | protocol | metric | popularity | transition | stage 1 | stage 2 | "
             "stage 1 - popularity | stage 2 - stage 1 |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in table:
        floor, one, two = row["popularity"], row["stage 1"], row["stage 2"]
        lines.append(f"| {row['family']} | {row['template']} ({row['prompt']}) | {row['protocol']} | {row['metric']} | "
                     f"{_number(floor)} | {_number(row['transition'])} | {_number(one)} | {_number(two)} | "
                     f"{_delta(one, floor)} | {_delta(two, one)} |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _delta(new: float | None, old: float | None) -> str:
    return "–" if new is None or old is None else f"{new - old:+.4f}"


def idle_cores(window: float = 1.0) -> int:
    """Cores not busy with other work at the start (at least one). On a shared machine fewer threads than cores run
    faster: with the load average at twice the 2 cores, one thread trained 4x faster than two (thread contention).
    Measured over `window` seconds from /proc/stat: the 1-minute load average still counts a job that just ended
    (it gave one thread to a run that started on an idle machine)."""
    cpus = os.cpu_count() or 1
    busy = _busy_cores(window) if Path("/proc/stat").exists() else os.getloadavg()[0]
    return max(1, min(cpus, cpus - round(busy)))


def _busy_cores(window: float) -> float:
    def times() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all jiffies, idle + iowait

    total, idle = times()
    time.sleep(window)
    total2, idle2 = times()
    return (os.cpu_count() or 1) * (1 - (idle2 - idle) / max(1, total2 - total))


def machine_facts() -> dict[str, Any]:
    """What the timings depend on."""
    return {"cpus": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": "cuda" if torch.cuda.is_available() else "cpu"}


def write_report(run: Run, results: dict[str, EvaluationResults]) -> dict[str, Any]:
    """`report.md` (notice, results, stage contributions, timings, steps) and `results.json`; returns the summary."""
    config, out = run.config, run.config.output
    table = contributions(results)
    summary = {
        "configuration": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
        "facts": run.facts,
        "steps": [dataclasses.asdict(s) for s in run.steps],
        "results": {name: str(out / name.replace(" ", "") / "results.json") for name in results},
        "contributions": table,
        "outputs": {name: str(path) for name, path in run.facts["outputs"].items()},
    }
    timing = "\n".join(f"| {s.name} | {s.seconds:.1f} |" for s in run.steps)
    steps = "\n\n".join(f"{i}. **{s.name}**\n\n   ```\n   {s.how}\n   ```" for i, s in enumerate(run.steps, start=1))
    outputs = "\n".join(f"- {name}: `{path}`" for name, path in run.facts["outputs"].items())
    report = f"""# vip5-demo report

{run.facts['notice']}

## Results

Test split, first {config.eval_users or 'all'} users per template ({', '.join(run.facts['templates'])}); stage 1 is
evaluated on text-only prompts (as it was trained), stage 2 with image tokens. Ranking metrics are shares in [0, 1],
text metrics percentages. Protocols: `full_ranking` / `scoring` rank every item / candidate by exact likelihood,
`constrained` is beam search over existing ids, `paper` the original free beam search (greedy text for explanation).

{results_markdown(results)}
## What each stage contributed

Main protocol of each family (exact rankings, greedy explanations), same examples:

{contribution_markdown(table)}

## Timings

Machine: {run.facts['machine_start']['cpus']} CPUs, load average {run.facts['machine_start']['load_average_1_5_15']}
at the start and {run.facts['machine_end']['load_average_1_5_15']} at the end, torch {run.facts['machine_start']['torch']}
with {run.facts['machine_start']['torch_threads']} threads on {run.facts['machine_start']['device']}.

| step | seconds |
|---|---:|
{timing}

## Outputs

{outputs}

## The steps one by one

{steps}
"""
    write_text_atomic(out / "report.md", report)
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


# ---------------------------------------------------------------- the run


def run_pipeline(config: DemoConfig) -> dict[str, Any]:
    """Run every step with `config.threads` torch threads (restored afterwards); returns the summary written to
    `<output>/results.json`."""
    config.validate()
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads or idle_cores())
    try:
        return _run(config)
    finally:
        torch.set_num_threads(previous)


def _run(config: DemoConfig) -> dict[str, Any]:
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    run = Run(config, facts={"machine_start": machine_facts()})
    source_input = config.input or BEAUTY_SAMPLE
    source = out / "source" / config.domain
    pretrained = config.clip_pretrained or None
    features_root = out / "features" / (config.clip_pretrained or "random-init")
    datasets_dir, processor = out / "datasets", out / "processor"
    stage1 = config.stage1_steps > 0

    run.step(f"P5 source folder from {source_input}", prepare_source, source_input, source, config.users)
    synthetic = []
    if config.images == "synthetic":
        synthetic.append("the item images are **synthetic** (a colour per co-purchase cluster and a shape per item, "
                         "drawn from the ids)")
    if read_p5_domain(source, config.domain).explanations is None:
        if config.images != "synthetic":
            raise ValueError(f"{source_input}: no {EXP_SPLITS}; synthetic explanations describe synthetic images, so "
                             "use --images synthetic or a folder with explanations")
        run.step("synthetic explanation records (exp_splits.pkl)", synthetic_explanations, source, config.domain,
                 config.seed)
        synthetic.append("the explanations are **synthetic** (template sentences naming the item's colour, shape "
                         "and a feature word, with an opinion that follows the star rating)")

    clip_label = f"{config.encoder}, {'random weights' if pretrained is None else pretrained + ' weights'}"
    if config.images == "synthetic":
        run.step(f"CLIP features of the synthetic images ({clip_label})", synthetic_image_features, source,
                 config.domain, out, features_root, config.encoder, pretrained, config.seed)
    elif config.images == "photos":
        run.step(f"CLIP features of the item photos ({clip_label})", photo_features, source, config.domain, out,
                 features_root, config.encoder, pretrained, config.image_dir, config.seed)
    else:
        features_root = config.input / "features"

    dataset = run.step("dataset with image features", build_dataset, source, config.domain, datasets_dir, "images",
                       features_root, config.encoder, config.indexing, config.seed)
    text_dataset = dataset
    if stage1:
        no_images = out / "no-images"  # an empty feature folder: every item is built without an image
        feature_dir(no_images, config.encoder, config.domain).mkdir(parents=True, exist_ok=True)
        text_dataset = run.step("the same dataset with images withheld (stage 1)", build_dataset, source,
                                config.domain, datasets_dir, "text-only", no_images, config.encoder, config.indexing,
                                config.seed)
    run.step("processor (tokenizer: " + (config.model or f"SentencePiece {config.vocab_size} trained on the prompts")
             + ")", make_processor, processor, dataset, config.domain, config.encoder, config.num_image_tokens,
             config.model, config.vocab_size, config.seed)

    results: dict[str, EvaluationResults] = {}
    base = config.model
    outputs: dict[str, Path] = {"report": out / "report.md", "summary": out / "results.json"}
    for stage in (1, 2) if stage1 else (2,):
        train_config = stage_config(config, stage, text_dataset if stage == 1 else dataset, processor, base)
        yaml_path = out / f"stage{stage}.yaml"
        shutil.rmtree(train_config.output_dir, ignore_errors=True)  # a rerun trains afresh (train appends to logs)
        write_text_atomic(yaml_path, yaml.safe_dump(dataclasses.asdict(train_config), sort_keys=False))
        what = "full training of the backbone on text-only prompts" if stage == 1 else \
            "VIP5 adapters with image tokens on the frozen " + ("stage-1 model" if stage1 else (base or "random backbone"))
        trained = run.step(f"stage {stage}: {what} ({train_config.max_steps} steps)",
                           train, train_config, how=f"vip5-train --config {yaml_path}")
        eval_config = evaluate_config(config, stage, trained.folder, train_config.dataset)
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in dataclasses.asdict(eval_config).items()
                         if k in ("model", "dataset", "domain", "image_encoder", "output", "predictions",
                                  "max_examples", "batch_size", "max_input_length", "truncation", "model_card",
                                  "model_id"))
        evaluation = run.step(f"stage {stage}: evaluation (all three families, seen and unseen prompts)",
                              run_evaluation, eval_config, how=f"vip5-evaluate {flags}")
        results[f"stage {stage}"] = evaluation.results
        outputs |= {f"stage {stage} model" if stage == 1 else "stage 2 adapter": trained.folder,
                    f"stage {stage} model card": trained.folder / "README.md",
                    f"stage {stage} training curve": Path(train_config.output_dir) / "training_curve.png",
                    f"stage {stage} results": Path(eval_config.output)}
        base = str(trained.folder)

    notice = SYNTHETIC_NOTICE.format(
        source="the embedded Amazon Beauty sample" if config.input is None else f"`{config.input}`",
        synthetic="; ".join(synthetic) if synthetic else "images and explanations come from the source")
    for stage in results:
        mark_card(outputs[f"{stage} model card"], notice)
    run.facts |= {"notice": notice, "templates": [t for f in REPORT_METRICS for t, _ in templates_of(results, f)],
                  "machine_end": machine_facts(), "outputs": outputs, "synthetic": synthetic}
    summary = write_report(run, results)
    print(f"\nreport: {out / 'report.md'}\n", flush=True)
    print(contribution_markdown(summary["contributions"]))
    return summary
