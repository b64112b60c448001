"""How each protocol runs over examples (`ProtocolRunner`) and the baselines ranked on the same examples."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from modeling_vip5.processing_vip5 import VIP5Processor
from modeling_vip5.ranking import (
    ENCODER_INPUTS,
    ItemTrie,
    ParsedOutputs,
    generate_ranked_items,
    item_token_ids,
    rank_candidates,
    rank_items,
)

from .baselines import RandomBaseline, TransitionBaseline
from .evaluation_data import EvaluationData
from .examples import Example
from .results import BASELINE_PROTOCOLS
from .train import Collator

if TYPE_CHECKING:
    from .evaluate import EvaluateConfig

# The original's generate() calls (spec §1.11): 20-beam search for ranking; for explanation the T5 config defaults,
# i.e. greedy with max_length 20, the decoder start token included.
PAPER_BEAM_SEARCH = {"num_beams": 20, "num_return_sequences": 20, "max_length": 50, "no_repeat_ngram_size": 0,
                     "early_stopping": True}
PAPER_EXPLANATION = {"num_beams": 1, "do_sample": False, "max_length": 20}
# Constrained beams are ranked by their summed log-probability (no length normalisation), the quantity full_ranking
# computes exactly, so the two protocols differ only by the beam-search approximation.
CONSTRAINED_LENGTH_PENALTY = 0.0
RANKING_DEPTH = 20  # items kept per example: the paper's 20 beams; the metrics look at the first 10



def _batches(examples: Sequence[Example], size: int) -> Iterator[Sequence[Example]]:
    for start in range(0, len(examples), size):
        yield examples[start : start + size]


class ProtocolRunner:
    """Runs each protocol over examples in batches; one per evaluation, as it holds the item trie and token ids."""

    def __init__(self, model, processor: VIP5Processor, config: EvaluateConfig, catalogue: Sequence[int]):
        self.model, self.processor, self.config = model, processor, config
        self.collate = Collator(processor, config.max_input_length, config.truncation, config.max_target_length)
        self.tokenizer = processor.tokenizer
        self.catalogue = list(catalogue)
        self.catalogue_ids = frozenset(self.catalogue)
        self._trie: ItemTrie | None = None
        self._catalogue_tokens: dict[int, list[int]] | None = None

    @property
    def trie(self) -> ItemTrie:
        if self._trie is None:
            self._trie = ItemTrie.from_tokenizer(self.tokenizer, self.catalogue)
        return self._trie

    @property
    def catalogue_tokens(self) -> dict[int, list[int]]:
        if self._catalogue_tokens is None:
            self._catalogue_tokens = item_token_ids(self.tokenizer, self.catalogue)
        return self._catalogue_tokens

    def excluded(self, example: Example) -> set[int]:
        return set(example.fields.get("history", ())) if self.config.exclude_history else set()

    @torch.no_grad()
    def run(self, family: str, protocol: str, examples: Sequence[Example]) -> list:
        """Per example: a `ParsedOutputs` (ranking protocols) or the generated text (explanation)."""
        step = {
            ("sequential", "paper"): lambda b, x: self._free_beams(x, self.catalogue_ids),
            ("sequential", "constrained"): self._constrained,
            ("sequential", "full_ranking"): self._full_ranking,
            ("direct", "paper"): lambda b, x: self._free_beams(x, [set(e.fields["candidates"]) for e in b]),
            ("direct", "scoring"): self._scoring,
            ("explanation", "paper"): lambda b, x: self._explain(x, PAPER_EXPLANATION),
            ("explanation", "generation"): lambda b, x: self._explain(x, PAPER_EXPLANATION | self.config.generate),
        }[family, protocol]
        device = self.model.device
        outputs: list = []
        for batch in _batches(examples, self.config.batch_size):
            inputs = {k: v.to(device) for k, v in self.collate(list(batch)).items() if k in ENCODER_INPUTS}
            outputs += step(batch, inputs)
        return outputs

    def _free_beams(self, inputs, valid_ids) -> list[ParsedOutputs]:
        """The paper protocol: unconstrained 20-beam search, beams parsed against the catalogue (sequential) or each
        prompt's own 100 candidates (direct)."""
        return generate_ranked_items(self.model, inputs, tokenizer=self.tokenizer, valid_ids=valid_ids,
                                     max_new_tokens=None, **PAPER_BEAM_SEARCH)

    def _constrained(self, batch: Sequence[Example], inputs) -> list[ParsedOutputs]:
        depth = max(map(len, self.catalogue_tokens.values()))
        return generate_ranked_items(
            self.model, inputs, trie=self.trie, num_beams=PAPER_BEAM_SEARCH["num_beams"],
            excluded=[self.excluded(e) for e in batch], max_new_tokens=depth, early_stopping=True,
            length_penalty=CONSTRAINED_LENGTH_PENALTY,
        )

    def _full_ranking(self, batch: Sequence[Example], inputs) -> list[ParsedOutputs]:
        ranked = rank_items(self.model, inputs, [self.catalogue] * len(batch), self.catalogue_tokens, k=RANKING_DEPTH,
                            excluded=[self.excluded(e) for e in batch], chunk_size=self.config.scoring_chunk_size)
        return [_exact(r.items) for r in ranked]

    def _scoring(self, batch: Sequence[Example], inputs) -> list[ParsedOutputs]:
        rankings = rank_candidates(self.model, inputs, [e.fields["candidates"] for e in batch], self.tokenizer,
                                   chunk_size=self.config.scoring_chunk_size)
        return [_exact(r) for r in rankings]

    def _explain(self, inputs, settings: Mapping[str, Any]) -> list[str]:
        sequences = self.model.generate(**inputs, **settings)
        return [text.strip() for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]


