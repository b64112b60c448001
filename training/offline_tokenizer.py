"""A T5-layout tokenizer trained on rendered VIP5 prompts, for when t5-small's tokenizer cannot be downloaded.

SentencePiece unigram with T5's special ids (pad 0, eos 1, unk 2, no bos), wrapped by transformers' `T5Tokenizer` with
the 100 `<extra_id_*>` tokens, so `<extra_id_0>` is the last id (2099 for 2000 pieces), not 32099: ask the tokenizer.
The raw `spiece.model` stays in `<folder>/spm/`.

    from training.offline_tokenizer import domain_prompts, corpus_lines, train_t5_tokenizer
    tokenizer = train_t5_tokenizer(corpus_lines(domain_prompts("vip5-dataset", "beauty")), "tokenizer-work")
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm
from transformers import T5Tokenizer

from data_builders.loading import load_config
from modeling_vip5.prompts import IMAGE_TOKEN, RenderedPrompt, load_templates, render_prompt

from .config import TrainConfig
from .examples import DomainTables, TrainingExamples
from .train import _optional as optional_config

EXTRA_IDS = 100


def corpus_lines(prompts: Iterable[RenderedPrompt]) -> Iterator[str]:
    """Source and target of every prompt as lines, without image placeholders (they are added tokens, not pieces)."""
    for prompt in prompts:
        yield prompt.source.replace(IMAGE_TOKEN, " ")
        if prompt.target is not None:
            yield prompt.target


def train_t5_tokenizer(lines: Iterable[str], folder: str | Path, vocab_size: int = 2000,
                       shuffle_words: bool = True) -> T5Tokenizer:
    """Train SentencePiece on `lines` (written to `<folder>/corpus.txt`) and wrap it as a T5 tokenizer.

    `shuffle_words` shuffles the words of every line (seeded) first. SentencePiece seeds its pieces with maximal
    repeated substrings; in templated prompts a word is always followed by the same word, so it is never a maximal
    repeat and ends up spelled in fragments ("its" as "▁it" + "s"; prompts get half again as long). Pieces never
    span whitespace, so the shuffle changes no count the model is fitted to. `hard_vocab_limit=False` lets a small
    corpus end below `vocab_size`; one thread keeps the model reproducible.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    texts = (line.split() for line in lines)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.sample(words, len(words)) if shuffle_words else words) for words in texts),
                      encoding="utf-8")
    model_dir = folder / "spm"
    model_dir.mkdir(exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(model_dir / "spiece"), vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
        num_threads=1,
    )
    return T5Tokenizer.from_pretrained(str(model_dir), extra_ids=EXTRA_IDS)


def domain_prompts(dataset: str | Path, domain: str, seed: int = 2022, per_user: int = 2) -> list[RenderedPrompt]:
    """Prompts of every template, seen and unseen (a pretrained tokenizer knows the held-out prompts' words too), over
    a built dataset: `per_user` sequential and direct prompts per user and one per training review."""
    where = TrainConfig(dataset=str(dataset), domain=domain)
    sequential = load_config(dataset, domain, "sequential")
    items = load_config(dataset, domain, "items", split="train")
    users, explanation = optional_config(where, "users", split="train"), optional_config(where, "explanation", "train")
    templates = {task: [t.id for t in load_templates().values() if t.task == task]
                 for task in ("sequential", "direct", "explanation")}
    examples = TrainingExamples(DomainTables.from_datasets(sequential, users, items), templates, explanation, seed,
                                per_user, per_user)
    return [render_prompt(e.template_id, separator=e.separator, **e.fields) for e in examples]
