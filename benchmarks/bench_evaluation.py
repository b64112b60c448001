"""Direct recommendation: exact candidate `scoring` vs the paper's 20-beam generation on the same prompts.

Scoring runs exactly as vip5-evaluate runs it (`training.protocols.ProtocolRunner`). Both protocols see the same B-5
prompts (100 candidates each), features and t5-small-geometry VIP5 (vocabulary 32,100, so the output layer costs
what it costs in the real model). How the comparison is made fair:

- A trained VIP5 answers with an item id and stops. Beam search costs the same for any weights with the same number
  of decoding steps, so generation is timed with the paper's settings (20 beams, 20 returned sequences) forced to
  exactly the steps a trained model takes: an item id here is 2.9 tokens with `</s>` on average (2 to 4), so beam
  search ends after 3 or 4 steps; both are timed. (A random model would stop at arbitrary lengths; one trained briefly
  on CPU answers with one token and stops after 2 steps, which would understate the cost of generation.)
- Candidate ids are drawn uniformly from a Beauty-sized catalogue (12,101 items), as P5's fixed negatives are; the
  tokenizer is the tests' SentencePiece model trained on rendered prompts (t5-small's cannot be downloaded here).
- One warm-up each; the encoder alone is timed on the same batches, since both protocols run it once per prompt:
  `generation / encoder` bounds the speed-up of any way of scoring the candidates.

    python benchmarks/bench_evaluation.py [--examples 8] [--batch-size 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.processing_vip5 import VIP5Processor
from modeling_vip5.ranking import ENCODER_INPUTS
from training.evaluate import EvaluateConfig
from training.examples import Example
from training.protocols import PAPER_BEAM_SEARCH, ProtocolRunner
from training.train import Collator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tokenizer_fixture import build_t5_tokenizer  # noqa: E402  (the tests' offline T5-layout tokenizer)

CATALOGUE = 12_101  # items of Amazon Beauty


def direct_examples(count: int, num_candidates: int, rng: np.random.Generator) -> list[Example]:
    """B-5 prompts: `num_candidates` distinct uniform ids, the target one of them."""
    examples = []
    for user in range(1, count + 1):
        candidates = [int(i) for i in rng.choice(np.arange(1, CATALOGUE + 1), size=num_candidates, replace=False)]
        fields = {"user_id": user, "user_desc": f"user_{user}", "candidates": candidates,
                  "target_item_id": candidates[int(rng.integers(num_candidates))]}
        examples.append(Example("B-5", fields))
    return examples


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_t5_tokenizer(Path(folder))
    processor = VIP5Processor(tokenizer)
    processor.feature_extractor.set_item_features(rng.normal(size=(CATALOGUE + 1, 512)).astype(np.float32))
    model = VIP5ForConditionalGeneration(VIP5Config(image_token_id=processor.image_token_id)).eval()
    config = EvaluateConfig(model="benchmark", dataset="synthetic", batch_size=args.batch_size)
    collate = Collator(processor, config.max_input_length, config.truncation, config.max_target_length)
    runner = ProtocolRunner(model, processor, config, range(1, CATALOGUE + 1))
    examples = direct_examples(args.examples, 100, rng)
    batches = [{k: v for k, v in collate(examples[i : i + args.batch_size]).items() if k in ENCODER_INPUTS}
               for i in range(0, len(examples), args.batch_size)]
    id_tokens = [len(t) for t in tokenizer([str(i) for i in range(1, CATALOGUE + 1)])["input_ids"]]
    prompt_tokens = np.mean([b["attention_mask"].sum(1).float().mean().item() for b in batches])
    print(f"t5-small-geometry VIP5, {len(examples)} B-5 prompts of {prompt_tokens:.0f} tokens with 100 candidates, "
          f"batches of {args.batch_size}, {torch.get_num_threads()} threads; an item id is {np.mean(id_tokens):.2f} "
          f"tokens with </s> ({min(id_tokens)} to {max(id_tokens)})")

    beam_search = {k: v for k, v in PAPER_BEAM_SEARCH.items() if k != "max_length"}
    per = 1000 / len(examples)
    with torch.no_grad():
        runner.run("direct", "scoring", examples[:1])  # warm-up
        scoring = timed(lambda: runner.run("direct", "scoring", examples))
        encoder = timed(lambda: [model.get_encoder()(**b) for b in batches])
        print(f"scoring (100 candidates, exact): {scoring * per:8.1f} ms / prompt (encoder {encoder * per:.1f}, "
              f"candidates {(scoring - encoder) * per:.1f})")
        for steps in (3, 4):
            model.generate(**batches[0], **beam_search, min_new_tokens=steps, max_new_tokens=steps)  # warm-up
            generation = timed(lambda steps=steps: [model.generate(**b, **beam_search, min_new_tokens=steps,
                                                                   max_new_tokens=steps) for b in batches])
            print(f"paper generation, {steps} steps:   {generation * per:8.1f} ms / prompt -> scoring is "
                  f"{generation / scoring:.1f}x faster (bound for any scoring: generation / encoder = "
                  f"{generation / encoder:.1f}x)")


if __name__ == "__main__":
    main()
