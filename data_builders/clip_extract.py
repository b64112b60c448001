"""CLIP image features with open_clip, written in the P5/VIP5 layout (`features.feature_dir`), one `.npy` per item.

Raw (unnormalised) `encode_image` outputs, as the original features are. Resumable: every feature file is written
atomically, a rerun skips the items that already have one, and the folder carries an `EXTRACTION_INCOMPLETE` marker
until a run finishes, so an interrupted extraction is never mistaken for a complete one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .atomic import TMP_PREFIX, write_text_atomic
from .features import ENCODERS, INCOMPLETE_MARKER, MISSING_POLICIES, check_encoder, feature_dir, save_feature
from .images import ImageFetcher

REPORT = "extraction_report.json"


@dataclass
class ExtractionReport:
    encoder: str
    items: int
    extracted: int = 0
    already_done: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # ASIN -> why there is no usable image


def load_clip(
    encoder: str, pretrained: str | None = "openai", device: str = "cpu", cache_dir: str | None = None
) -> tuple[Any, Callable]:
    """`(model, preprocess)` for a VIP5 encoder name. OpenAI weights were trained with QuickGELU, so the activation
    follows the pretrained tag (the plain open_clip configs use GELU); `pretrained=None` gives a random model."""
    import open_clip

    check_encoder(encoder)
    name = ENCODERS[encoder][0]
    quick_gelu = bool(pretrained) and bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, force_quick_gelu=quick_gelu, cache_dir=cache_dir
    )
    return model.eval(), preprocess


def extract_features(
    items: Sequence[tuple[str, str | None]],
    encoder: str,
    features_root: str | Path,
    domain: str,
    fetcher: ImageFetcher,
    *,
    clip: tuple[Any, Callable] | None = None,
    pretrained: str | None = "openai",
    device: str = "cpu",
    batch_size: int = 32,
    workers: int = 8,
    missing_image: str = "zero",
    progress: bool = True,
) -> ExtractionReport:
    """Extract the features of `(asin, image_url)` items that do not have one yet. With `missing_image="zero"` an
    item without a usable image is only counted (the build gives it a zero row and `has_image = False`); with
    `"error"` it stops the run."""
    import torch

    if missing_image not in MISSING_POLICIES:
        raise ValueError(f"missing-image policy must be one of {MISSING_POLICIES}, got {missing_image!r}")
    dim = check_encoder(encoder)
    directory = feature_dir(features_root, encoder, domain)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / INCOMPLETE_MARKER
    marker.touch()
    for stale in directory.glob(f"{TMP_PREFIX}*"):  # half-written files of a killed run
        stale.unlink()
    done = {path.stem for path in directory.glob("*.npy")}
    todo = [(asin, url) for asin, url in items if asin not in done]
    report = ExtractionReport(encoder=encoder, items=len(items), already_done=len(items) - len(todo))
    if todo:
        model, preprocess = clip if clip is not None else load_clip(encoder, pretrained, device)
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            tqdm(total=len(todo), desc=f"{encoder} features", unit="item", disable=not progress) as bar,
        ):
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                results = list(pool.map(lambda item: fetcher.fetch(*item), batch))
                usable = []
                for (asin, _), result in zip(batch, results, strict=True):
                    if result.image is None:
                        if missing_image == "error":
                            raise ValueError(f"item {asin} has no usable image: {result.problem}")
                        report.missing[asin] = result.problem
                    else:
                        usable.append((asin, preprocess(result.image)))
                if usable:
                    with torch.no_grad():
                        pixels = torch.stack([pixels for _, pixels in usable]).to(device)
                        embeddings = model.encode_image(pixels).float().cpu().numpy()
                    if embeddings.shape[1] != dim:
                        raise ValueError(f"{encoder} model returned {embeddings.shape[1]} dims, expected {dim}")
                    for (asin, _), vector in zip(usable, embeddings, strict=True):
                        save_feature(directory / f"{asin}.npy", vector)
                    report.extracted += len(usable)
                bar.update(len(batch))
    write_text_atomic(directory / REPORT, json.dumps(asdict(report), indent=2, sort_keys=True) + "\n")
    marker.unlink()
    return report
