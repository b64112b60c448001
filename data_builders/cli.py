"""`vip5-data`: build, inspect, extract image features for, and publish the VIP5 Amazon datasets.

vip5-data build --source p5 --input data/sports --domain sports --output out [--indexing random] [--encoders vitb32]
vip5-data stats out
vip5-data extract-features --source raw --input raw --domain beauty --encoders vitb32 --features-root feats
vip5-data push out --repo-id user/vip5-amazon
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from .amazon_raw import CATEGORIES
from .build import SOURCES, build_domain, read_source
from .clip_extract import REPORT
from .errors import add_debug_argument, cli_boundary
from .features import ENCODERS, MISSING_POLICIES
from .indexing import DEFAULT_INDEXING, INDEXINGS


def _encoders(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ENCODERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown encoder(s) {unknown}; choose from {', '.join(ENCODERS)}")
    return names


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, required=True, help="p5: P5/VIP5 files; raw: Amazon 2014 files")
    parser.add_argument("--input", type=Path, required=True, help="folder with the source files of one domain")
    parser.add_argument("--domain", required=True, help=f"domain name ({', '.join(CATEGORIES)} or your own)")
    parser.add_argument("--category", help="Amazon category of the raw files (default: from the domain name)")
    parser.add_argument("--seed", type=int, default=2022, help="seed of P5's shuffles and samplers (default 2022)")
    parser.add_argument(
        "--features-root", type=Path, help="root of <encoder>_features/<domain>/<asin>.npy (default: <input>/features)"
    )
    parser.add_argument("--encoders", type=_encoders, default=(), help="comma-separated, e.g. vitb32,rn50")
    parser.add_argument(
        "--missing-image",
        choices=MISSING_POLICIES,
        default="zero",
        help="item without a usable image: zero vector + has_image False (default), or stop with an error",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vip5-data", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_debug_argument(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build one domain into a dataset folder")
    _source_arguments(build)
    build.add_argument("--output", type=Path, required=True, help="dataset folder (other domains in it are kept)")
    build.add_argument(
        "--indexing",
        choices=sorted(INDEXINGS),
        default=DEFAULT_INDEXING,
        help="item id scheme (default %(default)s); visual clusters the features of the first of --encoders",
    )

    stats = commands.add_parser("stats", help="print the statistics of a built dataset folder as JSON")
    stats.add_argument("folder", type=Path)
    stats.add_argument("--domain", help="only this domain")

    extract = commands.add_parser("extract-features", help="CLIP image features with open_clip (resumable)")
    _source_arguments(extract)
    extract.add_argument("--image-dir", type=Path, help="local photos named <asin>.<jpg|png|...>")
    extract.add_argument("--cache-dir", type=Path, help="download cache (default: <features-root>/image_cache)")
    extract.add_argument("--no-download", action="store_true", help="use only --image-dir, never the image URLs")
    extract.add_argument("--retries", type=int, default=3)
    extract.add_argument("--pretrained", default="openai", help="open_clip pretrained tag or checkpoint file")
    extract.add_argument("--device", default="cpu")
    extract.add_argument("--batch-size", type=int, default=32)

    push = commands.add_parser("push", help="upload a built dataset folder to the Hugging Face Hub")
    push.add_argument("folder", type=Path)
    push.add_argument("--repo-id", required=True, help="user/name of the dataset repo")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision")
    push.add_argument("--token", help="default: the token of `hf auth login` / HF_TOKEN")
    push.add_argument("--endpoint", help="Hub endpoint (default: huggingface.co or HF_ENDPOINT)")
    return parser


def _run(args: argparse.Namespace) -> object:
    if args.command == "build":
        entry = build_domain(
            args.source,
            args.input,
            args.domain,
            args.output,
            indexing=args.indexing,
            seed=args.seed,
            encoders=args.encoders,
            features_root=args.features_root,
            missing_image=args.missing_image,
            category=args.category,
        )
        return {"domain": args.domain, "output": str(args.output), "rows": entry["rows"], "notes": entry["notes"]}
    if args.command == "stats":
        from .stats import folder_stats

        return folder_stats(args.folder, args.domain)
    if args.command == "extract-features":
        from .clip_extract import extract_features
        from .features import feature_dir, features_root_of
        from .images import ImageFetcher

        features_root = features_root_of(args.input, args.features_root)
        if not args.encoders:
            raise ValueError("--encoders is required for extract-features")
        data = read_source(args.source, args.input, args.domain, category=args.category, seed=args.seed)
        if data.item_asins is None:
            raise ValueError("the source names no ASINs (P5 layout without datamaps.json): nothing to extract")
        urls = data.item_image_urls or [None] * data.num_items
        fetcher = ImageFetcher(
            image_dir=args.image_dir,
            cache_dir=args.cache_dir or features_root / "image_cache",
            download=not args.no_download,
            retries=args.retries,
        )
        reports = {}
        for encoder in args.encoders:
            report = extract_features(
                list(zip(data.item_asins, urls, strict=True)),
                encoder,
                features_root,
                args.domain,
                fetcher,
                pretrained=args.pretrained,
                device=args.device,
                batch_size=args.batch_size,
                missing_image=args.missing_image,
            )
            reports[encoder] = asdict(report) | {
                "missing": len(report.missing),
                "report": str(feature_dir(features_root, encoder, args.domain) / REPORT),
            }
        return reports
    from .push import push_dataset

    url = push_dataset(
        args.folder,
        args.repo_id,
        token=args.token,
        private=args.private,
        revision=args.revision,
        endpoint=args.endpoint,
    )
    return {"repo_id": args.repo_id, "commit_url": url}


@cli_boundary("vip5-data")
def main(argv: list[str]) -> None:
    """Entry point of the `vip5-data` console script; prints a JSON result, or a one-line error (exit code 1)."""
    print(json.dumps(_run(_parser().parse_args(argv)), indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
