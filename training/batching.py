"""Batches of one task family each: the same examples per epoch, far less padding.

A batch is padded to its longest prompt. In the paper's task mix a direct prompt lists 100 candidates with k image
placeholders each (~600 tokens) while a sequential prompt is a few dozen, so a random batch is mostly padding.
`TaskBatchSampler` shuffles the examples of each family, cuts them into batches, and shuffles the batches: every
example is still seen once per epoch, the families still alternate at random, and the order is a function of
(seed, epoch) alone, so a resumed run (accelerate's `skip_first_batches`) repeats an uninterrupted one exactly.

Within a family the lengths still vary (sequential histories of 3 to 200 items, direct prompts with 1 or 100
candidates). Given a `length`, the sampler also groups by length as transformers' Trainer does with
`group_by_length`: each family's shuffled examples are cut into mega-batches of `mega_batches` batches, each
mega-batch is sorted by length before it is cut into batches. Still exact and a function of (seed, epoch); the lengths
of a mega-batch are read only when one of its batches is first yielded, so the cost is spread over the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch


class TaskBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Index batches over a `TrainingExamples`, whose families are consecutive index ranges (`counts`, in order).
    The epoch is the dataset's own (`set_epoch` of the training loop), so every wrapper accelerate puts around this
    sampler sees the same order. `length(index)` (of the current epoch's example) switches on length grouping."""

    def __init__(self, dataset, batch_size: int, seed: int, length: Callable[[int], int] | None = None,
                 mega_batches: int = 50):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.length, self.mega_batches = length, mega_batches
        self.drop_last = False  # read by accelerate's sharding

    def __len__(self) -> int:
        return sum(math.ceil(count / self.batch_size) for count in self.dataset.counts.values())

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.dataset.epoch, 7])
        orders, start = [], 0
        for count in self.dataset.counts.values():
            orders.append(start + rng.permutation(count))
            start += count
        batches = [(family, i) for family, order in enumerate(orders) for i in range(0, len(order), self.batch_size)]
        grouped: dict[tuple[int, int], list[list[int]]] = {}  # (family, mega-batch) -> its batches, made on first use
        mega = self.mega_batches * self.batch_size
        for index in rng.permutation(len(batches)):
            family, first = batches[index]
            if self.length is None:
                yield orders[family][first : first + self.batch_size].tolist()
                continue
            key = (family, first // mega)
            if key not in grouped:
                grouped[key] = self._grouped(orders[family][key[1] * mega : (key[1] + 1) * mega], key)
            yield grouped[key][first % mega // self.batch_size]

    def _grouped(self, chunk: np.ndarray, key: tuple[int, int]) -> list[list[int]]:
        """The batches of one mega-batch: sorted by length (ties keep the shuffled order), then the batches shuffled
        with their own generator, so the order of the epoch's batches never depends on which was made first."""
        lengths = np.array([self.length(int(i)) for i in chunk])
        ordered = chunk[np.argsort(-lengths, kind="stable")]
        cut = [ordered[i : i + self.batch_size].tolist() for i in range(0, len(ordered), self.batch_size)]
        # the last, possibly short, batch of a family stays in place: batch positions are fixed before lengths are read
        rng = np.random.default_rng([self.seed, self.dataset.epoch, 11, *key])
        full = len(cut) - (len(cut[-1]) < self.batch_size)
        return [cut[i] for i in rng.permutation(full)] + cut[full:]


def rendered_length(dataset, processor) -> Callable[[int], int]:
    """Length of example i as the characters of its rendered prompt: rank-correlated 0.94 (linear 0.9996) with its
    token count on the Beauty mix and ~3x cheaper than tokenising (about 0.1 ms per example with the rendering)."""

    def length(index: int) -> int:
        example = dataset[index]
        return len(processor.render(example.template_id, separator=example.separator, **example.fields).source)

    return length
