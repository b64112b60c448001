"""Ranking helpers that return item ids: constrained beam search over a prefix trie, and exact candidate scoring.

VIP5 decodes item ids as text ("1234" + `</s>`). The original decoded freely, so beams could be non-existent items
(spec §8.3). Here:

- `ItemTrie` + `generate_ranked_items`: beam search that can only emit existing item ids (optionally not the user's
  history), returning item ids best first.
- `score_candidates` / `rank_candidates`: the exact log-likelihood of every candidate id given the prompt. The encoder
  runs once per example and the cross-attention keys/values once per example too; the candidates then share them as
  stride-0 views, so scoring 100 candidates costs little more than one decoder pass over their tokens.
- `rank_items`: those scores turned into the k best items with their scores, optionally without some (the user's
  history); over the whole catalogue it is the exact full ranking (vip5-evaluate's `full_ranking`, the pipeline's).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

ENCODER_INPUTS = ("input_ids", "attention_mask", "whole_word_ids", "category_ids", "image_features", "image_features_mask")


def item_token_ids(tokenizer, item_ids: Iterable[int]) -> dict[int, list[int]]:
    """Token ids of each item id as a training target (the bare id string followed by `</s>`)."""
    item_ids = list(item_ids)
    encoded = tokenizer([str(i) for i in item_ids], add_special_tokens=True)["input_ids"]
    return dict(zip(item_ids, encoded, strict=True))


class ItemTrie:
    """Prefix tree over the token sequences of valid item ids (each ending with `</s>`)."""

    def __init__(self, sequences: Mapping[int, Sequence[int]], eos_token_id: int = 1):
        self.eos_token_id = eos_token_id
        self.root: dict = {}
        self._items: dict[tuple[int, ...], int] = {}
        self._tokens: dict[int, tuple[int, ...]] = {}
        self._counts: dict[tuple[int, ...], int] = {}  # items below each prefix
        for item, tokens in sequences.items():
            tokens = tuple(tokens)
            if not tokens or tokens[-1] != eos_token_id:
                raise ValueError(f"token sequence of item {item} must end with </s> ({eos_token_id}), got {list(tokens)}")
            if tokens in self._items:
                raise ValueError(f"items {self._items[tokens]} and {item} have the same tokens {list(tokens)}")
            self._items[tokens], self._tokens[item] = item, tokens
            node = self.root
            for depth, token in enumerate(tokens, start=1):
                node = node.setdefault(token, {})
                self._counts[tokens[:depth]] = self._counts.get(tokens[:depth], 0) + 1

    @classmethod
    def from_tokenizer(cls, tokenizer, item_ids: Iterable[int]) -> ItemTrie:
        return cls(item_token_ids(tokenizer, item_ids), eos_token_id=tokenizer.eos_token_id)

    def __len__(self) -> int:
        return len(self._items)

    def item(self, tokens: Sequence[int]) -> int | None:
        """The item id a finished token sequence spells (decoder start and padding removed), or None."""
        tokens = [int(t) for t in tokens]
        if self.eos_token_id in tokens:
            tokens = tokens[: tokens.index(self.eos_token_id) + 1]
        return self._items.get(tuple(tokens))

    def excluded_counts(self, excluded: Iterable[int]) -> dict[tuple[int, ...], int]:
        """How many of the `excluded` items lie below each prefix (items not in the trie are ignored)."""
        counts: dict[tuple[int, ...], int] = {}
        for item in excluded:
            tokens = self._tokens.get(int(item), ())
            for depth in range(1, len(tokens) + 1):
                counts[tokens[:depth]] = counts.get(tokens[:depth], 0) + 1
        return counts

    def allowed_tokens(self, prefix: Sequence[int], excluded: dict[tuple[int, ...], int] | None = None) -> list[int]:
        """Tokens that keep `prefix` on the way to a valid item that is not excluded (`excluded_counts(...)`), so
        beams never enter a branch that holds excluded items only."""
        node, prefix = self.root, tuple(int(t) for t in prefix)
        for token in prefix:
            node = node.get(token)
            if node is None:
                return []
        if not excluded:
            return list(node)
        return [t for t in node if self._counts[prefix + (t,)] > excluded.get(prefix + (t,), 0)]

    def prefix_allowed_tokens_fn(
        self, excluded: Sequence[Iterable[int]] | None = None, pad_token_id: int = 0
    ) -> Callable[[int, torch.Tensor], list[int]]:
        """For `generate(prefix_allowed_tokens_fn=...)`; `excluded[b]` are item ids example b must not get."""
        excluded_by_example = [self.excluded_counts(e) for e in excluded] if excluded is not None else None

        def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
            prefix = sent[1:].tolist()  # drop the decoder start token
            if self.eos_token_id in prefix:  # a finished beam is padded
                return [pad_token_id]
            return self.allowed_tokens(prefix, excluded_by_example[batch_id] if excluded_by_example else None)

        return allowed


def parse_item_id(text: str) -> int | None:
    """An item id as it appears in prompts and targets (a decimal integer), or None for anything else.

    Stricter than the original `int(s)`, which also accepted signs, underscores and non-ASCII digits that no item id has.
    """
    stripped = text.strip()
    return int(stripped) if stripped.isascii() and stripped.isdigit() else None


@dataclass(frozen=True)
class ParsedOutputs:
    """One example's decoded outputs as a ranking, with the counts behind the valid-output share."""

    ranking: list[int]
    num_outputs: int
    num_valid: int


