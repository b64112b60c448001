"""A tiny built dataset and processor for training and evaluation tests (P5-format files → `build_domain`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from tokenizer_fixture import build_t5_tokenizer

TINY_MODEL = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
              "dropout_rate": 0.1}


def write_p5_domain(raw: Path, num_users: int = 16, catalogue: int = 130, seed: int = 0) -> None:
    """sequential_data.txt + datamaps.json (items numbered by first appearance, as P5) + one CLIP-sized .npy per item."""
    rng = random.Random(seed)
    order: dict[int, int] = {}
    lines = []
    for user in range(1, num_users + 1):
        items = [order.setdefault(i, len(order) + 1) for i in rng.sample(range(catalogue), rng.randint(5, 8))]
        lines.append(" ".join(map(str, [user, *items])))
    for raw_item in range(catalogue):  # every catalogue item occurs somewhere, so 99 negatives always exist
        if raw_item not in order:
            lines[raw_item % num_users] += f" {order.setdefault(raw_item, len(order) + 1)}"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    user2id = {f"U{u:04d}": str(u) for u in range(1, num_users + 1)}
    item2id = {f"B{i:08d}": str(i) for i in range(1, len(order) + 1)}
    maps = {"user2id": user2id, "item2id": item2id, "id2user": {v: k for k, v in user2id.items()},
            "id2item": {v: k for k, v in item2id.items()}}
    (raw / "datamaps.json").write_text(json.dumps(maps))
    features = raw / "features" / "vitb32_features" / "toy"
    features.mkdir(parents=True, exist_ok=True)
    for asin in item2id:
        np.save(features / f"{asin}.npy", np.random.default_rng(int(asin[1:])).normal(size=512).astype(np.float32))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict[str, Path]:
    """`{"dataset": built folder, "processor": saved VIP5Processor}` for domain "toy"."""
    from data_builders.build import build_domain
    from modeling_vip5.processing_vip5 import VIP5Processor

    root = tmp_path_factory.mktemp("tiny_dataset")
    write_p5_domain(root / "raw")
    build_domain("p5", root / "raw", "toy", root / "dataset", encoders=("vitb32",))
    VIP5Processor(build_t5_tokenizer(root / "tokenizer")).save_pretrained(root / "processor")
    return {"dataset": root / "dataset", "processor": root / "processor"}
