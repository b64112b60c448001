"""Training speed, memory and FLOP utilisation of a t5-small-size VIP5: adapter tuning against full fine-tuning.

Model: `VIP5Config()` (t5-small geometry, vocabulary 32,100, ViT-B/32 512-dim features, k = 2) with random weights (the
cost does not depend on them), tuned as `training/train.py` tunes it (`apply_tuning_method`, `optimizer_groups`, AdamW
with the paper's settings, dropout on). Batches are synthetic sequential prompts of exactly the input length:
instruction words, then items as `<2 id pieces> <extra_id_0>×k ,` with one 512-dim feature row each, then the
question and `</s>`; whole-word and category ids as the processor makes them; 8 target tokens.

A step is what the training loop does per batch: forward (inside `torch.autocast("cpu", bfloat16)` for bf16, as
accelerate's `mixed_precision="bf16"` does), backward, gradient clipping, AdamW step, zero_grad. Step time is the median over `--steps` steps after `--warmup`
untimed ones, in wall time and in the process's CPU time: with one thread, CPU time leaves out the time spent waiting
for a core held by other jobs, so it is the steadier figure on a shared machine (equal to wall time on an idle one).

Every measurement runs in a fresh subprocess with `--threads` OpenMP threads, so its peak resident memory
(`ru_maxrss`) is its own. Memory is the growth of that peak over the process's high-water mark after imports: weights,
gradients, optimizer state, activations and allocator slack, without the interpreter and libraries that every
configuration pays alike. Configurations are interleaved round by round (`--rounds`) and ratios are taken within a
round before their median, so the load of other jobs falls on both sides of a ratio; the 1-minute load average is
printed with every measurement.

FLOPs of a step are counted by `torch.utils.flop_counter.FlopCounterMode` on the first warm-up step, forward and
backward apart. It counts the matmul-type ops (mm, addmm, bmm, attention) that autograd really runs, so frozen weights,
which get no weight-gradient matmul, are counted correctly. MFU divides them by the CPU time of a step and by the
matmul peak per CPU second measured in the same rounds: the best 1-second rate of a `torch.mm` loop on two 4096²
matrices, fp32 and bf16.

`--levers` adds measurements of cheap speed levers of the training path (threads and OpenMP wait policy, dropout,
fused AdamW; see `LEVERS`), each against the default configuration in the same round.

    .venv/bin/python benchmarks/bench_training.py [--rounds 3] [--threads 1] [--levers] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers.models.t5.modeling_t5 import T5Attention

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration
from training.config import TrainConfig
from training.train import apply_tuning_method, optimizer_groups

METHODS = {"adapter": "vip5_adapter", "full": "full"}
DTYPES = ("fp32", "bf16")
PAPER = {"trainable": 0.0358, "time": 0.79, "memory": 0.81}  # VIP5 Table 5 (Toys, A100): adapters over full fine-tuning
PROMPT_WORDS = 12  # "Given the following purchase history of user_15 :" and the like
QUESTION_WORDS = 10  # "predict next possible item to be purchased by the user ?"
EOS, COMMA = 1, 6
# Speed levers of the training path: (label, method, dtype, overrides of the measurement, environment). Each is
# compared, in its round, with the default measurement of the same method, dtype and input length (`"length": None` =
# the longest throughput length). Threads: OpenMP threads busy-wait at every barrier by default, which is ruinous when
# other jobs hold the cores. Attention-probability dropout: with it, T5's SDPA call falls back to the math kernel, which
# keeps [batch, heads, L, L] tensors for backward and runs in fp32 even under bf16 autocast; without it, the CPU flash
# kernel runs.
LEVERS = [
    ("2 threads", "adapter", "fp32", {"threads": 2}, {}),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", "adapter", "fp32", {"threads": 2}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("attention-probability dropout off", "adapter", "fp32", {"attention_dropout": 0.0}, {}),
    ("attention-probability dropout off", "adapter", "fp32", {"attention_dropout": 0.0, "length": None}, {}),
    ("attention-probability dropout off", "adapter", "bf16", {"attention_dropout": 0.0, "length": None}, {}),
    ("all dropout off (dropout_rate=0)", "adapter", "fp32", {"model_config": {"dropout_rate": 0.0}}, {}),
    ("AdamW(fused=True)", "full", "fp32", {"optimizer": {"fused": True}}, {}),
]


def synthetic_batch(config: VIP5Config, batch_size: int, length: int, target_length: int,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Sequential-task prompts of exactly `length` tokens: as many `id id <img>×k ,` items as fit, one feature each."""
    k, img = config.num_image_tokens, config.image_token_id
    n_items = (length - PROMPT_WORDS - QUESTION_WORDS - 1) // (3 + k)
    if n_items < 1:
        raise ValueError(f"input length {length} leaves no room for an item in a sequential prompt")
    rows = []
    for _ in range(batch_size):
        pieces = torch.randint(100, 30000, (length,), generator=generator).tolist()
        ids, starts = pieces[:PROMPT_WORDS], [True] * PROMPT_WORDS
        for j in range(n_items):
            ids += pieces[PROMPT_WORDS + 2 * j : PROMPT_WORDS + 2 * j + 2] + [img] * k + [COMMA]
            starts += [True, False] + [True] * k + [True]  # a placeholder opens a word, as in the processor
        tail = length - 1 - len(ids)  # the question, lengthened to fill the prompt exactly
        ids += pieces[-tail:] + [EOS]
        starts += [True] * tail + [False]
        rows.append((ids, starts))
    input_ids = torch.tensor([ids for ids, _ in rows])
    whole_word_ids = torch.tensor([starts for _, starts in rows]).long().cumsum(dim=1)
    whole_word_ids[:, -1] = 0  # `</s>` is word 0
    labels = torch.randint(100, 30000, (batch_size, target_length), generator=generator)
    labels[:, -1] = EOS
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), whole_word_ids=whole_word_ids,
                category_ids=(input_ids == img).long(),
                image_features=torch.randn(batch_size, n_items, config.image_feature_dim, generator=generator),
                image_features_mask=torch.ones(batch_size, n_items, dtype=torch.bool), labels=labels)


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_worker(method: str, dtype: str, batch_size: int, length: int, target_length: int, warmup: int, steps: int,
                 threads: int, model_config: dict | None = None, optimizer: dict | None = None,
                 attention_dropout: float | None = None) -> dict:
    """One configuration, alone in this process: trainable share, FLOPs, step times, peak memory."""
    torch.set_num_threads(threads)
    baseline = peak_rss_mb()
    torch.manual_seed(0)
    config = VIP5Config(**(model_config or {}))
    train_config = TrainConfig(method=METHODS[method])
    model = apply_tuning_method(VIP5ForConditionalGeneration(config), train_config).train()
    if attention_dropout is not None:  # T5 drops attention probabilities at `dropout_rate` too; this separates the two
        for module in model.modules():
            if isinstance(module, T5Attention):
                module.dropout = attention_dropout
    adamw = torch.optim.AdamW(optimizer_groups(model, train_config.weight_decay), lr=train_config.learning_rate,
                              eps=train_config.adam_epsilon, **(optimizer or {}))
    batch = synthetic_batch(config, batch_size, length, target_length, torch.Generator().manual_seed(0))

    def step(forward_counter: contextlib.AbstractContextManager,
             backward_counter: contextlib.AbstractContextManager) -> list[tuple[float, float]]:
        """(wall, CPU) clock readings at the start, after forward, after backward and after the optimizer step."""
        clocks = [(time.perf_counter(), time.process_time())]
        with forward_counter, torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(**batch).loss
        clocks.append((time.perf_counter(), time.process_time()))
        with backward_counter:
            loss.backward()
        clocks.append((time.perf_counter(), time.process_time()))
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.max_grad_norm)
        adamw.step()
        adamw.zero_grad()
        clocks.append((time.perf_counter(), time.process_time()))
        return clocks

    counters = FlopCounterMode(display=False), FlopCounterMode(display=False)
    step(*counters)
    for _ in range(warmup - 1):
        step(contextlib.nullcontext(), contextlib.nullcontext())
    timed = [step(contextlib.nullcontext(), contextlib.nullcontext()) for _ in range(steps)]

    def seconds(first: int, last: int, clock: int = 0) -> float:
        return statistics.median(clocks[last][clock] - clocks[first][clock] for clocks in timed)

    return dict(
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        # PEFT keeps a frozen original of each module trained alongside the adapters; the paper counts one copy
        total_params=sum(p.numel() for n, p in model.named_parameters() if "original_module" not in n),
        forward_flops=counters[0].get_total_flops(), backward_flops=counters[1].get_total_flops(),
        step_time=seconds(0, 3), cpu_time=seconds(0, 3, clock=1), forward_time=seconds(0, 1),
        backward_time=seconds(1, 2), optimizer_time=seconds(2, 3), memory_mb=peak_rss_mb() - baseline,
    )


