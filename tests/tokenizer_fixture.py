"""A small T5-layout tokenizer for tests: t5-small cannot be downloaded here, so train SentencePiece on rendered prompts.

`build_t5_tokenizer` trains the package's offline tokenizer (`training.offline_tokenizer`: unigram, pad 0 / eos 1 /
unk 2, no bos, as T5, plus the 100 `<extra_id_*>` tokens) on random prompts, so `<extra_id_0>` is the last id (2099
for 2000 pieces), not 32099: tests must ask the tokenizer. The raw `spiece.model` stays in the tokenizer's folder
(`Path(tokenizer.name_or_path) / "spiece.model"`).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import T5Tokenizer

from modeling_vip5.prompts import load_templates, render_prompt
from training.offline_tokenizer import corpus_lines, train_t5_tokenizer

WORDS = (
    "soft smooth fresh light gentle lovely great nice strong mild sweet floral clean dry oily long lasting cheap "
    "shiny silky matte natural organic rich creamy thick thin small large pink red blue black white golden"
).split()
NOUNS = (
    "shampoo conditioner lotion serum cream mask brush polish lipstick mascara perfume soap oil gel spray powder "
    "cleanser toner balm scrub palette eyeliner sunscreen moisturizer hair skin nails face color scent price "
    "bottle size texture smell"
).split()
NAMES = ("Alice", "Bob", "Chen Wei", "Dana K.", "Émilie", "José", "Kim", "Lee-Ann", "M. O'Brien", "Zoë")


def random_fields(rng: random.Random) -> dict:
    """Every field any template needs, with realistic shapes (ids as ints or digit strings, as in P5 data)."""

    def item() -> int | str:
        value = rng.randint(1, 12101)
        return value if rng.random() < 0.5 else str(value)

    def phrase(n: int) -> str:
        return " ".join(rng.choice(WORDS + NOUNS) for _ in range(n))

    return {
        "user_id": rng.randint(1, 22363),
        "user_desc": rng.choice(NAMES),
        "history": [item() for _ in range(rng.randint(1, 12))],
        "candidates": [item() for _ in range(rng.randint(2, 20))],
        "item_id": item(),
        "item_title": f"{rng.choice(WORDS).title()} {rng.choice(NOUNS).title()} {rng.randint(1, 500)} ml",
        "star_rating": rng.choice([1, 2, 3, 4, 5, 4.2]),
        "feature": rng.choice(NOUNS),
        "review_headline": phrase(4),
        "target_item_id": item(),
        "answer": rng.choice(["yes", "no"]),
        "explanation": phrase(rng.randint(5, 15)),
    }


def prompt_corpus(count: int, seed: int) -> list:
    """`count` rendered prompts cycling through all 29 templates, both separators and k = 1..3."""
    rng = random.Random(seed)
    ids = list(load_templates())
    return [
        render_prompt(
            ids[n % len(ids)],
            num_image_tokens=rng.randint(1, 3),
            separator=rng.choice([",", "->"]),
            **random_fields(rng),
        )
        for n in range(count)
    ]


def build_t5_tokenizer(tmp_dir: Path, vocab_size: int = 2000) -> T5Tokenizer:
    """Train SentencePiece on rendered prompts (placeholders removed, as they are added tokens) and wrap it as T5.

    Words keep their order: the tests were written against the vocabulary this corpus gives as it is."""
    return train_t5_tokenizer(corpus_lines(prompt_corpus(3000, seed=0)), tmp_dir, vocab_size, shuffle_words=False)


@pytest.fixture(scope="session")
def t5_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> T5Tokenizer:
    """One trained tokenizer per test session."""
    return build_t5_tokenizer(tmp_path_factory.mktemp("t5_tokenizer"))
