"""The main job's headline numbers over seeds: mean and spread (min–max) of each, and the wall time of each run.

    python benchmarks/bench_demo.py --seeds 2022 2023 2024 --root /tmp/demo-seeds [-- <more vip5-demo flags>]

Each seed is one `vip5-demo` run in its own process (its own output folder under --root), run one after another, so
wall times are comparable when nothing else runs. `--summarise` only reads finished runs' `results.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (row label, family, template, metric, column of the contribution table)
HEADLINES = [
    ("A-3 HR@10 (full ranking)", "sequential", "A-3", "HR@10", "stage 2"),
    ("A-9 HR@10 (unseen prompt)", "sequential", "A-9", "HR@10", "stage 2"),
    ("A-3 HR@10, stage 1", "sequential", "A-3", "HR@10", "stage 1"),
    ("A-3 HR@10, popularity", "sequential", "A-3", "HR@10", "popularity"),
    ("A-3 HR@10, transition", "sequential", "A-3", "HR@10", "transition"),
    ("B-5 HR@10 (100 candidates)", "direct", "B-5", "HR@10", "stage 2"),
    ("B-5 HR@10, image features shuffled", "direct", "B-5", "HR@10", "stage 2, images shuffled"),
    ("B-8 HR@10 (unseen prompt)", "direct", "B-8", "HR@10", "stage 2"),
    ("B-5 HR@10, popularity", "direct", "B-5", "HR@10", "popularity"),
    ("B-5 HR@10, transition", "direct", "B-5", "HR@10", "transition"),
    ("C-3 BLEU-4", "explanation", "C-3", "BLEU-4", "stage 2"),
    ("C-3 BLEU-4, stage 1", "explanation", "C-3", "BLEU-4", "stage 1"),
    ("C-12 BLEU-4 (unseen prompt)", "explanation", "C-12", "BLEU-4", "stage 2"),
]


def headline(summary: dict, family: str, template: str, metric: str, column: str) -> float | None:
    for row in summary["contributions"]:
        if (row["family"], row["template"], row["metric"]) == (family, template, metric):
            return row.get(column)
    return None


def markdown(runs: dict[int, dict]) -> str:
    """One row per headline: each seed's value, the mean and the min–max spread."""
    seeds = sorted(runs)
    lines = ["| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | min–max |",
             "|---|" + "---:|" * (len(seeds) + 2)]
    rows = [(label, [headline(runs[s], *key) for s in seeds]) for label, *key in HEADLINES]
    rows.append(("wall time of the run (s)", [runs[s]["wall_seconds"] for s in seeds]))
    for label, values in rows:
        known = [v for v in values if v is not None]
        if not known:
            continue
        cells = " | ".join("–" if v is None else f"{v:.4g}" for v in values)
        lines.append(f"| {label} | {cells} | {statistics.mean(known):.4g} | {min(known):.4g}–{max(known):.4g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2022, 2023, 2024])
    parser.add_argument("--root", type=Path, default=Path("demo-seeds"))
    parser.add_argument("--summarise", action="store_true", help="only read the runs already in --root")
    args, demo_flags = parser.parse_known_args()
    runs = {}
    for seed in args.seeds:
        out = args.root / f"seed{seed}"
        if not args.summarise:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "training.demo.cli", "--output", str(out), "--seed", str(seed),
                            *[f for f in demo_flags if f != "--"]], check=True)
            (out / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
        summary = json.loads((out / "results.json").read_text())
        summary["wall_seconds"] = float((out / "wall_seconds.txt").read_text())
        runs[seed] = summary
    print(markdown(runs))


if __name__ == "__main__":
    main()
