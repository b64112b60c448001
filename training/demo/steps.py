"""The demo's steps, one function each: source folder, synthetic explanations and images, CLIP features, datasets,
processor, and the configurations of the training and evaluation stages. Each is callable on its own (the report
lists the calls)."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from data_builders.atomic import replace_dir, staging_dir, write_text_atomic
from data_builders.build import build_domain
from data_builders.clip_extract import extract_features
from data_builders.features import ENCODERS, feature_dir, save_feature
from data_builders.images import ImageFetcher
from data_builders.loading import load_config
from data_builders.p5_reader import (
    DATAMAPS,
    EXP_SPLITS,
    P5_FILES,
    SEQUENTIAL,
    read_p5_domain,
)
from data_builders.sample.make_sample import dense_sample, read_source, write_p5_files
from data_builders.synthetic import explanation_splits, item_looks, write_exp_splits, write_look_images
from data_builders.writer import README as DATASET_CARD
from modeling_vip5.processing_vip5 import VIP5FeatureExtractor, VIP5Processor
from training.config import TASKS, TrainConfig
from training.evaluate import EvaluateConfig
from training.offline_tokenizer import corpus_lines, domain_prompts, train_t5_tokenizer

from .config import (
    USER_KEYED_FILES,
    DemoConfig,
)

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
    feature copied to every item of that look; `<work>/item-images/<asin>.png` for the app. A randomly initialised CLIP (`pretrained=None`) is seeded by `seed`."""
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
    item_images = work / "item-images"  # what `vip5-app --images` shows: <asin>.png, marked synthetic
    item_images.mkdir(parents=True, exist_ok=True)
    for asin, look in zip(asins, looks, strict=True):
        shutil.copyfile(work / "images" / f"{look.name}.png", item_images / f"{asin}.png")
    write_text_atomic(item_images / "SYNTHETIC", "Synthetic item images drawn by vip5-demo (colour = co-purchase "
                      "cluster of the training interactions, shape = a hash of the ASIN); not product photos.\n")


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