def parse_outputs(
    outputs: Sequence[str], valid_ids: Collection[int] | None = None, drop_invalid: bool = False
) -> ParsedOutputs:
    """Turn decoded sequences (best first) into a ranking of distinct item ids.

    An output is valid when it parses as an item id and, if `valid_ids` is given (the catalogue for sequential, the
    prompt's candidates for direct), is one of them. Unparseable outputs are always dropped; parseable ids outside
    `valid_ids` are kept (they occupy a rank, as in the paper protocol) unless `drop_invalid` is set.
    """
    if drop_invalid and valid_ids is None:
        raise ValueError("drop_invalid=True needs valid_ids: there is nothing to check the outputs against")
    ranking: list[int] = []
    seen: set[int] = set()
    num_valid = 0
    for text in outputs:
        item = parse_item_id(text)
        if item is None:
            continue
        valid = valid_ids is None or item in valid_ids
        num_valid += valid
        if (valid or not drop_invalid) and item not in seen:
            seen.add(item)
            ranking.append(item)
    return ParsedOutputs(ranking=ranking, num_outputs=len(outputs), num_valid=num_valid)


def valid_share(parsed: Sequence[ParsedOutputs]) -> float:
    """Share of all decoded outputs that were valid item ids (pooled over examples, so every output weighs the same)."""
    total = sum(p.num_outputs for p in parsed)
    if total == 0:
        raise ValueError("no decoded outputs: the valid-output share is undefined")
    return sum(p.num_valid for p in parsed) / total


def generate_ranked_items(
    model, inputs: Mapping[str, torch.Tensor], trie: ItemTrie | None = None, tokenizer=None, num_beams: int = 20,
    num_return_sequences: int | None = None, excluded: Sequence[set[int]] | None = None,
    max_new_tokens: int | None = 16, valid_ids: Collection[int] | Sequence[Collection[int]] | None = None,
    **generate_kwargs,
) -> list[ParsedOutputs]:
    """Beam search returning, per example, the item ids it produced, best first (`.ranking`), with output counts.

    With `trie`, decoding is constrained to valid items (the spec §8.3 fix) and every output is valid. Without it (the
    paper's protocol) beams are decoded with `tokenizer` and parsed by `parse_outputs` against `valid_ids`: one
    collection for every example (the catalogue), or a list with one per example (each prompt's candidates).
    `max_new_tokens=None` leaves the length to `generate_kwargs` (e.g. the paper's `max_length=50`).
    """
    if trie is None and tokenizer is None:
        raise ValueError("pass `trie` for constrained decoding or `tokenizer` to parse free beams")
    num_return_sequences = num_return_sequences or num_beams
    if trie is not None:
        generate_kwargs["prefix_allowed_tokens_fn"] = trie.prefix_allowed_tokens_fn(excluded)
    if max_new_tokens is not None:
        generate_kwargs["max_new_tokens"] = max_new_tokens
    sequences = model.generate(
        **{k: v for k, v in inputs.items() if k in ENCODER_INPUTS}, num_beams=num_beams,
        num_return_sequences=num_return_sequences, **generate_kwargs,
    )
    num_examples = sequences.shape[0] // num_return_sequences
    per_example = isinstance(valid_ids, Sequence) and len(valid_ids) > 0 and isinstance(valid_ids[0], Collection)
    if per_example and len(valid_ids) != num_examples:
        raise ValueError(f"valid_ids: {len(valid_ids)} collections for {num_examples} examples")
    results = []
    for b in range(num_examples):
        beams = sequences[b * num_return_sequences : (b + 1) * num_return_sequences]
        if trie is not None:
            texts = [str(item) for seq in beams if (item := trie.item(seq[1:])) is not None]
            parsed = parse_outputs(texts)
            results.append(ParsedOutputs(parsed.ranking, num_outputs=len(beams), num_valid=len(texts)))
        else:
            valid = valid_ids[b] if per_example else valid_ids
            results.append(parse_outputs(tokenizer.batch_decode(beams, skip_special_tokens=True), valid))
    return results


