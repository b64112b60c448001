"""`vip5-train`: VIP5 adapter tuning with Accelerate, on one CPU, one GPU, many GPUs or several nodes.

    accelerate launch -m training.train --config training/configs/vip5_paper.yaml --dataset <folder or Hub id>

The loop is accelerate's `nlp_example.py` shape; everything VIP5-specific sits in small helpers above it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm.auto import tqdm
from transformers import AutoConfig, get_linear_schedule_with_warmup

from data_builders.errors import cli_boundary, removed_on_failure
from data_builders.loading import load_config, load_item_features
from modeling_vip5 import VIP5_MODULES_TO_SAVE, Catalogue, VIP5AdapterConfig, VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.pipeline_vip5 import save_pipeline_files
from modeling_vip5.processing_vip5 import VIP5Processor

from .batching import TaskBatchSampler, rendered_length
from .config import TrainConfig, parse_command_line, resolve_mixed_precision
from .examples import DomainTables, Example, TrainingExamples, evaluation_examples
from .item_init import init_item_embeddings
from .preflight import check_training_run, kept_after_failure
from .push import assemble_repository, push_to_hub
from .tracking import JSONLinesTracker, plot_training_curve

NO_DECAY = ("bias", "LayerNorm.weight")  # the released code's list: T5 norms are named layer_norm, so they get decay
EVAL_TEMPLATES = {"sequential": "A-1", "direct": "B-5", "explanation": "C-1"}


class Collator:
    """Renders examples and encodes them with the processor: the one place that turns fields into tensors."""

    def __init__(self, processor: VIP5Processor, max_input_length: int, truncation: str, max_target_length: int):
        self.processor = processor
        self.max_input_length, self.truncation, self.max_target_length = max_input_length, truncation, max_target_length

    def __call__(self, examples: list[Example]):
        prompts = [self.processor.render(e.template_id, separator=e.separator, **e.fields) for e in examples]
        return self.processor(prompts, max_length=self.max_input_length, truncation=self.truncation,
                              max_target_length=self.max_target_length, return_tensors="pt")


def attach_item_features(processor: VIP5Processor, items, dataset: str, domain: str, encoder: str, **hub_kwargs) -> None:
    """Give the processor the item-feature table (one `[num_items + 1, dim]` array, memory-mapped from the dataset)
    and the photo mask of the `items` config."""
    features = load_item_features(dataset, encoder, domain=domain, **hub_kwargs)
    if int(max(items["item_id"])) >= len(features):
        raise ValueError(f"{dataset}: the {encoder} feature table has {len(features)} rows but item ids go up to "
                         f"{max(items['item_id'])}; rebuild the features (`vip5-data extract-features`)")
    has_image = np.zeros(len(features), dtype=bool)
    has_image[np.asarray(items["item_id"])] = np.asarray(items["has_image"])
    processor.feature_extractor.set_item_features(features, has_image)


def load_data(config: TrainConfig, processor: VIP5Processor) -> tuple[TrainingExamples, list[Example]]:
    """Training examples of the task mix and a fixed validation sample; item features go into the processor."""
    sequential = load_config(config.dataset, config.domain, "sequential")
    items = load_config(config.dataset, config.domain, "items", split="train")
    users = _optional(config, "users", split="train")
    explanation = _optional(config, "explanation") if "explanation" in config.tasks else None
    if config.max_users:
        keep = set(sequential["train"]["user_id"][: config.max_users])
        sequential = sequential.filter(lambda row: row["user_id"] in keep)
        if explanation is not None:
            explanation = explanation.filter(lambda row: row["user_id"] in keep)
    attach_item_features(processor, items, config.dataset, config.domain, config.image_encoder)

    tables = DomainTables.from_datasets(sequential, users, items)
    seen = {task: [t.id for t in processor.templates.values() if t.task == task and t.seen] for task in config.tasks}
    train = TrainingExamples(tables, seen, explanation["train"] if explanation is not None else None, config.seed,
                             config.sequential_per_user, config.direct_per_user,
                             sequential_targets=config.sequential_targets, max_history=config.max_history,
                             direct_positives=config.direct_positives,
                             direct_negatives=config.direct_negatives)
    if len(train) == 0:
        raise ValueError(f"{config.dataset}: no training examples for tasks {config.tasks} (empty train splits?)")
    validation: list[Example] = []
    per_task = max(1, config.eval_examples // len(config.tasks))
    for task in config.tasks:
        rows = {"sequential": sequential, "direct": _optional(config, "direct"), "explanation": explanation}[task]
        if rows is not None and "validation" in rows:
            split = rows["validation"].select(range(min(per_task, len(rows["validation"]))))
            validation += evaluation_examples(task, EVAL_TEMPLATES[task], split, tables, config.seed)
    return train, validation


def _optional(config: TrainConfig, name: str, split: str | None = None):
    """A dataset config that a build may lack (users without names, domains without reviews)."""
    try:
        return load_config(config.dataset, config.domain, name, split=split)
    except ValueError as error:  # datasets: "BuilderConfig ... not found"
        if "not found" in str(error).lower():
            return None
        raise


def build_base_model(config: TrainConfig, processor: VIP5Processor) -> tuple[VIP5ForConditionalGeneration, bool]:
    """The VIP5 base model: a VIP5 folder / Hub id, a T5 checkpoint or a fresh config. The flag says whether it is new
    (then it must be saved: its frozen random whole-word and category tables are part of what the adapter tunes)."""
    fe = processor.feature_extractor
    vip5_fields = dict(image_feature_dim=fe.feature_dim, num_image_tokens=fe.num_image_tokens,
                       image_token_id=processor.image_token_id, loss_normalization=config.loss_normalization)
    is_vip5 = bool(config.model) and AutoConfig.from_pretrained(config.model).model_type == "vip5"
    if not config.model:
        model = VIP5ForConditionalGeneration(VIP5Config(**{"vocab_size": len(processor.tokenizer),
                                                           **config.model_config, **vip5_fields}))
    elif is_vip5:
        model = VIP5ForConditionalGeneration.from_pretrained(config.model, loss_normalization=config.loss_normalization)
    else:  # a plain T5 checkpoint fills the backbone; the VIP5 additions start as the original initialises them
        t5_fields = {k: v for k, v in VIP5Config.get_config_dict(config.model)[0].items() if k != "model_type"}
        vip5_config = VIP5Config(**{**t5_fields, **vip5_fields, "vocab_size": max(t5_fields["vocab_size"],
                                                                                  processor.image_token_id + 1)})
        model = VIP5ForConditionalGeneration.from_pretrained(config.model, config=vip5_config)
        model.resize_token_embeddings(len(processor.tokenizer))  # t5-small ships 28 unused rows (spec §1.1)
        model.config.vocab_size = len(processor.tokenizer)
    processor.check_model_config(model.config)
    return model, not is_vip5


def apply_tuning_method(model: VIP5ForConditionalGeneration, config: TrainConfig) -> torch.nn.Module:
    """VIP5 adapters (the paper's trainable set), LoRA with the same modules trained alongside, or full fine-tuning."""
    if config.method == "vip5_adapter":
        return get_peft_model(model, VIP5AdapterConfig(reduction_factor=config.reduction_factor))
    if config.method == "lora":
        return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                target_modules=config.lora_target_modules,
                                                modules_to_save=list(VIP5_MODULES_TO_SAVE)))
    return model


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in params if not any(nd in n for nd in NO_DECAY)], "weight_decay": weight_decay},
            {"params": [p for n, p in params if any(nd in n for nd in NO_DECAY)], "weight_decay": 0.0}]