def matmul_worker(dtype: str, size: int, seconds: float, threads: int) -> dict:
    """Matrix-multiply peak: `torch.mm` of two size² matrices in a loop (2·size³ FLOPs each), best 1-second rate per
    second of wall time and per second of this process's CPU time."""
    torch.set_num_threads(threads)
    a, b = (torch.randn(size, size, dtype=torch.float32 if dtype == "fp32" else torch.bfloat16) for _ in range(2))
    torch.mm(a, b)
    best = {"flops_per_s": 0.0, "flops_per_cpu_s": 0.0}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start, cpu_start, count = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - start < 1.0:
            torch.mm(a, b)
            count += 1
        flops = 2 * size**3 * count
        best["flops_per_s"] = max(best["flops_per_s"], flops / (time.perf_counter() - start))
        best["flops_per_cpu_s"] = max(best["flops_per_cpu_s"], flops / (time.process_time() - cpu_start))
    return best


def measure(kind: str, env: dict[str, str] | None = None, **spec) -> dict:
    """Run one measurement in a fresh interpreter (its own peak memory, no state left by the others)."""
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(dict(kind=kind, **spec))],
                          capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"worker {kind} {spec} {env or ''} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]), load=os.getloadavg()[0])


def train_spec(args: argparse.Namespace, method: str, dtype: str, length: int, steps: int) -> dict:
    return dict(method=method, dtype=dtype, batch_size=args.batch_size, length=length,
                target_length=args.target_length, warmup=args.warmup, steps=steps, threads=args.threads)


