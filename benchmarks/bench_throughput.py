"""Training throughput at t5-small geometry on real batches (issue 16): the original way against this project's best.

    python benchmarks/bench_throughput.py --dataset vip5-demo-output/datasets/images-<digest> \
        --processor vip5-demo-output/processor [--examples 256] [--batch-size 8] [--memory] [--json results.json]
    python benchmarks/bench_throughput.py --fixed-length 256    # attention paths and compile, fixed-length batch

Model: `VIP5Config()` (t5-small geometry: d 512, d_ff 2048, 6 + 6 layers, 8 heads, vocabulary 32,100; ViT-B/32
512-dim features, k = 2), random weights, VIP5 adapters (reduction factor 8), dropout 0.1, AdamW as `vip5-train` sets
it up. Data: a fixed sample of `--examples` prompts of the paper's task mix (sequential + direct + explanation, in the
mix's proportions) from the dataset built by `vip5-demo` (`bench_batching.py`'s data), collated before timing. Every
variant trains its own copy of the same initial model on exactly these examples, once each, batched its own way:

* original: fp32, random batches of the mix padded to the longest, T5's eager attention, torch's default AdamW (as
  the released code ran it);
* random bf16, task bf16 (`batching: task`), task_length bf16: one lever added at a time, with plain SDPA attention
  (the project's attention before issue 16);
* best: bf16 autocast, one task family per batch grouped by length (`batching: task_length`), VIP5's default
  attention (`vip5_sdpa`: T5's own formula where SDPA would fall back to its unfused fp32 kernel), fused AdamW.

The variants alternate step by step (A, B, C, A, B, C, ...) so the load of other jobs hits all alike; one thread.
Examples per second = examples / the sum of step times (forward, backward, clipping, optimizer step). MFU counts the
FLOPs of the real (non-pad) tokens only: `FlopCounterMode` counts a forward + backward at batch 1 for several
(input, target, image rows) sizes, a least-squares fit gives the exact polynomial, summed over each batch's examples;
it is divided by CPU time and by the `torch.mm` peak measured in the same run (before and after). Peak memory: each
variant in a fresh subprocess on the longest batch of the sample (growth of the resident high-water mark `VmHWM`).
The loss: the mean training loss over each half of the sample, and the loss of all variants on the same held-out
examples after training (fp32, dropout off); variants that see the same batches in the same order are compared step
by step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_batching import batches
from bench_training import matmul_worker, synthetic_batch
from torch.utils.flop_counter import FlopCounterMode

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.processing_vip5 import VIP5Processor
from training.batching import TaskBatchSampler, rendered_length
from training.config import TrainConfig
from training.train import Collator, apply_tuning_method, load_data, optimizer_groups


@dataclasses.dataclass(frozen=True)
class Variant:
    batching: str  # random | task | task_length
    precision: str  # fp32 | bf16
    fused: bool = False  # AdamW(fused=True)
    attention: str | None = None  # None: the model's default (`vip5_sdpa`)


VARIANTS = {
    "original": Variant("random", "fp32", attention="eager"),  # T5's eager attention, as transformers 4.17 ran it
    "random bf16": Variant("random", "bf16", attention="sdpa"),  # the attention of this project before issue 16
    "task bf16": Variant("task", "bf16", attention="sdpa"),
    "task_length bf16": Variant("task_length", "bf16", attention="sdpa"),
    "best": Variant("task_length", "bf16", fused=True),
}


class Sample(torch.utils.data.Dataset):
    """A fixed subset of the epoch-0 examples, families in consecutive ranges (`counts`), for `TaskBatchSampler`."""

    def __init__(self, examples, indices: dict[str, list[int]]):
        self.examples, self.indices = examples, [i for family in indices.values() for i in family]
        self.counts, self.epoch = {family: len(found) for family, found in indices.items()}, 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.examples[self.indices[index]]


def stratified(examples, size: int, rng: np.random.Generator, skip: set[int]) -> dict[str, list[int]]:
    """`size` example indices in the mix's proportions, none of `skip`."""
    chosen, start = {}, 0
    for family, count in examples.counts.items():
        wanted = round(size * count / len(examples))
        pool = [i for i in start + rng.permutation(count) if i not in skip]
        chosen[family] = sorted(int(i) for i in pool[:wanted])
        start += count
    return chosen