def _exact(ranking: Sequence[int]) -> ParsedOutputs:
    """A ranking of existing items by likelihood: every output is valid by construction."""
    return ParsedOutputs(ranking=list(ranking), num_outputs=len(ranking), num_valid=len(ranking))


def baseline_rankings(family: str, examples: Sequence[Example], data: EvaluationData,
                      config: EvaluateConfig) -> dict[str, list[ParsedOutputs]]:
    """Popularity, item-transition (both from the training interactions only) and random rankings of the same
    examples. The transition baseline follows the last item of the prompt's history (sequential) or of the user's
    training interactions (direct)."""
    transition = TransitionBaseline(data.tables.train_sequences, data.catalogue)
    popularity = transition.popularity  # the transition baseline's tie-breaker, counted once
    uniform = RandomBaseline(data.catalogue, seed=config.seed)
    last_trained = {int(u): int(s[-1]) for u, s in zip(data.tables.user_ids, data.tables.train_sequences, strict=True)}
    runs: dict[str, list[ParsedOutputs]] = {name: [] for name in BASELINE_PROTOCOLS}
    for example in examples:
        key = int(example.fields["user_id"])
        if family == "direct":
            candidates = example.fields["candidates"]
            runs["popularity"].append(_exact(popularity.rank_candidates(candidates)))
            runs["transition"].append(_exact(transition.rank_candidates(candidates, last=last_trained[key])))
            runs["random"].append(_exact(uniform.rank_candidates(candidates, key=key)))
        else:
            history = example.fields["history"]
            excluded = set(history) if config.exclude_history else set()
            runs["popularity"].append(_exact(popularity.rank_catalogue(RANKING_DEPTH, exclude=excluded)))
            runs["transition"].append(_exact(transition.rank_catalogue(RANKING_DEPTH, last=int(history[-1]),
                                                                       exclude=excluded)))
            runs["random"].append(_exact(uniform.rank_catalogue(RANKING_DEPTH, key=key, exclude=excluded)))
    return runs