def run_rounds(args: argparse.Namespace) -> list[dict]:
    """All measurements, interleaved: each round measures every configuration once, in the same order."""
    rows = []

    def record(r: int, section: str, label: str, kind: str = "train", env: dict | None = None, **spec) -> None:
        row = dict(round=r, section=section, label=label, **spec, **measure(kind, env=env, **spec))
        rows.append(row)
        if kind == "matmul":
            print(f"{label:58s} {row['flops_per_s'] / 1e9:6.1f} GFLOP/s (per CPU second "
                  f"{row['flops_per_cpu_s'] / 1e9:6.1f})   (load {row['load']:.2f})", flush=True)
        else:
            print(f"{label:58s} {row['step_time']:6.2f} s/step (CPU {row['cpu_time']:5.2f} s), "
                  f"+{row['memory_mb']:5.0f} MB   (load {row['load']:.2f})", flush=True)

    for r in range(args.rounds):
        print(f"-- round {r + 1}/{args.rounds}")
        for dtype in DTYPES:
            record(r, "peak", f"matmul peak {dtype}", kind="matmul", dtype=dtype, size=args.matmul_size,
                   seconds=args.matmul_seconds, threads=args.threads)
        for dtype in DTYPES:
            for method in METHODS:
                record(r, "comparison", f"{method} {dtype} L={args.length}",
                       **train_spec(args, method, dtype, args.length, args.steps))
        for length in args.lengths:
            for dtype in DTYPES:
                record(r, "throughput", f"adapter {dtype} L={length}",
                       **train_spec(args, "adapter", dtype, length, args.throughput_steps))
        if args.levers:
            for label, method, dtype, overrides, env in LEVERS:
                spec = {**train_spec(args, method, dtype, args.length, args.lever_steps), **overrides}
                spec["length"] = spec["length"] or max(args.lengths)
                record(r, "levers", f"{method} {dtype} L={spec['length']} {label}", env=env, **spec)
    return rows