def build(processor: VIP5Processor, variant: Variant | None, seed: int = 0):
    """The t5-small-geometry adapter model (same weights for the same seed) and its optimizer."""
    fe = processor.feature_extractor
    torch.manual_seed(seed)
    attention = {"attn_implementation": variant.attention} if variant and variant.attention else {}
    config = VIP5Config(image_feature_dim=fe.feature_dim, num_image_tokens=fe.num_image_tokens,
                        image_token_id=processor.image_token_id, **attention)  # vocabulary 32,100 (t5-small's)
    train_config = TrainConfig()
    model = apply_tuning_method(VIP5ForConditionalGeneration(config), train_config).train()
    optimizer = torch.optim.AdamW(optimizer_groups(model, train_config.weight_decay), lr=train_config.learning_rate,
                                  eps=train_config.adam_epsilon, fused=bool(variant and variant.fused))
    return model, optimizer


def train_step(model, optimizer, batch: dict, precision: str) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), TrainConfig().max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def flop_polynomial(model, image_token_id: int, feature_dim: int) -> np.ndarray:
    """Coefficients of FLOPs(n input, m target, p image rows) of one example's forward + backward, over the terms
    (n, n², m, m², n·m, p): exact, since every matmul is linear or bilinear in these sizes."""
    sizes = [(n, m, p) for n in (16, 24, 40) for m in (2, 3, 5) for p in (0, 3)]
    rows, flops = [], []
    for n, m, p in sizes:
        ids = torch.randint(100, 1000, (1, n))
        ids[0, : 2 * p] = image_token_id
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(100, 1000, (1, m)),
                     image_features=torch.randn(1, p, feature_dim), image_features_mask=torch.ones(1, p, dtype=bool))
        with FlopCounterMode(display=False) as counter:
            model(**batch).loss.backward()
        model.zero_grad()
        rows.append(terms(n, m, p))
        flops.append(counter.get_total_flops())
    coefficients, *_ = np.linalg.lstsq(np.array(rows, dtype=float), np.array(flops, dtype=float), rcond=None)
    assert np.allclose(np.array(rows) @ coefficients, flops, rtol=1e-6), "FLOPs are not the expected polynomial"
    return coefficients


def terms(n: int, m: int, p: int) -> list[int]:
    return [n, n * n, m, m * m, n * m, p]


def batch_stats(batch: dict, coefficients: np.ndarray) -> dict:
    """Real and padded input tokens, and the FLOPs of the real tokens and of the padded batch."""
    n = batch["attention_mask"].sum(dim=1).tolist()
    m = (batch["labels"] != -100).sum(dim=1).tolist()
    p = batch["image_features_mask"].sum(dim=1).tolist() if "image_features_mask" in batch else [0] * len(n)
    real = sum(float(np.dot(terms(*sizes), coefficients)) for sizes in zip(n, m, p, strict=True))
    rows = batch["image_features"].shape[1] if "image_features" in batch else 0
    shape = (batch["input_ids"].shape[1], batch["labels"].shape[1], rows)
    return dict(examples=len(n), real=sum(n), total=batch["attention_mask"].numel(), real_flops=real,
                padded_flops=len(n) * float(np.dot(terms(*shape), coefficients)))


@torch.no_grad()
def held_out_loss(model, batches_: list[dict]) -> float:
    """Mean over examples of the training loss formula, fp32, dropout off."""
    model.eval()
    total = sum(model(**batch).loss.item() * batch["input_ids"].shape[0] for batch in batches_)
    model.train()
    return total / sum(batch["input_ids"].shape[0] for batch in batches_)


