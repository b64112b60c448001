"""`vip5-convert`: original VIP5 snapshots and P5 checkpoints into this package's folders (see `training.convert`).

    vip5-convert vip5 SNAPSHOT.pth OUTPUT     # OUTPUT/base (save_pretrained) + OUTPUT/adapter (PEFT adapter folder)
    vip5-convert p5 CHECKPOINT.pth OUTPUT     # OUTPUT = a base-model folder (P5 backbone, fresh VIP5 additions)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_builders.errors import add_debug_argument, cli_boundary
from modeling_vip5 import IMAGE_FEATURE_DIMS

from .convert import ConversionError, convert_p5_checkpoint, convert_vip5_snapshot


def check_paths(command: str, source: Path, output: Path) -> None:
    """Before anything is read: the checkpoint is a file, and the output is new, empty or an earlier conversion (the
    only kind of folder this command replaces, and only once the new one is complete)."""
    if not source.is_file():
        raise ConversionError(f"{source}: no such file" if not source.exists() else f"{source}: is a folder; give "
                              "the .pth file")
    if output.exists() and not output.is_dir():
        raise ConversionError(f"{output}: is a file; give a folder to create")
    earlier = (output / "base" / "config.json", output / "adapter" / "adapter_config.json") if command == "vip5" \
        else (output / "config.json",)
    if output.is_dir() and any(output.iterdir()) and not all(path.is_file() for path in earlier):
        raise ConversionError(f"{output}: exists and is not an earlier `vip5-convert {command}` output; give a new or "
                              "empty folder")


@cli_boundary("vip5-convert")
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="vip5-convert", description=__doc__.splitlines()[0])
    add_debug_argument(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    vip5 = commands.add_parser("vip5", help="original VIP5 snapshot -> OUTPUT/base + OUTPUT/adapter")
    vip5.add_argument("snapshot", type=Path, help="original .pth (e.g. snap/.../BEST_EVAL_LOSS.pth)")
    vip5.add_argument("output", type=Path, help="folder to create (an earlier conversion is replaced once complete)")
    vip5.add_argument("--task", help="take this task's adapter copy when the per-task copies differ")
    vip5.add_argument("--image-feature-type", help="CLIP type to record (default: from the feature width)")
    vip5.add_argument("--base-model-id", help="base model recorded in adapter_config.json, e.g. a Hub id")
    p5 = commands.add_parser("p5", help="P5 checkpoint -> OUTPUT (VIP5 base model)")
    p5.add_argument("checkpoint", type=Path, help="P5 .pth")
    p5.add_argument("output", type=Path, help="folder to create (an earlier conversion is replaced once complete)")
    p5.add_argument("--num-image-tokens", type=int, default=2, help="k, image tokens per item")
    p5.add_argument("--image-feature-type", choices=sorted(IMAGE_FEATURE_DIMS), default="vitb32")
    p5.add_argument("--seed", type=int, default=0, help="seed of the fresh VIP5 additions")
    args = parser.parse_args(argv)
    check_paths(args.command, args.snapshot if args.command == "vip5" else args.checkpoint, args.output)
    if args.command == "vip5":
        summary = convert_vip5_snapshot(args.snapshot, args.output, task=args.task,
                                        image_feature_type=args.image_feature_type, base_model_id=args.base_model_id)
    else:
        if args.num_image_tokens < 1:
            raise ConversionError(f"--num-image-tokens: must be at least 1, got {args.num_image_tokens}")
        summary = convert_p5_checkpoint(args.checkpoint, args.output, num_image_tokens=args.num_image_tokens,
                                        image_feature_type=args.image_feature_type, seed=args.seed)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
