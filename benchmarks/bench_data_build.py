"""Wall time and peak memory of `vip5-data build` on a Beauty-scale domain, all configs, no CLIP extraction.

Input: the real Beauty `sequential_data.txt` + `datamaps.json` from ../shared/data/amazon-beauty-p5, completed with
Beauty-scale stand-ins for the files that are not public (generated here, not timed): `exp_splits.pkl` (every
interaction as a review record, split 8:1:1), `user_id2name.pkl`, `meta.json.gz` (the 12,101 items plus 247,103 other
products, as Amazon's Beauty metadata has 259,204 lines) and one ViT-B/32 `.npy` feature per photographed item (90 %).
`negative_samples.txt` is left out, so the build also runs P5's seeded negative sampler.

The build runs as a child process (`python -m data_builders.cli build ...`, interpreter start and imports included);
its peak resident memory is read from `getrusage(RUSAGE_CHILDREN)`. Target: < 30 s and < 2 GB on 2 cores.

    .venv/bin/python benchmarks/bench_data_build.py [--input DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-beauty-p5"
META_LINES = 259_204


def complete_beauty(source: Path, target: Path) -> None:
    """Copy the real files and add Beauty-scale versions of the unpublished ones."""
    target.mkdir(parents=True)
    for name in ("sequential_data.txt", "datamaps.json"):
        (target / name).write_bytes((source / name).read_bytes())
    maps = json.loads((source / "datamaps.json").read_text())
    rng = random.Random(0)
    records = []
    for line in (source / "sequential_data.txt").read_text().splitlines():
        user, *items = line.split()
        for position, item in enumerate(items):
            records.append(
                {
                    "reviewerID": maps["id2user"][user],
                    "asin": maps["id2item"][item],
                    "reviewerName": f"Reviewer {user}",
                    "helpful": [0, 0],
                    "reviewText": "A plausible review text of moderate length. " * 8,
                    "overall": float(rng.randint(1, 5)),
                    "summary": "Short summary",
                    "unixReviewTime": 1_300_000_000 + position,
                    "reviewTime": "01 1, 2011",
                    "explanation": "the colour is great and it lasts all day",
                    "feature": "colour",
                }
            )
    rng.shuffle(records)
    cut1, cut2 = round(0.8 * len(records)), round(0.9 * len(records))
    splits = {"train": records[:cut1], "val": records[cut1:cut2], "test": records[cut2:]}
    (target / "exp_splits.pkl").write_bytes(pickle.dumps(splits, protocol=4))
    names = {uid: f"Reviewer {uid}" for uid in maps["id2user"]}
    (target / "user_id2name.pkl").write_bytes(pickle.dumps(names, protocol=4))
    asins = list(maps["item2id"])
    others = [f"Z{i:09d}" for i in range(META_LINES - len(asins))]
    with gzip.open(target / "meta.json.gz", "wt", encoding="utf-8", compresslevel=1) as handle:
        for a in others[: len(others) // 2] + asins + others[len(others) // 2 :]:
            record = {
                "asin": a,
                "title": f"Product {a}",
                "imUrl": f"http://ecx.images-amazon.com/images/I/{a}.jpg",
                "categories": [["Beauty", "Makeup"]],
                "related": {"also_bought": asins[:5]},
            }
            handle.write(repr(record) + "\n")
    features = target / "features" / "vitb32_features" / "beauty"
    features.mkdir(parents=True)
    vectors = np.random.default_rng(0).standard_normal((len(asins), 512)).astype(np.float32)
    for a, vector in zip(asins, vectors, strict=True):
        if rng.random() < 0.9:
            np.save(features / f"{a}.npy", vector)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=BEAUTY, help="folder with the real Beauty P5 files")
    parser.add_argument("--repeat", type=int, default=1, help="number of timed builds (the best is reported)")
    args = parser.parse_args()
    if not (args.input / "sequential_data.txt").is_file():
        sys.exit(f"{args.input}: no sequential_data.txt (real Beauty data needed)")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "beauty"
        started = time.perf_counter()
        complete_beauty(args.input, source)
        print(f"prepared Beauty-scale input in {time.perf_counter() - started:.1f} s (not timed)")
        times = []
        for run in range(args.repeat):
            out = Path(tmp) / f"out{run}"
            command = [
                sys.executable,
                "-m",
                "data_builders.cli",
                "build",
                "--source",
                "p5",
                "--input",
                str(source),
                "--domain",
                "beauty",
                "--output",
                str(out),
                "--encoders",
                "vitb32",
            ]
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows = json.loads((out / "vip5_dataset.json").read_text())["domains"]["beauty"]["rows"]
    print(f"configs built: {', '.join(f'{c} {sum(s.values()):,} rows' for c, s in rows.items())}")
    print(f"wall time: {min(times):.2f} s (best of {len(times)}; all: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"peak memory: {peak_mb:,.0f} MB")
    print(f"target < 30 s and < 2048 MB: {'met' if min(times) < 30 and peak_mb < 2048 else 'NOT met'}")


if __name__ == "__main__":
    main()