@torch.no_grad()
def evaluation_loss(model, loader, accelerator: Accelerator) -> float:
    """Mean validation loss over all processes (teacher forcing, the training loss formula)."""
    model.eval()
    losses = [accelerator.gather_for_metrics(model(**batch).loss.detach().reshape(1)) for batch in loader]
    model.train()
    return torch.cat(losses).mean().item()


def save_checkpoint(accelerator: Accelerator, output: Path, step: int, epoch: int, keep: int) -> None:
    """`accelerator.save_state` into a temporary folder renamed when complete, then prune old checkpoints."""
    final, staging = output / f"checkpoint-{step:08d}", output / f".checkpoint-{step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        (staging / "trainer_state.json").write_text(json.dumps({"step": step, "epoch": epoch}))
        staging.rename(final)
        for old in sorted(output.glob("checkpoint-*"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def latest_checkpoint(output: Path) -> Path | None:
    found = sorted(output.glob("checkpoint-*"))
    return found[-1] if found else None


@dataclasses.dataclass
class TrainingResult:
    model: torch.nn.Module  # the trained model (PEFT model or full model), unwrapped
    folder: Path  # adapter (or full model) + processor, ready for `from_pretrained` / the Hub


def train(config: TrainConfig, on_evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None
          ) -> TrainingResult:
    """Run training; returns the trained model and the folder with the adapter (or full model) and processor.
    `on_evaluate(model)` runs beside the validation loss (every `eval_every` steps, the model in eval mode, no grad)
    and its metrics are logged with it: e.g. ranking metrics on validation users, for a curve of HR against steps."""
    output = Path(config.output_dir)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=[JSONLinesTracker(output / "logs")], project_dir=str(output),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(config.seed)
    processor = VIP5Processor.from_pretrained(config.processor)
    train_examples, validation = load_data(config, processor)  # errors surface here, before any training
    base, new_base = build_base_model(config, processor)
    if config.item_embedding_init:
        count = init_item_embeddings(base, processor.tokenizer, train_examples.tables.train_sequences,
                                     train_examples.tables.item_ids, config.seed)
        accelerator.print(f"item embeddings: {count} single-token item ids start from the training co-purchase graph")
    base_source = str(output / "base-model") if new_base else config.model
    if new_base and config.method != "full" and accelerator.is_main_process:
        base.save_pretrained(base_source)
    base.name_or_path = base.config._name_or_path = base_source  # PEFT records it as the adapter's base model
    model = apply_tuning_method(base, config)
    if config.compile:  # in place (`nn.Module.compile`): parameter names and checkpoints stay those of eager runs
        model.compile()
    collate = Collator(processor, config.max_input_length, config.truncation, config.max_target_length)
    if config.batching != "random":  # one family per batch: far less padding (training/batching.py)
        length = rendered_length(train_examples, processor) if config.batching == "task_length" else None
        batches = TaskBatchSampler(train_examples, config.per_device_batch_size, config.seed, length=length)
        train_loader = torch.utils.data.DataLoader(train_examples, batch_sampler=batches, collate_fn=collate,
                                                   num_workers=config.num_workers)
    else:
        train_loader = torch.utils.data.DataLoader(train_examples, batch_size=config.per_device_batch_size,
                                                   shuffle=True, collate_fn=collate, num_workers=config.num_workers)
    eval_loader = torch.utils.data.DataLoader(validation, batch_size=config.per_device_batch_size, collate_fn=collate)
    optimizer = torch.optim.AdamW(optimizer_groups(model, config.weight_decay), lr=config.learning_rate,
                                  eps=config.adam_epsilon)
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / config.gradient_accumulation_steps)
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler)
    accelerator.init_trackers("vip5", config=_flat(dataclasses.asdict(config)))

    step, start_epoch, skip = 0, 0, 0
    resume = latest_checkpoint(output) if config.resume_from == "latest" else config.resume_from
    if resume:
        accelerator.load_state(str(resume))
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        step = state["step"]
        start_epoch, skip = divmod(step * config.gradient_accumulation_steps, len(train_loader))
        accelerator.print(f"resumed from {resume} at step {step}")

    model.train()
    window_start, window_examples = time.perf_counter(), 0
    progress = tqdm(total=total_steps, initial=step, desc="training", unit="step",
                    disable=not accelerator.is_local_main_process)
    for epoch in range(start_epoch, config.epochs):
        train_examples.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        skip_batches, skip = skip, 0
        for batch_index, batch in enumerate(loader, start=skip_batches):
            # Dropout draws from a seed per (micro-batch, process): a resumed run repeats an uninterrupted one exactly,
            # whatever else consumed random numbers, and processes do not share dropout masks.
            micro_batch = epoch * len(train_loader) + batch_index
            torch.manual_seed(config.seed + 7919 * (micro_batch * accelerator.num_processes + accelerator.process_index))
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            window_examples += batch["input_ids"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(1)
            if step % config.log_every == 0:
                elapsed = time.perf_counter() - window_start
                per_process = accelerator.gather(loss.detach().reshape(1)).tolist()
                progress.set_postfix(loss=f"{sum(per_process) / len(per_process):.4f}")
                accelerator.log({"loss": sum(per_process) / len(per_process), "loss_per_process": per_process,
                                 "learning_rate": scheduler.get_last_lr()[0], "epoch": epoch,
                                 "examples_per_second": window_examples / elapsed}, step=step)
                window_start, window_examples = time.perf_counter(), 0
            if config.eval_every and step % config.eval_every == 0:
                accelerator.log({"eval_loss": evaluation_loss(model, eval_loader, accelerator)}
                                | _extra_evaluation(model, accelerator, on_evaluate), step=step)
            if config.save_every and step % config.save_every == 0:
                save_checkpoint(accelerator, output, step, epoch, config.keep_checkpoints)
            if step >= total_steps:
                break
        if not config.eval_every:
            accelerator.log({"eval_loss": evaluation_loss(model, eval_loader, accelerator)}, step=step)
        if not config.save_every:
            save_checkpoint(accelerator, output, step, epoch, config.keep_checkpoints)
        if step >= total_steps:
            break

    progress.close()
    accelerator.wait_for_everyone()
    final = output / ("adapter" if isinstance(accelerator.unwrap_model(model), PeftModel) else "model")
    accelerator.unwrap_model(model).save_pretrained(final, is_main_process=accelerator.is_main_process,
                                                    state_dict=accelerator.get_state_dict(model))
    if accelerator.is_main_process:
        processor.save_pretrained(final)
        # the item catalogue and the pipeline code: `pipeline("vip5-recommendation", model=final)` needs nothing else
        save_pipeline_files(final, Catalogue.from_dataset(config.dataset, config.domain, config.image_encoder))
        (output / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        plot_training_curve(output / "logs" / "log.jsonl", output / "training_curve.png")
        if config.push_to_hub:
            push_to_hub(assemble_repository(output, final, base_source, config.push_to_hub,
                                            dataclasses.asdict(config)), config.push_to_hub)
    accelerator.end_training()
    return TrainingResult(accelerator.unwrap_model(model), final)


def _extra_evaluation(model, accelerator: Accelerator, on_evaluate) -> dict[str, float]:
    if on_evaluate is None:
        return {}
    model.eval()
    with torch.no_grad():
        metrics = on_evaluate(accelerator.unwrap_model(model))
    model.train()
    return metrics


def _flat(values: dict) -> dict:
    """Tracker configs take scalars: lists and dicts become JSON strings."""
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in values.items()}


@cli_boundary("vip5-train")
def main(argv: list[str]) -> None:
    """Settings, then the output folder, then local inputs, then Hub ids, all before anything is loaded; a failed run
    leaves nothing behind but complete checkpoints (which `--resume-from latest` continues)."""
    config, options = parse_command_line(argv)
    if int(os.environ.get("RANK", "0")):  # another process of a distributed run: the main one owns the output folder
        check_training_run(config, output_dir=False)
        train(config)
        return
    check_training_run(config, overwrite=options.overwrite)
    output = Path(config.output_dir)
    with removed_on_failure(output, keep=kept_after_failure(output)):
        train(config)


if __name__ == "__main__":
    sys.exit(main())