def prepare(args: argparse.Namespace):
    """The processor, the sample's examples batched each variant's way (collated), and the held-out batches."""
    config = TrainConfig(dataset=args.dataset, domain=args.domain, processor=args.processor)  # the paper's task mix
    processor = VIP5Processor.from_pretrained(args.processor)
    examples, _ = load_data(config, processor)
    rng = np.random.default_rng(args.seed)
    sample = Sample(examples, stratified(examples, args.examples, rng, set()))
    held_out = Sample(examples, stratified(examples, args.held_out, rng, set(sample.indices)))
    collate = Collator(processor, args.max_input_length, "right", config.max_target_length)
    ways = {"random": batches(sample, args.batch_size, "random", args.seed),
            "task": batches(sample, args.batch_size, "task", args.seed),
            "task_length": list(TaskBatchSampler(sample, args.batch_size, args.seed,
                                                 length=rendered_length(sample, processor)))}
    collated = {way: [collate([sample[i] for i in batch]) for batch in found] for way, found in ways.items()}
    held = [collate([held_out[i] for i in batch]) for batch in TaskBatchSampler(held_out, args.batch_size, args.seed)]
    return processor, sample, collated, held


def memory_worker(args: argparse.Namespace, name: str) -> dict:
    """Peak-memory growth of one variant's training steps on the longest batch of the sample, alone in a process."""
    torch.set_num_threads(1)
    processor, _, collated, _ = prepare(args)
    batch = max(collated["random"], key=lambda b: b["attention_mask"].numel())
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: data preparation is not measured
    baseline = high_water_mb()
    model, optimizer = build(processor, VARIANTS[name])
    for _ in range(2):
        train_step(model, optimizer, batch, VARIANTS[name].precision)
    return dict(memory_mb=high_water_mb() - baseline, shape=list(batch["input_ids"].shape))


