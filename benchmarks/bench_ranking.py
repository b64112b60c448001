"""Direct recommendation over 100 candidates: exact candidate scoring vs the paper's 20-beam generation.

Same examples, same t5-small-size VIP5 (random weights: the cost does not depend on them), measured side by side.
Generation is capped at `--gen-tokens` new tokens (a trained model stops after the 2–4 tokens of an item id; a random
one would run to max_length), so the ratio printed is a lower bound on the real speed-up.

    python benchmarks/bench_ranking.py [--examples 8] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import time

import torch

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.ranking import score_candidates


def direct_prompt_batch(batch_size: int, config: VIP5Config, generator: torch.Generator) -> tuple[dict, list]:
    """A B-5-shaped prompt: ~12 words then 100 candidates `<id tokens> <img>×k ,`, one feature row per candidate."""
    k, img = config.num_image_tokens, config.image_token_id
    rows, candidates = [], []
    for _ in range(batch_size):
        ids = torch.randint(100, 30000, (12,), generator=generator).tolist()
        cands = [torch.randint(100, 30000, (3,), generator=generator).tolist() + [1] for _ in range(100)]
        for c in cands:
            ids += c[:-1] + [img] * k + [6]
        rows.append(ids + [1])
        candidates.append(cands)
    length = max(map(len, rows))
    input_ids = torch.zeros(batch_size, length, dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
    inputs = dict(
        input_ids=input_ids, attention_mask=(input_ids != 0).long(),
        image_features=torch.randn(batch_size, 100, config.image_feature_dim, generator=generator),
    )
    return inputs, candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--gen-tokens", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = VIP5Config()
    model = VIP5ForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(0)
    batches = [direct_prompt_batch(args.batch_size, config, g) for _ in range(args.examples // args.batch_size)]
    print(f"t5-small VIP5, {args.examples} prompts of {batches[0][0]['input_ids'].shape[1]} tokens, 100 candidates each")

    timings = {}
    with torch.no_grad():
        for name, run in {
            "scoring (100 candidates, exact)": lambda inputs, cands: score_candidates(model, inputs, cands),
            f"20-beam generation ({args.gen_tokens} tokens)": lambda inputs, cands: model.generate(
                **inputs, num_beams=20, num_return_sequences=20, min_new_tokens=args.gen_tokens,
                max_new_tokens=args.gen_tokens),
        }.items():
            run(*batches[0])  # warm-up
            start = time.perf_counter()
            for inputs, cands in batches:
                run(inputs, cands)
            timings[name] = (time.perf_counter() - start) / args.examples
            print(f"{name:40s} {timings[name] * 1000:8.1f} ms / example")
    score, gen = timings.values()
    print(f"speed-up of scoring over generation: {gen / score:.1f}x")


if __name__ == "__main__":
    main()
