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
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from data_builders.atomic import write_text_atomic
from data_builders.features import feature_dir
from data_builders.p5_reader import (
    EXP_SPLITS,
    read_p5_domain,
)
from data_builders.sample import BEAUTY_SAMPLE
from training.config import TrainConfig
from training.evaluate import EvaluateConfig, run_evaluation
from training.results import EvaluationResults
from training.train import train

from .config import (
    REPORT_METRICS,
    SYNTHETIC_NOTICE,
    DemoConfig,
)
from .probe import RankingProbe
from .record import Run
from .report import SHUFFLED, contribution_markdown, plot_learning_curve, templates_of, write_report
from .steps import (
    build_dataset,
    curve_config,
    evaluate_config,
    make_processor,
    mark_card,
    photo_features,
    popularity_drift,
    prepare_source,
    stage_phases,
    synthetic_explanations,
    synthetic_image_features,
)


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


# ---------------------------------------------------------------- the run


class ThreadPolicy:
    """Torch threads for the next piece of work, re-measured before every step and at every learning-curve point:
    a moment's load at the start no longer decides the whole run (a one-second blip once gave a run one thread for
    its whole life, 838 s instead of 303 s for stage 1), and a run that meets a busy machine later gives way
    (two threads on a core another process is using spin against it: five times slower than one thread)."""

    def __init__(self, fixed: int = 0, window: float = 0.5):
        self.fixed, self.window, self.chosen = fixed, window, []

    def update(self) -> int:
        threads = self.fixed or idle_cores(self.window)
        torch.set_num_threads(threads)
        self.chosen.append(threads)
        return threads


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run every step (threads as `ThreadPolicy` chooses, restored afterwards); returns the summary written to
    `<output>/results.json`."""
    config.validate()
    previous = torch.get_num_threads()
    try:
        return _run(config, ThreadPolicy(config.threads))
    finally:
        torch.set_num_threads(previous)


def _run(config: DemoConfig, threads: ThreadPolicy) -> dict[str, Any]:
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    threads.update()
    run = Run(config, facts={"machine_start": machine_facts()}, before_step=threads.update)
    source_input = config.input or BEAUTY_SAMPLE
    source = out / "source" / config.domain
    pretrained = config.clip_pretrained or None
    features_root = out / "features" / (config.clip_pretrained or "random-init")
    datasets_dir, processor = out / "datasets", out / "processor"
    stage1 = bool(config.sequential_steps or config.stage1_steps)

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

    run.facts["drift"] = popularity_drift(dataset, config.domain)
    results: dict[str, EvaluationResults] = {}
    base = config.model
    outputs: dict[str, Path] = {"report": out / "report.md", "summary": out / "results.json",
                                "learning curve": out / "learning_curve.png"}
    curves: list[tuple[str, Path]] = []
    for stage in (1, 2) if stage1 else (2,):
        for train_config in stage_phases(config, stage, text_dataset if stage == 1 else dataset, processor, base):
            folder = Path(train_config.output_dir)
            yaml_path = out / f"{folder.name}.yaml"
            shutil.rmtree(folder, ignore_errors=True)  # a rerun trains afresh (train appends logs)
            write_text_atomic(yaml_path, yaml.safe_dump(dataclasses.asdict(train_config), sort_keys=False))
            probe = RankingProbe(curve_config(config, train_config)) if train_config.eval_every else None
            trained = run.step(f"{folder.name}: {phase_description(train_config)} ({train_config.max_steps} steps)",
                               train, train_config, how=f"vip5-train --config {yaml_path}",
                               on_evaluate=probed(probe, threads))
            curves.append((folder.name, folder / "logs" / "log.jsonl"))
            outputs[f"{folder.name} training curve"] = folder / "training_curve.png"
            base = str(trained.folder)
            run.facts.setdefault("floors", probe.floors if probe else {})
        evaluations = [evaluate_config(config, stage, trained.folder, train_config.dataset)]
        if stage == 2:  # the same model and prompts with image tokens that describe other items
            evaluations.append(evaluate_config(config, stage, trained.folder, train_config.dataset, "shuffled"))
        for eval_config in evaluations:
            label = SHUFFLED if eval_config.image_features == "shuffled" else f"stage {stage}"
            evaluation = run.step(f"{label}: evaluation on {config.eval_users or 'all'} test users",
                                  run_evaluation, eval_config, how=evaluate_command(eval_config))
            results[label] = evaluation.results
        outputs |= {f"stage {stage} model" if stage == 1 else "stage 2 adapter": trained.folder,
                    f"stage {stage} model card": trained.folder / "README.md",
                    f"stage {stage} results": Path(evaluations[0].output)}

    notice = SYNTHETIC_NOTICE.format(
        source="the embedded Amazon Beauty sample" if config.input is None else f"`{config.input}`",
        synthetic="; ".join(synthetic) if synthetic else "images and explanations come from the source")
    for stage in ("stage 1", "stage 2"):
        if f"{stage} model card" in outputs:
            mark_card(outputs[f"{stage} model card"], notice)
    plot_learning_curve(curves, run.facts["floors"], outputs["learning curve"])
    app = (f"vip5-app --model {trained.folder} --dataset {dataset}"
           + (f" --images {out / 'item-images'}" if (out / "item-images").is_dir() else ""))
    run.facts |= {"notice": notice, "templates": [t for f in REPORT_METRICS for t, _ in templates_of(results, f)],
                  "machine_end": machine_facts(), "outputs": outputs, "synthetic": synthetic, "app": app,
                  "threads_chosen": threads.chosen}
    summary = write_report(run, results)
    print(f"\nreport: {out / 'report.md'}\n", flush=True)
    print(contribution_markdown(summary["contributions"]))
    print(f"\nlook at the recommendations in a browser (pip install -e '.[app]' first):\n  {app}\n", flush=True)
    return summary


def probed(probe: RankingProbe | None, threads: ThreadPolicy):
    """The training callback: re-check the threads, then the learning-curve point."""
    if probe is None:
        return None

    def on_evaluate(model) -> dict[str, float]:
        threads.update()
        return probe(model)
    return on_evaluate


def phase_description(config: TrainConfig) -> str:
    what = {"full": "full training", "vip5_adapter": "VIP5 adapters with image tokens",
            "lora": "LoRA"}[config.method]
    return f"{what} on {', '.join(config.tasks)} prompts"


def evaluate_command(config: EvaluateConfig) -> str:
    """The `vip5-evaluate` command line of an evaluation configuration (its non-default settings)."""
    defaults = EvaluateConfig(model="", dataset="")
    flags = []
    for key, value in dataclasses.asdict(config).items():
        if value == getattr(defaults, key):
            continue
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, list):
            flags.append(f"{flag} {' '.join(map(str, value))}")
        elif isinstance(value, bool):
            flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            flags.append(f"{flag} {value}")
    return "vip5-evaluate " + " ".join(flags)
