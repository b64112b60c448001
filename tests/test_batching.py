"""Task-grouped batches: every example once per epoch, one family per batch, the same order for the same seed and
epoch, and a resumed loader (accelerate's `skip_first_batches`) continues exactly where an uninterrupted one would."""

from __future__ import annotations

import re
import signal
import time

import pytest
import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches
from safetensors.torch import load_file
from test_train import flags, run_training

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


def grouped_batches(dataset: Mix, epoch: int, seed: int = 3, size: int = 4) -> list[list[int]]:
    dataset.set_epoch(epoch)
    return list(TaskBatchSampler(dataset, size, seed, length=lambda i: epoch_length(dataset, i), mega_batches=3))


def epoch_length(dataset: Mix, index: int) -> int:
    """Lengths that change with the epoch, as `TrainingExamples` redraws templates and histories per epoch."""
    return (index * 7919 + dataset.epoch * 104729) % 97


def padded_share(dataset: Mix, batches: list[list[int]]) -> float:
    real = sum(epoch_length(dataset, i) for batch in batches for i in batch)
    return 1 - real / sum(len(batch) * max(epoch_length(dataset, i) for i in batch) for batch in batches)


def test_length_grouping_is_exact_one_family_per_batch_and_cuts_padding():
    dataset = Mix({"sequential": 45, "direct": 20, "explanation": 17})
    batches = grouped_batches(dataset, 0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(dataset)))
    assert all(len({dataset.family(i) for i in batch}) == 1 for batch in batches)
    assert len(batches) == len(TaskBatchSampler(dataset, 4, 3)) == 12 + 5 + 5
    assert [len(b) for b in batches].count(1) == 2  # the short last batches of sequential and explanation
    assert padded_share(dataset, batches) < 0.6 * padded_share(dataset, epoch_batches(dataset, 0, size=4))


def test_length_grouping_order_is_a_function_of_seed_and_epoch():
    dataset = Mix({"sequential": 40, "direct": 24})
    assert grouped_batches(dataset, 1) == grouped_batches(dataset, 1)
    assert grouped_batches(dataset, 1) != grouped_batches(dataset, 2)
    assert grouped_batches(dataset, 1, seed=3) != grouped_batches(dataset, 1, seed=4)
    assert grouped_batches(dataset, 1) != epoch_batches(dataset, 1, size=4)


def test_a_resumed_length_grouped_loader_continues_the_uninterrupted_order():
    dataset = Mix({"sequential": 40, "direct": 24, "explanation": 9})
    accelerator = Accelerator(cpu=True)

    def loader():
        sampler = TaskBatchSampler(dataset, 4, 5, length=lambda i: epoch_length(dataset, i), mega_batches=2)
        return accelerator.prepare(torch.utils.data.DataLoader(dataset, batch_sampler=sampler))

    dataset.set_epoch(2)
    full = [batch.tolist() for batch in loader()]
    resumed = [batch.tolist() for batch in skip_first_batches(loader(), 7)]
    assert resumed == full[7:]
    assert sorted(i for batch in full for i in batch) == list(range(len(dataset)))


@pytest.mark.slow
def test_a_length_grouped_run_killed_mid_epoch_resumes_to_the_same_weights(tiny_dataset, tmp_path):
    """`batching: task_length` through `vip5-train`: kill -9 after a mid-epoch checkpoint, resume, same adapter."""
    # 16 prompts in batches of 3: 6 steps per epoch, so the checkpoints of steps 4 and 8 are both mid-epoch
    common = dict(epochs=2, save_every=4, keep_checkpoints=2, batching="task_length", per_device_batch_size=3)
    reference = run_training(flags(tiny_dataset, tmp_path / "reference", **common))
    assert reference.wait(timeout=600) == 0, reference.stdout.read()[-3000:]
    killed = tmp_path / "killed"
    victim = run_training(flags(tiny_dataset, killed, **common))
    while not list(killed.glob("checkpoint-*")) and victim.poll() is None:
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "adapter").exists()
    resumed = run_training(flags(tiny_dataset, killed, resume_from="latest", **common))
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0 and "resumed from" in output, output[-3000:]
    assert int(re.search(r"resumed from .* at step (\d+)", output)[1]) % 6, "resumed at an epoch boundary"
    expected = load_file(tmp_path / "reference" / "adapter" / "adapter_model.safetensors")
    got = load_file(killed / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)
