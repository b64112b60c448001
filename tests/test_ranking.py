"""Ranking helpers: the prefix trie, constrained beam search and exact candidate scoring."""

from __future__ import annotations

import pytest
import torch
from test_modeling import make_batch

from modeling_vip5.ranking import ItemTrie, generate_ranked_items, score_candidates, top_k_exact, top_scored

# item id -> target tokens (ending with </s> = 1); 17 is a prefix of 17 40 (two items share a start)
ITEMS = {101: [17, 1], 102: [17, 40, 1], 103: [18, 41, 1], 104: [19, 1], 105: [18, 42, 1]}


def test_trie_allows_only_paths_to_valid_items():
    trie = ItemTrie(ITEMS)
    assert sorted(trie.allowed_tokens([])) == [17, 18, 19]
    assert sorted(trie.allowed_tokens([17])) == [1, 40]
    assert trie.allowed_tokens([17], excluded=trie.excluded_counts({101})) == [40]
    assert sorted(trie.allowed_tokens([], excluded=trie.excluded_counts({104}))) == [17, 18]  # 19 leads to 104 only
    assert sorted(trie.allowed_tokens([18], excluded=trie.excluded_counts({103, 999}))) == [42]
    assert trie.allowed_tokens([20]) == []
    assert trie.item([17, 40, 1, 0, 0]) == 102 and trie.item([17, 40]) is None


def test_constrained_beam_search_returns_only_valid_and_allowed_items(tiny_model):
    batch = make_batch(tiny_model.config)
    trie = ItemTrie(ITEMS)
    rankings = [p.ranking for p in generate_ranked_items(tiny_model, batch, trie=trie, num_beams=5,
                                                         excluded=[{101}, set()])]
    assert len(rankings) == 2
    for ranking, excluded in zip(rankings, [{101}, set()], strict=True):
        assert ranking and set(ranking) <= set(ITEMS) - excluded
        assert len(ranking) == len(set(ranking))
    assert 101 not in rankings[0]


def test_scores_equal_the_likelihood_from_a_full_forward_pass(tiny_model):
    batch = make_batch(tiny_model.config)
    candidates = [[ITEMS[101], ITEMS[102], ITEMS[103]], [ITEMS[104], ITEMS[105]]]
    scores = score_candidates(tiny_model, batch, candidates, chunk_size=2)
    for b, rows in enumerate(candidates):
        for c, tokens in enumerate(rows):
            single = {k: v[b : b + 1] for k, v in batch.items()}
            labels = torch.tensor([tokens])
            with torch.no_grad():
                logits = tiny_model(**single, labels=labels).logits
            expected = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).sum()
            torch.testing.assert_close(scores[b][c], expected, atol=1e-4, rtol=1e-5)


def test_constrained_beams_agree_with_exact_scoring_on_the_best_item(tiny_model):
    """With as many beams as items, beam search is exhaustive: its best item is the best-scored item."""
    batch = make_batch(tiny_model.config)
    trie = ItemTrie(ITEMS)
    best_beam = [p.ranking[0] for p in generate_ranked_items(tiny_model, batch, trie=trie, num_beams=5,
                                                             length_penalty=0.0)]
    scores = score_candidates(tiny_model, batch, [list(ITEMS.values())] * 2)
    best_scored = [list(ITEMS)[int(s.argmax())] for s in scores]
    assert best_beam == best_scored


class FirstTokenTokenizer:
    """Decodes a beam as its first generated token id, so every beam parses as an item id."""

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return [str(int(seq[1])) for seq in sequences]


def test_free_beams_are_parsed_against_each_examples_own_valid_ids(tiny_model):
    batch = make_batch(tiny_model.config)
    vocabulary = set(range(tiny_model.config.vocab_size))
    shared = generate_ranked_items(tiny_model, batch, tokenizer=FirstTokenTokenizer(), num_beams=4,
                                   max_new_tokens=2, valid_ids=vocabulary)
    assert [p.num_valid for p in shared] == [4, 4]
    own = generate_ranked_items(tiny_model, batch, tokenizer=FirstTokenTokenizer(), num_beams=4, max_new_tokens=2,
                                valid_ids=[vocabulary, set()])  # nothing is valid for the second prompt
    assert own[0] == shared[0]
    # the same beams; invalid outputs keep their rank (the paper protocol) but count as invalid
    assert (own[1].num_outputs, own[1].num_valid, own[1].ranking) == (4, 0, shared[1].ranking)
    with pytest.raises(ValueError, match="valid_ids: 1 collections for 2 examples"):
        generate_ranked_items(tiny_model, batch, tokenizer=FirstTokenTokenizer(), num_beams=4, max_new_tokens=2,
                              valid_ids=[vocabulary])


@pytest.mark.parametrize("k", [1, 3, 6])
def test_pruned_top_k_equals_the_top_of_every_score(tiny_model, k):
    """`top_k_exact` scores candidates best bound first and stops early; its top k (items, scores, tie order) must be
    what scoring every candidate gives, with exclusions, over one- and multi-token ids (ITEMS mixes both)."""
    batch = make_batch(tiny_model.config)
    row = list(ITEMS)
    excluded = [{row[0]}, set()]
    everything = score_candidates(tiny_model, batch, [list(ITEMS.values())] * 2)
    pruned = top_k_exact(tiny_model, batch, [row, row], ITEMS, k, excluded, chunk_size=1)
    for b in range(2):
        expected = top_scored(row, everything[b], k, excluded[b])
        assert pruned[b].items == expected.items
        torch.testing.assert_close(torch.tensor(pruned[b].scores), torch.tensor(expected.scores), atol=1e-5, rtol=0)
