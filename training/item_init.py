"""Warm start for a backbone trained from scratch: item-token embeddings from the training co-purchase graph.

A pretrained t5-small knows language but nothing about items; a backbone trained from scratch knows neither, and in a
few CPU minutes it learns the prompts' words and the items' popularity long before it learns which items go together
(its loss sits at the popularity level for hundreds of steps). Setting the embedding rows of the item-id tokens to the
spectral co-purchase embedding of the training interactions (the vectors the `collaborative` indexing clusters) gives
the model that structure from the first step: items bought by the same users start close, and as the embedding is
tied to the output layer, "an item like the last one" is one short step from the start. Only training interactions
are used, so nothing of the validation or test items leaks in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from data_builders.domain import Interactions
from data_builders.semantic_ids import co_purchase_embedding

MAX_DIM = 64  # spectral components beyond the first few dozen are noise on a domain of this size


def init_item_embeddings(model: torch.nn.Module, tokenizer, train_sequences: Sequence[Sequence[int]],
                         item_ids: Sequence[int], seed: int) -> int:
    """Overwrite the input-embedding rows of the item ids that are one token each; returns how many were set.

    The vectors keep the embedding's scale (row norm of the random initialisation) and fill the first dimensions;
    a third of the random row stays, so items with equal vectors remain distinguishable.
    """
    embedding = model.get_input_embeddings().weight
    dim = min(MAX_DIM, embedding.shape[1])
    num_items = max(int(max(item_ids)), max(int(max(s)) for s in train_sequences if len(s)))
    vectors = co_purchase_embedding(Interactions.from_lists([list(map(int, s)) for s in train_sequences]),
                                    num_items, dim, holdout=0, seed=seed)
    scale = float(embedding.detach().norm(dim=1).mean())
    encoded = tokenizer([str(i) for i in item_ids], add_special_tokens=False)["input_ids"]
    rows = [(int(item), ids[0]) for item, ids in zip(item_ids, encoded, strict=True) if len(ids) == 1]
    if not rows:
        return 0
    items, tokens = (torch.tensor(x) for x in zip(*rows, strict=True))
    update = torch.zeros(len(rows), embedding.shape[1])
    update[:, : vectors.shape[1]] = torch.from_numpy(np.ascontiguousarray(vectors[items.numpy()])).float() * scale
    with torch.no_grad():
        embedding[tokens] = update.to(embedding.dtype) + embedding[tokens] / 3
    return len(rows)
