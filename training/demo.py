"""The README's main job until training and evaluation land: build a small VIP5, save it, reload it, generate.

Needs no network: the model is randomly initialised (a t5-small-shaped model is one flag away) and the item images are
stand-in CLIP features, so the generated ids are meaningless; what it shows is the whole save / load / generate path
with image tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration


def build_config(size: str) -> VIP5Config:
    if size == "t5-small":
        return VIP5Config()
    return VIP5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4)


def run(argv: list[str] | None = None) -> dict:
    """Run the demo; returns the summary written to `demo.json`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("vip5-demo-output"), help="folder for the saved model")
    parser.add_argument("--size", choices=["tiny", "t5-small"], default="tiny", help="model geometry")
    parser.add_argument("--seed", type=int, default=2022)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    config = build_config(args.size)
    model = VIP5ForConditionalGeneration(config).eval()
    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output / "model")
    reloaded = VIP5ForConditionalGeneration.from_pretrained(args.output / "model").eval()
    print(f"saved and reloaded {sum(p.numel() for p in reloaded.parameters()):,} parameters in {args.output / 'model'}")

    # a history of three photographed items: "<id> <img>×k ," … then </s>
    k, img = config.num_image_tokens, config.image_token_id
    ids = [100, 200] + sum(([300 + i] + [img] * k + [6] for i in range(3)), []) + [1]
    inputs = dict(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        image_features=torch.randn(1, 3, config.image_feature_dim),
    )
    generated = reloaded.generate(**inputs, num_beams=4, num_return_sequences=2, max_new_tokens=6)
    original = model.generate(**inputs, num_beams=4, num_return_sequences=2, max_new_tokens=6)
    if not torch.equal(generated, original):
        raise SystemExit("the reloaded model generated differently from the saved one")
    summary = {"model": str(args.output / "model"), "generated_ids": generated.tolist()}
    (args.output / "demo.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
