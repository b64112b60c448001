"""Regenerate the embedded Beauty sample (`data_builders/sample/beauty2000/`) from the full P5 files.

    python -m data_builders.sample.make_sample --input ../shared/data/amazon-beauty-p5

The sample is dense enough for a model to learn something in minutes on a CPU: the `--items` most purchased items
(ties: lower id first), every user's chronological sequence restricted to them, and the first `--users` users whose
restricted sequence still holds at least `--min-length` items. Users are renumbered 1..N in file order and items in
order of first appearance, as P5 numbers them. Written: `sequential_data.txt.gz`, `datamaps.json` (the four id maps
of the kept users and items) and `README.md` (provenance, licence, statistics and the source files' SHA-256).
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_builders.atomic import atomic_path, write_text_atomic
from data_builders.p5_reader import DATAMAPS, SEQUENTIAL, read_datamaps, read_sequences
from data_builders.records import fingerprint
from data_builders.sample import BEAUTY_SAMPLE

SEQUENTIAL_GZ = SEQUENTIAL + ".gz"
DEFAULT_USERS, DEFAULT_ITEMS, DEFAULT_MIN_LENGTH = 2000, 500, 5


@dataclass
class Sample:
    """Sequences in sample ids, and which source user / item each sample id stands for."""

    sequences: list[list[int]]  # user u + 1 -> item ids (1-based, numbered by first appearance)
    source_users: list[int]  # sample user u + 1 -> source user id
    source_items: list[int]  # sample item i + 1 -> source item id


def dense_sample(sequences: Sequence[Sequence[int]], num_users: int, num_items: int, min_length: int) -> Sample:
    """The `num_items` most frequent items, then the first `num_users` users with >= `min_length` of them."""
    flat = np.fromiter((i for s in sequences for i in s), dtype=np.int64)
    counts = np.bincount(flat)
    by_popularity = np.lexsort((np.arange(len(counts)), -counts))  # most frequent first, ties by lower id
    kept = set(by_popularity[counts[by_popularity] > 0][:num_items].tolist())
    users, restricted = [], []
    for user, sequence in enumerate(sequences, start=1):
        items = [i for i in sequence if i in kept]
        if len(items) >= min_length:
            users.append(user)
            restricted.append(items)
            if len(users) == num_users:
                break
    if len(users) < num_users:
        raise ValueError(f"only {len(users)} users have {min_length}+ of the {num_items} most frequent items; "
                         f"{num_users} were asked for")
    order: dict[int, int] = {}
    renumbered = [[order.setdefault(i, len(order) + 1) for i in s] for s in restricted]
    return Sample(renumbered, users, list(order))


def read_source(input_dir: str | Path) -> tuple[list[list[int]], list[str], list[str]]:
    """Sequences, reviewerIDs and ASINs of a P5 folder (`sequential_data.txt`, or `.txt.gz` as shipped here),
    checked by the P5 reader."""
    source = Path(input_dir)
    sequences_path = source / SEQUENTIAL if (source / SEQUENTIAL).is_file() else source / SEQUENTIAL_GZ
    interactions, line_of_user = read_sequences(sequences_path)
    users, items = read_datamaps(source / DATAMAPS, interactions, line_of_user, sequences_path)
    bounds = zip(interactions.offsets[:-1], interactions.offsets[1:], strict=True)
    return [interactions.items[a:b].tolist() for a, b in bounds], users, items


def write_p5_files(sample: Sample, users: Sequence[str], items: Sequence[str], folder: str | Path,
                   compress: bool = False) -> None:
    """`sequential_data.txt` (gzip-compressed as `.txt.gz` if `compress`) and `datamaps.json` of a sample, written
    atomically; `users` / `items` are the source's reviewerIDs / ASINs in source id order."""
    folder = Path(folder)
    text = "".join(f"{u} {' '.join(map(str, s))}\n" for u, s in enumerate(sample.sequences, start=1))
    if compress:
        with atomic_path(folder / SEQUENTIAL_GZ) as tmp:
            tmp.write_bytes(gzip.compress(text.encode("ascii"), mtime=0))
    else:
        write_text_atomic(folder / SEQUENTIAL, text)
    reviewers = {str(u): users[old - 1] for u, old in enumerate(sample.source_users, start=1)}
    asins = {str(i): items[old - 1] for i, old in enumerate(sample.source_items, start=1)}
    maps = {"user2id": {raw: key for key, raw in reviewers.items()}, "item2id": {raw: key for key, raw in asins.items()},
            "id2user": reviewers, "id2item": asins}
    write_text_atomic(folder / DATAMAPS, json.dumps(maps, separators=(",", ":")) + "\n")


