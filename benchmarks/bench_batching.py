"""Padding and throughput of real batches: random batches of the paper's task mix (the original) vs one task family per
batch (`batching: task`), measured side by side in one run on a dataset built by `vip5-demo` or `vip5-data build`.

    python benchmarks/bench_batching.py --dataset vip5-demo-output/datasets/images-<digest> \
        --processor vip5-demo-output/processor --steps 30 [--model-config '{"d_model": 512, ...}']

Prints, for each way of batching: the share of padding tokens, the real (non-pad) tokens per batch, and the training
examples per second of adapter tuning (fp32 and bf16 autocast), alternating the ways step by step so that a load on the
machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from peft import get_peft_model

from modeling_vip5 import VIP5AdapterConfig, VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.processing_vip5 import VIP5Processor
from training.batching import TaskBatchSampler
from training.config import TrainConfig
from training.train import Collator, load_data

DEMO_GEOMETRY = {"d_model": 128, "d_kv": 32, "d_ff": 512, "num_layers": 3, "num_decoder_layers": 3, "num_heads": 4}


def batches(examples, size: int, way: str, seed: int) -> list[list[int]]:
    if way == "task":
        return list(TaskBatchSampler(examples, size, seed))
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i : i + size] for i in range(0, len(order), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--processor", required=True)
    parser.add_argument("--domain", default="beauty")
    parser.add_argument("--batch-size", type=int, default=36)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-input-length", type=int, default=1024)
    parser.add_argument("--model-config", type=json.loads, default=DEMO_GEOMETRY)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig(dataset=args.dataset, domain=args.domain, processor=args.processor)  # the paper's task mix
    processor = VIP5Processor.from_pretrained(args.processor)
    examples, _ = load_data(config, processor)
    collate = Collator(processor, args.max_input_length, "right", 64)
    fe = processor.feature_extractor
    model = VIP5ForConditionalGeneration(VIP5Config(vocab_size=len(processor.tokenizer), image_feature_dim=fe.feature_dim,
                                                    num_image_tokens=fe.num_image_tokens,
                                                    image_token_id=processor.image_token_id, **args.model_config))
    model = get_peft_model(model, VIP5AdapterConfig())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ways = {way: batches(examples, args.batch_size, way, config.seed) for way in ("random", "task")}
    stats = {(way, precision): {"examples": 0, "seconds": 0.0, "real": 0, "total": 0}
             for way in ways for precision in ("fp32", "bf16")}
    for step in range(args.steps):
        for way in ways:
            for precision in ("fp32", "bf16"):
                batch = collate([examples[i] for i in ways[way][step % len(ways[way])]])
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                record = stats[way, precision]
                record["seconds"] += time.perf_counter() - start
                record["examples"] += batch["input_ids"].shape[0]
                record["real"] += int(batch["attention_mask"].sum())
                record["total"] += batch["attention_mask"].numel()
    base = stats["random", "fp32"]["examples"] / stats["random", "fp32"]["seconds"]
    print(f"{len(examples)} examples per epoch ({examples.counts}), batch {args.batch_size}, {args.steps} steps each, "
          f"{args.threads} thread(s), model {args.model_config}")
    print("| batching | precision | padding share | real tokens / batch | examples/s | vs random fp32 |")
    print("|---|---|---:|---:|---:|---:|")
    for (way, precision), r in stats.items():
        rate = r["examples"] / r["seconds"]
        print(f"| {way} | {precision} | {1 - r['real'] / r['total']:.1%} | {r['real'] / args.steps:.0f} | {rate:.1f} | "
              f"{rate / base:.2f}× |")


if __name__ == "__main__":
    main()
