"""`vip5-recommend`: the next items for every user of a JSON-lines file, with a trained VIP5 folder or Hub id.

    vip5-recommend --model out/model --users users.jsonl --output recs.jsonl --top-k 10 --protocol constrained

Each line of `--users` is one user, as `pipeline("vip5-recommendation")` takes it: `{"history": [ids or ASINs],
"user_id": ..., "template_id": ..., "candidates": [...]}` (only `history` is required; `candidates` for `scoring`).
Line i of `--output` answers line i of `--users` (blank lines are skipped): `{"protocol", "template_id", "items":
[{"item_id", "asin", "title", "score"}, ...]}`, best first, scores being log-likelihoods. Every line is checked before
the model runs; a bad one stops the run with `users.jsonl:LINE: <what>`, and the output is written only when complete.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import pipeline

from data_builders.atomic import write_text_atomic
from modeling_vip5.pipeline_vip5 import PROTOCOLS, TASK, VIP5RecommendationPipeline

PROG = "vip5-recommend"


class UsersFileError(ValueError):
    """A line of the users file that cannot be a user; the message is `path:LINE: what`."""


def read_users(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) of every non-blank line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UsersFileError(f"{path}: cannot read ({error})") from error
    users = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            users.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise UsersFileError(f"{path}:{number}: invalid JSON ({error.msg}, column {error.colno})") from error
    if not users:
        raise UsersFileError(f"{path}: no users (one JSON object per line)")
    return users


def check_users(pipe: VIP5RecommendationPipeline, users: list[tuple[int, Any]], path: Path, protocol: str,
                exclude_history: bool) -> None:
    """Resolve every user through the pipeline's own checks, so a bad line fails before any inference."""
    for number, user in users:
        try:
            pipe.resolve_user(user, protocol, exclude_history)
        except ValueError as error:  # includes unknown ids / ASINs (UnknownItemError)
            raise UsersFileError(f"{path}:{number}: {error}") from error


def recommend(pipe: VIP5RecommendationPipeline, users: list[Any], top_k: int, protocol: str, batch_size: int,
              exclude_history: bool) -> list[dict[str, Any]]:
    """The pipeline over all users, a batch at a time, with a progress bar."""
    results: list[dict[str, Any]] = []
    with tqdm(total=len(users), desc="recommending", unit="user") as progress:
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            results += pipe(batch, top_k=top_k, protocol=protocol, batch_size=batch_size,
                            exclude_history=exclude_history)
            progress.update(len(batch))
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="VIP5 model folder or Hub id (with its processor and catalogue)")
    parser.add_argument("--users", required=True, type=Path, help="JSON lines, one user per line")
    parser.add_argument("--output", required=True, type=Path, help="JSON lines, one recommendation per user")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="constrained",
                        help="constrained: beam search over the catalogue; scoring: rank each user's candidates; "
                             "full_ranking: score every catalogue item")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-exclude-history", dest="exclude_history", action="store_false",
                        help="allow items of the user's history in the recommendations")
    parser.add_argument("--processor", default=None, help="processor folder (default: the model's; for adapters)")
    parser.add_argument("--catalogue", default=None, help="folder holding catalogue/ (default: the model's)")
    args = parser.parse_args(argv)
    for name in ("top_k", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        users = read_users(args.users)
        pipe = pipeline(TASK, model=args.model, processor=args.processor, catalogue=args.catalogue)
        check_users(pipe, users, args.users, args.protocol, args.exclude_history)
    except (UsersFileError, FileNotFoundError) as error:
        sys.exit(f"{PROG}: error: {error}")
    results = recommend(pipe, [user for _, user in users], args.top_k, args.protocol, args.batch_size,
                        args.exclude_history)
    write_text_atomic(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    print(f"{len(results)} users -> {args.output}")


if __name__ == "__main__":
    main()