def high_water_mb() -> float:
    """This process's peak resident memory since the last reset (`VmHWM`; `ru_maxrss` would include the peak of
    the parent, which a child inherits across `exec`)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def measure_memory(name: str) -> dict:
    argv = [a for a in sys.argv[1:] if a != "--memory"]
    done = subprocess.run([sys.executable, __file__, *argv, "--memory-worker", name], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"memory worker {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peaks(seconds: float) -> dict[str, float]:
    return {dtype: matmul_worker(dtype, 4096, seconds, 1)["flops_per_cpu_s"] for dtype in ("fp32", "bf16")}


def run(args: argparse.Namespace) -> dict:
    """Every variant over the whole sample, step by step in turn; returns the per-step records."""
    processor, sample, collated, held = prepare(args)
    fe = processor.feature_extractor
    flop_model, _ = build(processor, None)
    coefficients = flop_polynomial(flop_model, processor.image_token_id, fe.feature_dim)
    del flop_model
    peak_before = peaks(args.peak_seconds)
    runs = {name: build(processor, variant) for name, variant in VARIANTS.items()}
    initial_loss = held_out_loss(runs["original"][0], held)
    for name, (model, optimizer) in runs.items():  # untimed warm-up on held-out batches, then the same start again
        for batch in held[:2]:
            train_step(model, optimizer, batch, VARIANTS[name].precision)
        runs[name] = build(processor, VARIANTS[name])
    records: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    longest = max(len(collated[variant.batching]) for variant in VARIANTS.values())
    for step in range(longest):
        for name, variant in VARIANTS.items():
            found = collated[variant.batching]
            if step >= len(found):
                continue
            torch.manual_seed(args.seed + step)  # the same dropout masks for variants that see the same batch
            start, cpu = time.perf_counter(), time.process_time()
            loss = train_step(*runs[name], found[step], variant.precision)
            records[name].append(dict(seconds=time.perf_counter() - start, cpu=time.process_time() - cpu, loss=loss,
                                      load=os.getloadavg()[0], **batch_stats(found[step], coefficients)))
        if step % 8 == 7:
            print(f"step {step + 1}/{longest}, load {os.getloadavg()[0]:.2f}", flush=True)
    peak_after = peaks(args.peak_seconds)
    return dict(records=records, peak={k: (peak_before[k] + peak_after[k]) / 2 for k in peak_before},
                peaks=[peak_before, peak_after], initial_loss=initial_loss,
                final_loss={name: held_out_loss(model, held) for name, (model, _) in runs.items()},
                memory={name: measure_memory(name) for name in VARIANTS} if args.memory else {},
                counts=sample.counts, held_out=sum(b["input_ids"].shape[0] for b in held))


FIXED = {"bf16, SDPA (before)": {"attention": "sdpa"}, "bf16": {}, "bf16 compiled": {"compile": True},
         "fp32, SDPA (before)": {"attention": "sdpa", "dtype": "fp32"}, "fp32": {"dtype": "fp32"}}


def fixed_length(args: argparse.Namespace) -> None:
    """`bench_training.py`'s fixed-length adapter step (synthetic sequential prompts, batch 8, input `--fixed-length`,
    target 8): plain SDPA against `vip5_sdpa` (fp32 and bf16) and `torch.compile`, steps interleaved; MFU against the
    peaks of this run."""
    batch = synthetic_batch(VIP5Config(), 8, args.fixed_length, 8, torch.Generator().manual_seed(0))
    runs = {}
    for name, options in FIXED.items():
        torch.manual_seed(0)
        config = VIP5Config(**({"attn_implementation": options["attention"]} if "attention" in options else {}))
        model = apply_tuning_method(VIP5ForConditionalGeneration(config), TrainConfig()).train()
        if options.get("compile"):
            model.compile()
        runs[name] = model, torch.optim.AdamW(optimizer_groups(model, 0.01), lr=1e-3, eps=1e-6,
                                              fused=options.get("fused", False))
    dtype = {name: options.get("dtype", "bf16") for name, options in FIXED.items()}
    with FlopCounterMode(display=False) as counter, torch.autocast("cpu", dtype=torch.bfloat16):
        runs["bf16"][0](**batch).loss.backward()  # counted, not trained: every variant starts from the same weights
    runs["bf16"][1].zero_grad()
    for name in FIXED:  # warm-up: compilation (minutes) is not timed
        start = time.perf_counter()
        for _ in range(2):
            train_step(*runs[name], batch, dtype[name])
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
    peak_before = peaks(args.peak_seconds)
    cpu: dict[str, list[float]] = {name: [] for name in FIXED}
    losses: dict[str, list[float]] = {name: [] for name in FIXED}
    for step in range(args.fixed_steps):
        for name in FIXED:
            torch.manual_seed(step)
            start = time.process_time()
            losses[name].append(train_step(*runs[name], batch, dtype[name]))
            cpu[name].append(time.process_time() - start)
    peak_after = peaks(args.peak_seconds)
    peak = {key: (peak_before[key] + peak_after[key]) / 2 for key in peak_before}
    print(f"\nfixed length {args.fixed_length}, batch 8, target 8, adapters, {counter.get_total_flops() / 1e9:.1f} "
          f"GFLOP/step; matmul peak per CPU second fp32 {peak['fp32'] / 1e9:.0f}, bf16 {peak['bf16'] / 1e9:.0f} "
          f"GFLOP/s; load {os.getloadavg()[0]:.2f}")
    print("| variant | CPU s/step (median) | MFU | vs the same precision with SDPA | losses |")
    print("|---|---:|---:|---:|---|")
    for name in FIXED:
        seconds = float(np.median(cpu[name]))
        before = float(np.median(cpu[f"{dtype[name]}, SDPA (before)"]))
        print(f"| {name} | {seconds:.2f} | {counter.get_total_flops() / seconds / peak[dtype[name]]:.1%} | "
              f"{seconds / before:.2f}× | {np.round(losses[name], 3).tolist()} |")


def report(args: argparse.Namespace, result: dict) -> None:
    records, peak = result["records"], result["peak"]
    print(f"\nt5-small geometry, adapters r=8, dropout 0.1; sample {result['counts']} ({args.examples} examples), "
          f"batch {args.batch_size}, max input {args.max_input_length}; 1 thread; matmul peak per CPU second fp32 "
          f"{peak['fp32'] / 1e9:.0f}, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s (before/after: "
          + ", ".join(f"{p['fp32'] / 1e9:.0f}/{p['bf16'] / 1e9:.0f}" for p in result["peaks"]) + ")")
    base = args.examples / sum(r["seconds"] for r in records["original"])
    print("| variant | steps | padding share (all / mean per batch) | examples/s | vs original | MFU real tokens "
          "(all tokens) | train loss 1st / 2nd half | held-out loss | peak memory |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in records.items():
        seconds, cpu = sum(r["seconds"] for r in rows), sum(r["cpu"] for r in rows)
        dtype_peak = peak[VARIANTS[name].precision]
        padding = 1 - sum(r["real"] for r in rows) / sum(r["total"] for r in rows)
        per_batch = np.mean([1 - r["real"] / r["total"] for r in rows])
        half = len(rows) // 2
        losses = [np.average([r["loss"] for r in part], weights=[r["examples"] for r in part])
                  for part in (rows[:half], rows[half:])]
        memory = result["memory"].get(name)
        print(f"| {name} | {len(rows)} | {padding:.1%} / {per_batch:.1%} | {args.examples / seconds:.2f} | "
              f"{args.examples / seconds / base:.2f}× | {sum(r['real_flops'] for r in rows) / cpu / dtype_peak:.1%} "
              f"({sum(r['padded_flops'] for r in rows) / cpu / dtype_peak:.1%}) | {losses[0]:.3f} / {losses[1]:.3f} | "
              f"{result['final_loss'][name]:.3f} | "
              + (f"+{memory['memory_mb']:.0f} MB |" if memory else "– |"))
    print(f"held-out loss before training {result['initial_loss']:.3f} ({result['held_out']} examples); "
          f"load {min(r['load'] for rows in records.values() for r in rows):.2f}-"
          f"{max(r['load'] for rows in records.values() for r in rows):.2f}")
    for first, second in (("original", "random bf16"), ("task_length bf16", "best")):
        a, b = (np.array([r["loss"] for r in records[name]]) for name in (first, second))
        print(f"same batches, {first} vs {second}: step losses {np.round(a[:8], 3).tolist()} vs "
              f"{np.round(b[:8], 3).tolist()} ...; max |difference| {np.abs(a - b).max():.4f}, mean "
              f"{np.mean(b - a):+.4f} over {len(a)} steps")
    if result["memory"]:
        print(f"memory on the longest batch of the sample {result['memory']['original']['shape']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="a dataset built by vip5-demo or vip5-data build")
    parser.add_argument("--processor", help="its processor folder")
    parser.add_argument("--domain", default="beauty")
    parser.add_argument("--examples", type=int, default=256, help="training examples, seen once by every variant")
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-input-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--peak-seconds", type=float, default=3.0)
    parser.add_argument("--memory", action="store_true", help="also measure each variant's peak memory")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--fixed-length", type=int, default=0,
                        help="instead: bf16 eager vs compiled on bench_training.py's fixed-length batch of this input")
    parser.add_argument("--fixed-steps", type=int, default=5)
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.fixed_length:
        fixed_length(args)
        return
    if not (args.dataset and args.processor):
        parser.error("--dataset and --processor are required (unless --fixed-length)")
    if args.memory_worker:
        print(json.dumps(memory_worker(args, args.memory_worker)))
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True)
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    report(args, result)


if __name__ == "__main__":
    main()