def median_of(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def ratio_of(numerators: list[dict], denominators: list[dict], key: str) -> float:
    """Median over rounds of the within-round ratio."""
    by_round = {row["round"]: row[key] for row in denominators}
    return statistics.median(row[key] / by_round[row["round"]] for row in numerators)


def report(args: argparse.Namespace, rows: list[dict]) -> None:
    """Medians over rounds; ratios within rounds first, then their median. Wall time and CPU time side by side."""
    def select(section: str, **match) -> list[dict]:
        return [row for row in rows if row["section"] == section and all(row[k] == v for k, v in match.items())]

    def times(measured: list[dict]) -> str:
        return f"{median_of(measured, 'step_time'):6.2f} s (CPU {median_of(measured, 'cpu_time'):5.2f} s)"

    def phases(measured: list[dict]) -> str:
        return "/".join(f"{median_of(measured, f'{phase}_time'):.2f}" for phase in ("forward", "backward", "optimizer"))

    def ratios(numerators: list[dict], denominators: list[dict]) -> str:
        return (f"time {ratio_of(numerators, denominators, 'step_time'):.2f}x (CPU "
                f"{ratio_of(numerators, denominators, 'cpu_time'):.2f}x), memory "
                f"{ratio_of(numerators, denominators, 'memory_mb'):.2f}x")

    def flops(measured: list[dict]) -> float:
        return measured[0]["forward_flops"] + measured[0]["backward_flops"]

    def mfu(measured: list[dict], dtype: str) -> str:
        return f"MFU {flops(measured) / median_of(measured, 'cpu_time') / peak[dtype]:.1%}"

    peak = {dtype: median_of(select("peak", dtype=dtype), "flops_per_cpu_s") for dtype in DTYPES}
    load = [row["load"] for row in rows]
    print(f"\n== {args.rounds} rounds, {args.threads} thread(s), load average {min(load):.2f}-{max(load):.2f}; matmul "
          f"peak per CPU second: fp32 {peak['fp32'] / 1e9:.0f}, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s (per wall "
          f"second: {median_of(select('peak', dtype='fp32'), 'flops_per_s') / 1e9:.0f}, "
          f"{median_of(select('peak', dtype='bf16'), 'flops_per_s') / 1e9:.0f})")
    adapter, full = (select("comparison", method=m, dtype="fp32")[0] for m in METHODS)
    print(f"trainable: adapter {adapter['trainable']:,} of {adapter['total_params']:,} = "
          f"{adapter['trainable'] / adapter['total_params']:.2%} (paper {PAPER['trainable']:.2%} with k=1); full "
          f"{full['trainable']:,}")
    print(f"adapter tuning vs full fine-tuning, B={args.batch_size}, input {args.length}, target {args.target_length} "
          f"(paper: time {PAPER['time']}x, memory {PAPER['memory']}x):")
    for dtype in DTYPES:
        a, f = (select("comparison", method=m, dtype=dtype) for m in METHODS)
        print(f"  {dtype}: adapter {times(a)} +{median_of(a, 'memory_mb'):5.0f} MB, full {times(f)} "
              f"+{median_of(f, 'memory_mb'):5.0f} MB; {ratios(a, f)}")
        for method, measured in zip(METHODS, (a, f), strict=True):
            print(f"  {dtype} {method:7s} forward/backward/optimizer {phases(measured)} s; {flops(measured) / 1e9:5.1f} "
                  f"GFLOP/step (forward {measured[0]['forward_flops'] / 1e9:.1f}, backward "
                  f"{measured[0]['backward_flops'] / 1e9:.1f}), {mfu(measured, dtype)}")
    for method in METHODS:
        fp32, bf16 = (select("comparison", method=method, dtype=dtype) for dtype in DTYPES)
        print(f"  bf16 autocast over fp32, {method}: {ratios(bf16, fp32)}")
    print(f"adapter tuning throughput, B={args.batch_size}, target {args.target_length} (examples per second of wall "
          f"time / of CPU time):")
    for length in args.lengths:
        cells = []
        for dtype in DTYPES:
            measured = select("throughput", length=length, dtype=dtype)
            cells.append(f"{dtype} {args.batch_size / median_of(measured, 'step_time'):5.2f} / "
                         f"{args.batch_size / median_of(measured, 'cpu_time'):5.2f} ex/s, {mfu(measured, dtype)}, "
                         f"+{median_of(measured, 'memory_mb'):.0f} MB")
        print(f"  L={length:4d}  " + "   ".join(cells))
    if args.levers:
        print("levers, against the default of the same method, dtype and input length:")
        for label in dict.fromkeys(row["label"] for row in select("levers")):
            measured = select("levers", label=label)
            default = [row for row in rows if row["section"] in ("comparison", "throughput")
                       and all(row[key] == measured[0][key] for key in ("method", "dtype", "length"))]
            print(f"  {label:58s} {times(measured)} vs {times(default)}; {ratios(measured, default)}; "
                  f"forward/backward/optimizer {phases(measured)} vs {phases(default)} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenMP threads per measurement (1: stable on a machine whose cores other jobs share)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=256, help="input length of the adapter/full comparison")
    parser.add_argument("--target-length", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (the first one counts FLOPs)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of the adapter/full comparison")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024], help="throughput input lengths")
    parser.add_argument("--throughput-steps", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--matmul-seconds", type=float, default=5.0)
    parser.add_argument("--levers", action="store_true", help="also measure the speed levers (see LEVERS)")
    parser.add_argument("--lever-steps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        worker = {"train": train_worker, "matmul": matmul_worker}[spec.pop("kind")]
        print(json.dumps(worker(**spec)))
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    rows = run_rounds(args)
    if args.json:  # atomic: a partial file never replaces a complete one
        staging = args.json.with_name(args.json.name + ".tmp")
        staging.write_text(json.dumps(rows, indent=1))
        staging.replace(args.json)
    report(args, rows)


if __name__ == "__main__":
    main()
