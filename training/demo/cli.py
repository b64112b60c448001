"""`vip5-demo`: the main job in one command, from the embedded data to a trained, evaluated, documented VIP5 adapter.

    vip5-demo --output vip5-demo-output                   # offline, CPU: the embedded Beauty sample, two stages
    vip5-demo --model t5-small --clip-pretrained openai --images photos --input data/beauty --stage1-steps 0 \\
        --stage2-steps 20000 --eval-users 0               # with network and a GPU: the released recipe, full domain

Steps (each printed with a banner and timed; `report.md` lists the equivalent commands): P5 source folder -> item
images -> CLIP features -> datasets -> processor -> stage 1 (text-only backbone, full training) -> stage 2 (VIP5
adapters with image tokens) -> evaluation of all three task families after each stage -> model cards, training curves,
results tables and a report of what each stage contributed. See `training/demo/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from data_builders.errors import add_debug_argument, cli_boundary, removed_on_failure
from training.config import MIXED_PRECISIONS

from .config import IMAGE_SOURCES, DemoConfig
from .runner import run_demo


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="vip5-demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    add_debug_argument(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--output", type=Path, default=defaults.output, help="output folder (default: %(default)s)")
    data.add_argument("--input", type=Path, help="P5-format domain folder (default: the embedded Beauty sample)")
    data.add_argument("--domain", default=defaults.domain, help="domain name (default: %(default)s)")
    data.add_argument("--users", type=int, default=defaults.users, help="first N users of the source only (0 = all)")
    data.add_argument("--images", choices=IMAGE_SOURCES, default=defaults.images,
                      help="synthetic images drawn from the ids (default), the items' photos (--image-dir or their "
                           "URLs), or the features already in <input>/features")
    data.add_argument("--image-dir", type=Path, help="with --images photos: photos named <asin>.<jpg|png|...>")
    data.add_argument("--clip-pretrained", default=defaults.clip_pretrained,
                      help="open_clip weights, e.g. openai (default: randomly initialised CLIP, offline)")
    data.add_argument("--encoder", default=defaults.encoder, help="CLIP image encoder (default: %(default)s)")
    data.add_argument("--indexing", default=defaults.indexing,
                      help="item ids: sequential_train_first | random | paper | collaborative | visual "
                           "(default: %(default)s)")
    model = parser.add_argument_group("model and training")
    model.add_argument("--model", default=defaults.model,
                       help="pretrained T5 / VIP5 checkpoint, e.g. t5-small (default: a small backbone from scratch)")
    model.add_argument("--backbone", type=json.loads, default=defaults.backbone,
                       help=f"geometry of the fresh backbone as JSON (default: {json.dumps(defaults.backbone)})")
    model.add_argument("--vocab-size", type=int, default=defaults.vocab_size, help="offline tokenizer size")
    model.add_argument("--num-image-tokens", type=int, default=defaults.num_image_tokens, help="k per item")
    model.add_argument("--sequential-steps", type=int, default=defaults.sequential_steps,
                       help="stage 1 opens with sequential prompts alone, one per training position (default: "
                            "%(default)s; 0 skips this phase)")
    model.add_argument("--stage1-steps", type=int, default=defaults.stage1_steps,
                       help="stage 1 then trains on sequential and explanation prompts (default: %(default)s; 0 and "
                            "--sequential-steps 0 skip stage 1)")
    model.add_argument("--stage2-steps", type=int, default=defaults.stage2_steps,
                       help="VIP5 adapters with image tokens on the frozen stage-1 model (default: %(default)s)")
    model.add_argument("--max-history", type=int, default=defaults.max_history,
                       help="sequential prompts keep the latest N purchases (default: %(default)s; 0 = all)")
    model.add_argument("--direct-per-user", type=int, default=defaults.direct_per_user,
                       help="direct-recommendation prompts per user and epoch in stage 2 (default: %(default)s: none, "
                            "see the report)")
    model.add_argument("--batch-size", type=int, default=defaults.batch_size)
    model.add_argument("--stage1-learning-rate", type=float, default=defaults.stage1_learning_rate)
    model.add_argument("--stage2-learning-rate", type=float, default=defaults.stage2_learning_rate)
    model.add_argument("--mixed-precision", default=defaults.mixed_precision, choices=MIXED_PRECISIONS,
                       help="training precision; auto = bf16 autocast where the hardware computes bf16 natively")
    model.add_argument("--max-input-length", type=int, default=defaults.max_input_length,
                       help="prompt tokens; longer histories lose their oldest items")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval-users", type=int, default=defaults.eval_users,
                            help="test users per template (default: 0 = all)")
    evaluation.add_argument("--curve-users", type=int, default=defaults.curve_users,
                            help="validation users of the learning curve (default: %(default)s)")
    evaluation.add_argument("--curve-points", type=int, default=defaults.curve_points,
                            help="learning-curve points per training phase (default: %(default)s; 0 = none)")
    evaluation.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size)
    evaluation.add_argument("--model-id", default=defaults.model_id, help="name the model cards use")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="torch threads (default 0: the cores idle at the start)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    values = vars(parser.parse_args(argv))
    values.pop("debug", None)
    return DemoConfig(**values)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the main job; returns the summary written to `<output>/results.json`."""
    return run_demo(parse_args(argv))


@cli_boundary("vip5-demo")
def main(argv: list[str]) -> None:
    config = parse_args(argv)
    with removed_on_failure(config.output):  # a failed run leaves nothing half-written behind
        run_demo(config)


if __name__ == "__main__":
    sys.exit(main())