@dataclass
class _Primed:
    """The encoder pass and the decoder's first step of a batch, shared by every candidate of every example."""

    model: Any
    hidden: torch.Tensor
    mask: torch.Tensor
    cache: EncoderDecoderCache
    first_log_probs: torch.Tensor  # [batch, vocab]: log-probs of every candidate's first token

    @classmethod
    def of(cls, model, inputs: Mapping[str, torch.Tensor]) -> _Primed:
        encoder_inputs = {k: v for k, v in inputs.items() if k in ENCODER_INPUTS}
        encoder_outputs = model.get_encoder()(**encoder_inputs)
        hidden, mask = encoder_outputs.last_hidden_state, encoder_inputs["attention_mask"]
        start = torch.full((hidden.shape[0], 1), model.config.decoder_start_token_id, device=hidden.device)
        primed = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=start, use_cache=True,
                       cache=EncoderDecoderCache(DynamicCache(), DynamicCache()))
        return cls(model, hidden, mask, primed.cache, torch.log_softmax(primed.logits[:, 0].float(), dim=-1))

    def score(self, b: int, candidates: Sequence[Sequence[int]]) -> torch.Tensor:
        """Exact log-likelihoods of example b's candidates (token lists ending with `</s>`): the first token from the
        shared step, the rest in one decoder pass whose caches are example b's, seen as stride-0 views."""
        labels = _pad([list(c) for c in candidates], -100).to(self.hidden.device)
        score = self.first_log_probs[b, labels[:, 0]]
        if labels.shape[1] > 1:
            n, config = labels.shape[0], self.model.config
            cache = EncoderDecoderCache(*(_shared_cache(c, b, n) for c in (
                self.cache.self_attention_cache, self.cache.cross_attention_cache)))
            logits = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=self.hidden[b : b + 1].expand(n, -1, -1)),
                attention_mask=self.mask[b : b + 1].expand(n, -1),
                decoder_input_ids=labels[:, :-1].clamp(min=config.pad_token_id), cache=cache, use_cache=True,
            ).logits
            rest = labels[:, 1:]
            token_scores = torch.log_softmax(logits.float(), dim=-1).gather(-1, rest.clamp(min=0).unsqueeze(-1))
            score = score + (token_scores.squeeze(-1) * (rest != -100)).sum(dim=1)
        return score


@torch.no_grad()
def score_candidates(
    model, inputs: Mapping[str, torch.Tensor], candidate_token_ids: Sequence[Sequence[Sequence[int]]],
    chunk_size: int = 128,
) -> list[torch.Tensor]:
    """Log-likelihood of each candidate's tokens given the prompt: per example a `[num_candidates]` tensor.

    `candidate_token_ids[b]` lists the target token sequences (ending with `</s>`) to score for example b. The sum of
    token log-probabilities is the exact sequence probability that beam search approximates.
    """
    primed = _Primed.of(model, inputs)
    scores = []
    for b, candidates in enumerate(candidate_token_ids):
        chunks = [primed.score(b, candidates[i : i + chunk_size]) for i in range(0, len(candidates), chunk_size)]
        scores.append(torch.cat(chunks) if chunks else primed.first_log_probs.new_zeros(0))
    return scores


