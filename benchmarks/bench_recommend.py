"""`pipeline("vip5-recommendation")`: users per second of the three protocols, side by side on the same users.

A vip5-demo-sized VIP5 (the demo's stage-1 backbone geometry, random weights: the cost of each protocol does not
depend on what the weights learned, except for how many steps beam search runs, which item-id length bounds) with a
catalogue of the demo's size (500 items, random ViT-B/32-width features) and the tests' offline tokenizer:

- `constrained`: beam search (20 beams) over the catalogue's prefix trie, then exact scores of the found items;
- `scoring`: exact likelihood of 100 candidates per user;
- `full_ranking`: exact likelihood of every catalogue item.

    python benchmarks/bench_recommend.py [--users 32] [--batch-size 8] [--items 500] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modeling_vip5 import Catalogue, VIP5Config, VIP5ForConditionalGeneration, VIP5Processor
from modeling_vip5.pipeline_vip5 import PROTOCOLS, VIP5RecommendationPipeline
from training.demo.config import DEFAULT_BACKBONE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tokenizer_fixture import build_t5_tokenizer  # noqa: E402  (the tests' offline T5-layout tokenizer)

HISTORY_LENGTH = 8  # about the Beauty median (sequence length 8.9 with the two held-out items)
NUM_CANDIDATES = 100


def build_pipeline(num_items: int, rng: np.random.Generator) -> VIP5RecommendationPipeline:
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_t5_tokenizer(Path(folder))
    processor = VIP5Processor(tokenizer)
    ids = list(range(1, num_items + 1))
    features = rng.normal(size=(num_items + 1, 512)).astype(np.float32)
    catalogue = Catalogue(ids, [f"B{i:09d}" for i in ids], [None] * num_items, [True] * num_items, features,
                          "vitb32", source="synthetic")
    torch.manual_seed(0)
    model = VIP5ForConditionalGeneration(VIP5Config(**DEFAULT_BACKBONE, vocab_size=len(tokenizer),
                                                    image_token_id=processor.image_token_id))
    return VIP5RecommendationPipeline(model=model, processor=processor, catalogue=catalogue, device=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--items", type=int, default=500, help="catalogue size (vip5-demo: 500)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    rng = np.random.default_rng(0)
    pipe = build_pipeline(args.items, rng)
    users = [{"user_id": u, "history": rng.choice(args.items, HISTORY_LENGTH, replace=False) + 1,
              "candidates": rng.choice(args.items, NUM_CANDIDATES, replace=False) + 1} for u in range(args.users)]
    users = [{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in u.items()} for u in users]
    print(f"vip5-demo-sized VIP5 ({DEFAULT_BACKBONE['d_model']}-d, {DEFAULT_BACKBONE['num_layers']}+"
          f"{DEFAULT_BACKBONE['num_decoder_layers']} layers), {args.items} catalogue items, {args.users} users with "
          f"{HISTORY_LENGTH} history items, top {args.top_k}, batches of {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    for protocol in PROTOCOLS:
        pipe(users[: args.batch_size], protocol=protocol, top_k=args.top_k, batch_size=args.batch_size)  # warm-up
        start = time.perf_counter()
        pipe(users, protocol=protocol, top_k=args.top_k, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        what = {"scoring": f"{NUM_CANDIDATES} candidates", "full_ranking": f"all {args.items} items",
                "constrained": "20-beam trie search"}[protocol]
        print(f"{protocol:>13} ({what}): {args.users / seconds:8.1f} users/s ({1000 * seconds / args.users:.1f} "
              "ms/user)")


if __name__ == "__main__":
    main()