def write_sample(input_dir: str | Path, output_dir: str | Path = BEAUTY_SAMPLE, num_users: int = DEFAULT_USERS,
                 num_items: int = DEFAULT_ITEMS, min_length: int = DEFAULT_MIN_LENGTH) -> Sample:
    """Read the P5 files of `input_dir` and write the sample files (compressed) and their README into `output_dir`."""
    source, output = Path(input_dir), Path(output_dir)
    sequences, users, items = read_source(source)
    sample = dense_sample(sequences, num_users, num_items, min_length)
    write_p5_files(sample, users, items, output, compress=True)
    write_text_atomic(output / "README.md", _readme(sample, num_items, min_length,
                                                    {name: fingerprint(source / name) for name in (SEQUENTIAL, DATAMAPS)}))
    return sample


def _readme(sample: Sample, num_items: int, min_length: int, sources: dict[str, dict[str, object]]) -> str:
    lengths = np.array([len(s) for s in sample.sequences])
    rows = "\n".join(f"| `{name}` | {info['bytes']:,} | `{info['sha256']}` |" for name, info in sources.items())
    return f"""# Amazon Beauty sample (real interactions, P5 format)

The embedded default of `vip5-demo`. Regenerate it with
`python -m data_builders.sample.make_sample --input <folder with the P5 Beauty files>`.

## Provenance and licence

- Source: the P5/VIP5 preprocessed Amazon Beauty 5-core files (`sequential_data.txt`, `datamaps.json`) of the public
  repository [Wenyueh/LLM-RecSys-ID](https://github.com/Wenyueh/LLM-RecSys-ID) (`data/beauty/`, MIT licence), the same
  ids VIP5 uses. Source files:

  | file | bytes | SHA-256 |
  |---|---:|---|
{_indent(rows)}
- The interactions come from the Amazon review data (2014) of J. McAuley et al. (UCSD), released for research use;
  cite R. He and J. McAuley, "Ups and downs", WWW 2016, and J. McAuley et al., "Image-based recommendations on styles
  and substitutes", SIGIR 2015.

## How the sample was drawn

The {num_items:,} most purchased items (ties: lower id first); every user's chronological sequence restricted to them;
the first {len(sample.sequences):,} users (in file order) whose restricted sequence keeps at least {min_length} items.
Users are renumbered 1..{len(sample.sequences):,} in file order, items in order of first appearance (as P5 does).
The sequences are real purchase orders, but filtered: a user's neighbouring items here need not be neighbours in the
full data.

| users | items | interactions | sequence length min / mean / max |
|---:|---:|---:|---|
| {len(sample.sequences):,} | {len(sample.source_items):,} | {int(lengths.sum()):,} | {lengths.min()} / {lengths.mean():.4f} / {lengths.max()} |

## What is not real

The Beauty files carry no photos, titles, reviewer names or reviews. `vip5-demo` therefore generates **synthetic**
item images (a colour per co-purchase cluster and a shape per item, drawn deterministically from the ids) and
**synthetic** explanation records (template sentences naming the item's colour, shape and a feature word); its outputs
and model cards say so.

## Files

- `sequential_data.txt.gz`: one line per user, `<user_id> <item_id> ...`, chronological (gzip; LF line endings).
- `datamaps.json`: `user2id`, `item2id`, `id2user`, `id2item` of the sample (reviewerID / ASIN <-> sample id).
"""


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="folder with P5's sequential_data.txt and datamaps.json")
    parser.add_argument("--output", type=Path, default=BEAUTY_SAMPLE, help=f"(default: {BEAUTY_SAMPLE})")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    parser.add_argument("--min-length", type=int, default=DEFAULT_MIN_LENGTH)
    args = parser.parse_args(argv)
    sample = write_sample(args.input, args.output, args.users, args.items, args.min_length)
    print(f"{args.output}: {len(sample.sequences)} users, {len(sample.source_items)} items, "
          f"{sum(map(len, sample.sequences))} interactions")


if __name__ == "__main__":
    main()
