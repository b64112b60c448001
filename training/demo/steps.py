"""The demo's steps, one function each: source folder, synthetic explanations and images, CLIP features, datasets,
processor, and the configurations of the training and evaluation stages. Each is callable on its own (the report
lists the calls)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from data_builders.atomic import replace_dir, staging_dir, write_text_atomic
from data_builders.build import build_domain
from data_builders.clip_extract import extract_features
from data_builders.features import ENCODERS, feature_dir, save_feature
from data_builders.images import ImageFetcher
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
from training.config import TrainConfig
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