@torch.no_grad()
def top_k_exact(model, inputs: Mapping[str, torch.Tensor], candidates: Sequence[Sequence[int]],
                item_tokens: Mapping[int, Sequence[int]], k: int, excluded: Sequence[Collection[int]],
                chunk_size: int = 64) -> list[ScoredItems]:
    """The k best candidates by exact log-likelihood without scoring them all: a sequence's log-likelihood never
    exceeds its first token's, so candidates are scored best bound first and the search stops once the k-th best
    exact score beats every remaining bound. The result equals `top_scored` over all scores (ties keep candidate
    order); on a catalogue of one-token ids it scores a few dozen items instead of all of them."""
    primed, results = _Primed.of(model, inputs), []
    for b, (row, skip) in enumerate(zip(candidates, excluded, strict=True)):
        keep = [j for j, item in enumerate(row) if item not in skip]
        first = torch.tensor([item_tokens[row[j]][0] for j in keep], dtype=torch.long)
        bounds = primed.first_log_probs[b, first.to(primed.first_log_probs.device)].cpu()
        order = bounds.argsort(descending=True, stable=True).tolist()
        scored: dict[int, float] = {}
        for start in range(0, len(order), chunk_size):
            if len(scored) >= k and sorted(scored.values(), reverse=True)[k - 1] > bounds[order[start]]:
                break
            chunk = order[start : start + chunk_size]
            exact = primed.score(b, [item_tokens[row[keep[j]]] for j in chunk]).tolist()
            scored.update(zip(chunk, exact, strict=True))
        positions = sorted(scored)  # candidate order, so ties break as in `top_scored`
        subset = top_scored([row[keep[j]] for j in positions], torch.tensor([scored[j] for j in positions]), k)
        results.append(subset)
    return results


def _shared_cache(cache: DynamicCache, b: int, n: int) -> DynamicCache:
    """Example b's cached keys/values, seen by n candidates without copying (expand, not repeat)."""
    shared = DynamicCache([(layer.keys[b : b + 1], layer.values[b : b + 1]) for layer in cache.layers])
    for layer in shared.layers:
        layer.keys, layer.values = layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1)
    return shared


@dataclass(frozen=True)
class ScoredItems:
    """One example's items best first, each with its exact log-likelihood given the prompt."""

    items: list[int]
    scores: list[float]


def top_scored(items: Sequence[int], scores: torch.Tensor, k: int | None = None,
               excluded: Collection[int] = ()) -> ScoredItems:
    """The k best `items` by score (all by default), never an excluded one; ties keep the order of `items`."""
    keep = [j for j, item in enumerate(items) if item not in excluded] if excluded else list(range(len(items)))
    kept = scores[keep] if keep else scores.new_zeros(0)
    order = kept.argsort(descending=True, stable=True)[:k].tolist()
    return ScoredItems(items=[items[keep[j]] for j in order], scores=kept[order].tolist())


def rank_items(
    model, inputs: Mapping[str, torch.Tensor], candidates: Sequence[Sequence[int]],
    item_tokens: Mapping[int, Sequence[int]], k: int | None = None, excluded: Sequence[Collection[int]] | None = None,
    chunk_size: int = 128,
) -> list[ScoredItems]:
    """Per example, its candidate item ids ranked by exact log-likelihood (`score_candidates`), the k best, none of
    `excluded[b]`. `item_tokens` maps every candidate to its target tokens (`item_token_ids`, computed once per
    catalogue); with the whole catalogue as every example's candidates this is the full ranking. With k, the search
    of `top_k_exact` decides how many candidates each decoder pass scores; `chunk_size` applies when all are scored."""
    excluded = excluded if excluded is not None else [()] * len(candidates)
    if k is not None:
        return top_k_exact(model, inputs, candidates, item_tokens, k, excluded)
    scores = score_candidates(model, inputs, [[item_tokens[i] for i in row] for row in candidates], chunk_size)
    return [top_scored(row, s, k, e) for row, s, e in zip(candidates, scores, excluded, strict=True)]


def rank_candidates(
    model, inputs: Mapping[str, torch.Tensor], candidates: Sequence[Sequence[int]], tokenizer, chunk_size: int = 128,
) -> list[list[int]]:
    """Candidates (item ids) of each example sorted by the model's likelihood, best first."""
    tokens = item_token_ids(tokenizer, sorted({i for row in candidates for i in row}))
    return [r.items for r in rank_items(model, inputs, candidates, tokens, chunk_size=chunk_size)]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


__all__ = [
    "ItemTrie", "ParsedOutputs", "ScoredItems", "generate_ranked_items", "item_token_ids", "parse_item_id",
    "parse_outputs", "rank_candidates", "rank_items", "score_candidates", "top_k_exact", "top_scored", "valid_share",
]
