"""Batches of one task family each: the same examples per epoch, far less padding.

A batch is padded to its longest prompt. In the paper's task mix a direct prompt lists 100 candidates with k image
placeholders each (~600 tokens) while a sequential prompt is a few dozen, so a random batch is mostly padding.
`TaskBatchSampler` shuffles the examples of each family, cuts them into batches, and shuffles the batches: every
example is still seen once per epoch, the families still alternate at random, and the order is a function of
(seed, epoch) alone, so a resumed run (accelerate's `skip_first_batches`) repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch


class TaskBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Index batches over a `TrainingExamples`, whose families are consecutive index ranges (`counts`, in order).
    The epoch is the dataset's own (`set_epoch` of the training loop), so every wrapper accelerate puts around this
    sampler sees the same order."""

    def __init__(self, dataset, batch_size: int, seed: int):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.drop_last = False  # read by accelerate's sharding

    def __len__(self) -> int:
        return sum(math.ceil(count / self.batch_size) for count in self.dataset.counts.values())

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.dataset.epoch, 7])
        batches, start = [], 0
        for count in self.dataset.counts.values():
            order = start + rng.permutation(count)
            batches += [order[i : i + self.batch_size].tolist() for i in range(0, count, self.batch_size)]
            start += count
        for index in rng.permutation(len(batches)):
            yield batches[index]