def stage_phases(config: DemoConfig, stage: int, dataset: Path, processor: Path, model: str) -> list[TrainConfig]:
    """The training runs of a stage, each starting from the previous one's model.

    Stage 1 trains the backbone fully on text-only prompts with P5's loss: first sequential prompts alone, one per
    training position (next-item prediction is the slowest family to learn), then sequential and explanation prompts.
    A backbone from scratch starts its item-id embeddings from the training co-purchase graph
    (`training/item_init.py`). Stage 2 tunes VIP5 adapters with image tokens on the frozen stage-1 model, with VIP5's
    loss, on sequential and explanation prompts, and on direct prompts only with `direct_per_user` > 0 (positive: the
    user's latest training purchase). Measured on the embedded sample (docs/benchmarks.md): direct prompts, text-only
    in stage 1 or with images in stage 2, uniform or latest positives, taught the model the items' training
    popularity, which the held-out purchases do not follow (the report's "Reading the baselines"): direct HR@10 fell
    from above the transition floor to below random. Without them the model ranks B-5 candidates from what the
    sequential prompts taught it about each user id.
    """
    common = dict(dataset=str(dataset), domain=config.domain, image_encoder=config.encoder, processor=str(processor),
                  num_image_tokens=config.num_image_tokens, per_device_batch_size=config.batch_size,
                  mixed_precision=config.mixed_precision, epochs=1_000_000, warmup_ratio=0.05,
                  sequential_targets="all", max_history=config.max_history, direct_per_user=config.direct_per_user,
                  batching="task", direct_positives="latest",
                  max_input_length=config.max_input_length, truncation="history", eval_examples=96, seed=config.seed)
    if stage == 2:
        tasks = ["sequential", "explanation"] + (["direct"] if config.direct_per_user else [])
        phases = [("stage2", config.stage2_steps, tasks, "vip5_adapter", config.stage2_learning_rate)]
    else:
        phases = [("stage1-sequential", config.sequential_steps, ["sequential"], "full", config.stage1_learning_rate),
                  ("stage1", config.stage1_steps, ["sequential", "explanation"], "full", config.stage1_learning_rate)]
    configs = []
    for name, steps, tasks, method, learning_rate in phases:
        if not steps:
            continue
        fresh = not model and not configs
        configs.append(TrainConfig(
            **common, model=model, model_config=dict(config.backbone) if fresh else {}, tasks=tasks, method=method,
            loss_normalization="example_mean" if stage == 1 else "paper", learning_rate=learning_rate,
            item_embedding_init="co_purchase" if fresh else "", max_steps=steps, log_every=max(1, steps // 50),
            eval_every=max(1, steps // config.curve_points) if config.curve_points else 0,
            output_dir=str(config.output / name)))
        model = str(config.output / name / ("model" if method == "full" else "adapter"))
    return configs


def evaluate_config(config: DemoConfig, stage: int, model: Path, dataset: Path,
                    image_features: str = "real") -> EvaluateConfig:
    """The exact protocols (`full_ranking`, `scoring`, greedy text) with the baselines: the final model (stage 2) on
    all three families with seen and unseen prompts (A-3, B-5, C-3 / A-9, B-8, C-12), stage 1 on the seen ones; with
    shuffled image features, B-5 alone (the image ablation)."""
    folder = config.output / f"stage{stage}" / ("evaluation" if image_features == "real" else "evaluation-shuffled")
    shuffled = image_features != "real"
    return EvaluateConfig(
        **evaluation_settings(config), model=str(model), dataset=str(dataset),
        tasks=["direct"] if shuffled else list(TASKS),
        templates=["B-5"] if shuffled else ["A-3", "B-5", "C-3"] + (["A-9", "B-8", "C-12"] if stage == 2 else []),
        protocols=["full_ranking", "scoring"], image_features=image_features, baselines=not shuffled,
        output=str(folder / "results.json"), predictions=str(folder / "predictions.jsonl"),
        max_examples=config.eval_users, model_card="" if shuffled else str(model / "README.md"),
        model_id="" if shuffled else f"{config.model_id}-stage{stage}",
    )


def curve_config(config: DemoConfig, model_config: TrainConfig) -> EvaluateConfig:
    """The learning-curve probe: the first `curve_users` validation users of the run's own dataset."""
    return EvaluateConfig(
        **evaluation_settings(config), model=model_config.output_dir, dataset=model_config.dataset,
        processor=model_config.processor, tasks=["sequential", "direct"], split="validation",
        max_examples=config.curve_users)


def evaluation_settings(config: DemoConfig) -> dict[str, Any]:
    """What the final evaluations and the learning curve share: prompts as trained (latest purchases, history cut
    first), the history never recommended."""
    return dict(domain=config.domain, image_encoder=config.encoder, exclude_history=True,
                max_history=config.max_history, batch_size=config.eval_batch_size,
                max_input_length=config.max_input_length, truncation="history", seed=config.seed)


def mark_card(path: Path, notice: str) -> None:
    """Put the demo-data notice right after the metadata block of a model card written from results."""
    metadata, closing, body = path.read_text(encoding="utf-8").partition("\n---\n")
    if not closing:
        raise ValueError(f"{path}: no metadata block (expected a card written by model_cards.model_card)")
    write_text_atomic(path, f"{metadata}{closing}\n{notice}\n{body}")


def popularity_drift(dataset: Path, domain: str) -> dict[str, Any]:
    """How the test purchases sit in the training popularity of the items (the report's reading of the baselines)."""
    sequential = load_config(str(dataset), domain, "sequential")
    counts = Counter(i for h, t in zip(sequential["train"]["history"], sequential["train"]["target"], strict=True)
                     for i in [*h, t])
    items = np.array(sorted(counts, key=counts.get))
    quartile = {int(item): min(3, 4 * rank // len(items)) for rank, item in enumerate(items)}
    targets = [int(t) for t in sequential["test"]["target"]]
    shares = np.bincount([quartile[t] for t in targets if t in quartile], minlength=4) / len(targets)
    return {"test_item_mean_train_count": float(np.mean([counts.get(t, 0) for t in targets])),
            "item_mean_train_count": float(np.mean(list(counts.values()))),
            "test_share_by_popularity_quartile": shares.tolist()}
