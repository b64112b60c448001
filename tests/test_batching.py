"""Task-grouped batches: every example once per epoch, one family per batch, the same order for the same seed and
epoch, and a resumed loader (accelerate's `skip_first_batches`) continues exactly where an uninterrupted one would."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches

from training.batching import TaskBatchSampler


class Mix(torch.utils.data.Dataset):
    """Stands in for `TrainingExamples`: consecutive index ranges per family and an epoch set by the loop."""

    def __init__(self, counts: dict[str, int]):
        self.counts, self.epoch = counts, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.counts.values())

    def __getitem__(self, index: int) -> int:
        return index

    def family(self, index: int) -> str:
        for name, count in self.counts.items():
            if index < count:
                return name
            index -= count
        raise IndexError(index)


def epoch_batches(dataset: Mix, epoch: int, seed: int = 3, size: int = 8) -> list[list[int]]:
    dataset.set_epoch(epoch)
    return list(TaskBatchSampler(dataset, size, seed))


def test_every_example_once_per_epoch_and_one_family_per_batch():
    dataset = Mix({"sequential": 45, "direct": 20, "explanation": 17})
    batches = epoch_batches(dataset, 0)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(dataset)))
    assert all(len({dataset.family(i) for i in batch}) == 1 for batch in batches)
    assert len(batches) == len(TaskBatchSampler(dataset, 8, 3)) == 6 + 3 + 3
    families = [dataset.family(batch[0]) for batch in batches]
    assert families != sorted(families, key=list(dataset.counts).index)  # the families alternate, not in blocks


def test_order_is_a_function_of_seed_and_epoch():
    dataset = Mix({"sequential": 40, "direct": 24})
    assert epoch_batches(dataset, 1) == epoch_batches(dataset, 1)
    assert epoch_batches(dataset, 1) != epoch_batches(dataset, 2)
    assert epoch_batches(dataset, 1, seed=3) != epoch_batches(dataset, 1, seed=4)


def test_a_resumed_loader_continues_the_uninterrupted_order():
    dataset = Mix({"sequential": 40, "direct": 24, "explanation": 9})
    accelerator = Accelerator(cpu=True)

    def loader():
        return accelerator.prepare(torch.utils.data.DataLoader(dataset, batch_sampler=TaskBatchSampler(dataset, 8, 5)))

    dataset.set_epoch(2)
    full = [batch.tolist() for batch in loader()]
    resumed = [batch.tolist() for batch in skip_first_batches(loader(), 4)]
    assert resumed == full[4:]
