"""`vip5-app`: serve the demo over a trained model and its dataset, or export it as a Hugging Face Space."""

from __future__ import annotations

import argparse
from pathlib import Path

from .images import ItemImages


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vip5-app", description=__doc__)
    parser.add_argument("--model", help="trained model/adapter folder or Hub id (with its processor and catalogue)")
    parser.add_argument("--dataset", help="the dataset folder or Hub id it was trained on (its test users are listed)")
    parser.add_argument("--domain", help="the dataset's domain (default: its only one)")
    parser.add_argument("--images", type=Path, help="folder of item pictures named <asin>.<png|jpg|jpeg|webp>")
    parser.add_argument("--synthetic-images", action="store_true",
                        help="label the pictures synthetic (also implied by a SYNTHETIC file in the images folder)")
    parser.add_argument("--top-k", type=int, default=10, help="recommendations shown (default 10)")
    parser.add_argument("--max-users", type=int, default=0, help="list only the first N test users (0: all)")
    parser.add_argument("--title", default="VIP5 recommendations")
    parser.add_argument("--host", help="address to serve on (default: Gradio's, 127.0.0.1 or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, help="port (default: Gradio's, 7860 or $GRADIO_SERVER_PORT)")
    space = parser.add_argument_group("Hugging Face Space export")
    space.add_argument("--export-space", type=Path, metavar="FOLDER", help="write a Space into FOLDER and exit")
    space.add_argument("--model-id", help="Hub id of the model the Space serves")
    space.add_argument("--dataset-id", help="Hub id of the dataset the Space lists users from")
    args = parser.parse_args(argv)
    if args.export_space is not None and not (args.model_id and args.dataset_id):
        parser.error("--export-space needs --model-id and --dataset-id")
    if args.export_space is None and not (args.model and args.dataset):
        parser.error("give --model and --dataset (or --export-space with --model-id and --dataset-id)")
    return args


def space_flags(args: argparse.Namespace) -> list[str]:
    """The flags the exported Space passes on to this app (model, dataset and images are the export's own)."""
    flags = ["--top-k", str(args.top_k), "--max-users", str(args.max_users), "--title", args.title]
    if args.domain:
        flags += ["--domain", args.domain]
    if args.synthetic_images:
        flags.append("--synthetic-images")
    return flags


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    images = ItemImages(args.images, synthetic=args.synthetic_images)
    if args.export_space is not None:
        from .space import export_space

        folder = export_space(args.export_space, space_flags(args), args.model_id, args.dataset_id, images=args.images,
                              synthetic=images.synthetic, title=args.title)
        print(f"Space written to {folder}: upload it with `hf upload <user>/<space> {folder} --repo-type space`")
        return
    from .app import CSS, Demo, build_app
    from .engine import Engine
    from .history import load_test_users

    demo = Demo(Engine.load(args.model), load_test_users(args.dataset, args.domain, args.max_users), images,
                top_k=args.top_k)
    build_app(demo, title=args.title).launch(
        server_name=args.host, server_port=args.port, allowed_paths=[str(args.images)] if args.images else None,
        css=CSS,
    )


if __name__ == "__main__":
    main()
