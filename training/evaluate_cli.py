"""`vip5-evaluate` on the command line: flags -> `EvaluateConfig`, every cheap check, then `run_evaluation`.

    vip5-evaluate --model out/adapter --dataset <folder or Hub id> --domain beauty --output results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from typing import Any

from data_builders.errors import add_debug_argument, cli_boundary, removed_on_failure
from modeling_vip5.processing_vip5 import TRUNCATIONS

from .evaluate import IMAGE_FEATURE_MODES, SELECTABLE_PROTOCOLS, TASKS, EvaluateConfig, run_evaluation
from .evaluate import __doc__ as EVALUATE_DOC
from .preflight import check_evaluation_run


def _setting(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE read as JSON when it parses (numbers, true/false), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv: list[str] | None = None) -> EvaluateConfig:
    defaults = EvaluateConfig(model="", dataset="")
    parser = argparse.ArgumentParser(prog="vip5-evaluate", description=EVALUATE_DOC.split("\n\n")[0])
    add_debug_argument(parser)
    parser.add_argument("--model", required=True, help="VIP5 model folder / Hub id, or a PEFT adapter folder")
    parser.add_argument("--base-model", default="",
                        help="base VIP5 folder / Hub id of an adapter (default: the one the adapter records)")
    parser.add_argument("--processor", default="", help="processor folder (default: the model / adapter folder)")
    parser.add_argument("--dataset", required=True, help="dataset folder or Hub id built by `vip5-data build`")
    parser.add_argument("--dataset-revision", default="", help="Hub revision of the dataset")
    parser.add_argument("--domain", default=defaults.domain)
    parser.add_argument("--image-encoder", default=defaults.image_encoder, help="CLIP feature column of the items")
    parser.add_argument("--split", default=defaults.split, choices=["validation", "test"])
    parser.add_argument("--tasks", nargs="+", default=defaults.tasks, choices=TASKS)
    parser.add_argument("--templates", nargs="+", default=defaults.templates,
                        help="template ids (default: seen A-3 B-5 C-3, unseen A-9 B-8 C-12)")
    parser.add_argument("--protocols", nargs="+", default=defaults.protocols, choices=SELECTABLE_PROTOCOLS,
                        help="model protocols to run, in every family that defines them")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false",
                        help="skip the popularity / transition / random baselines")
    parser.add_argument("--generate", metavar="KEY=VALUE", nargs="+", type=_setting, default=[],
                        help="explanation generation settings (e.g. num_beams=12 min_length=9): adds the `generation` "
                             "protocol beside the paper's greedy decoding")
    parser.add_argument("--exclude-history", action="store_true",
                        help="constrained / full_ranking / baselines never rank the user's history items")
    parser.add_argument("--max-history", type=int, default=defaults.max_history,
                        help="sequential prompts keep the latest N history items (0 = all); match the training setting")
    parser.add_argument("--image-features", default=defaults.image_features, choices=IMAGE_FEATURE_MODES,
                        help="shuffled: the photographed items' feature rows permuted (seeded), the image ablation")
    parser.add_argument("--redraw-candidates", action="store_true",
                        help="direct: draw 99 negatives at random (seeded per user), as the original notebook")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-examples", type=int, default=defaults.max_examples,
                        help="evaluate the first N examples of each template only (0 = all); for smoke runs")
    parser.add_argument("--scoring-chunk-size", type=int, default=defaults.scoring_chunk_size,
                        help="candidates per decoder pass when every candidate is scored (scoring); full_ranking "
                             "scores the catalogue best bound first, 64 at a time, and stops early")
    parser.add_argument("--max-input-length", type=int, default=defaults.max_input_length)
    parser.add_argument("--truncation", default=defaults.truncation, choices=TRUNCATIONS)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--cache-dir", default="", help="datasets cache folder")
    parser.add_argument("--output", default=defaults.output,
                        help="results JSON to write (vip5-train's push reads <output_dir>/evaluation.json)")
    parser.add_argument("--predictions", default="", help="also write example-level outputs here (JSON lines)")
    parser.add_argument("--model-card", default="", help="also write a model card (README.md) from the results")
    parser.add_argument("--model-id", default="", help="Hub id the model card describes")
    parser.add_argument("--dataset-id", default="", help="Hub id of the dataset for the card (default: --dataset)")
    args = vars(parser.parse_args(argv))
    args["generate"] = dict(args["generate"])
    args.pop("debug")  # read by the boundary
    return EvaluateConfig(**args)


@cli_boundary("vip5-evaluate")
def main(argv: list[str]) -> None:
    """Settings, output paths, local inputs, then Hub ids, all before the model loads; on failure no output file this
    run created is left (results, predictions and card are each written atomically)."""
    config = parse_args(argv)
    check_evaluation_run(config)
    with ExitStack() as outputs:
        for path in (config.output, config.predictions, config.model_card):
            if path:
                outputs.enter_context(removed_on_failure(path))
        run_evaluation(config)


if __name__ == "__main__":
    sys.exit(main())
