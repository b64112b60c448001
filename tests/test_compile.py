"""`compile: true` (`nn.Module.compile`, inductor): the same training losses, gradients and parameter names as eager.

Inductor draws its own dropout masks, so the comparison runs without dropout (the tiny config's `dropout_rate=0`).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import tiny_config_kwargs
from safetensors.torch import load_file
from test_train import flags
from train_fixture import TINY_MODEL

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration
from training.config import TrainConfig, load_config
from training.train import apply_tuning_method, optimizer_groups, train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                       reason="inductor on CPU needs a C++ compiler"),
]


def adapter_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    config = TrainConfig(reduction_factor=4)
    model = apply_tuning_method(VIP5ForConditionalGeneration(VIP5Config(**tiny_config_kwargs())), config).train()
    return model, torch.optim.AdamW(optimizer_groups(model, config.weight_decay), lr=1e-2)


def batch(length: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(100, 30000, (3, length), generator=generator)
    input_ids[:, 1:5] = VIP5Config().image_token_id  # two items, k = 2
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, length // 2 :] = 0  # padding: the mask goes through the compiled attention too
    return dict(input_ids=input_ids, attention_mask=attention_mask,
                image_features=torch.randn(3, 2, 16, generator=generator),
                labels=torch.randint(100, 30000, (3, 4), generator=generator))


def steps(model, optimizer, batches: list[dict]) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses of a few training steps, and the gradients of the first."""
    losses, gradients = [], {}
    for index, inputs in enumerate(batches):
        loss = model(**inputs).loss
        loss.backward()
        if index == 0:
            gradients = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, gradients


def test_a_compiled_training_step_matches_eager():
    torch._dynamo.reset()
    batches = [batch(12, 0), batch(12, 1), batch(20, 2)]  # a new length: the compiled forward recompiles
    eager_model, eager_optimizer = adapter_model()
    compiled_model, compiled_optimizer = adapter_model()
    compiled_model.compile()
    eager_losses, eager_gradients = steps(eager_model, eager_optimizer, batches)
    compiled_losses, compiled_gradients = steps(compiled_model, compiled_optimizer, batches)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    assert compiled_gradients.keys() == eager_gradients.keys() and len(eager_gradients) > 10
    for name, gradient in eager_gradients.items():
        torch.testing.assert_close(compiled_gradients[name], gradient, rtol=1e-3, atol=1e-5, msg=name)
    initial = dict(adapter_model()[0].named_parameters())
    for name, parameter in eager_model.named_parameters():
        if parameter.requires_grad:
            assert not torch.equal(parameter, initial[name]), name  # three optimizer steps moved every trained weight
            torch.testing.assert_close(dict(compiled_model.named_parameters())[name], parameter, rtol=1e-3,
                                       atol=1e-5, msg=name)
    assert list(compiled_model.state_dict()) == list(eager_model.state_dict())  # checkpoints load either way


def test_vip5_train_with_compile_logs_the_eager_losses(tiny_dataset, tmp_path):
    """`compile: true` through `vip5-train` (accelerate, the adapter's checkpoint): the losses of the eager run."""
    runs = {}
    for name, compile_ in (("eager", "false"), ("compiled", "true")):
        settings = dict(epochs=1, model_config=json.dumps({**TINY_MODEL, "dropout_rate": 0.0}), compile=compile_)
        result = train(load_config(flags(tiny_dataset, tmp_path / name, **settings)))
        log = (tmp_path / name / "logs" / "log.jsonl").read_text().splitlines()
        runs[name] = [record["loss"] for record in map(json.loads, log) if "loss" in record], result.folder
    (eager_losses, eager_folder), (compiled_losses, compiled_folder) = runs["eager"], runs["compiled"]
    assert len(eager_losses) > 2 and compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    eager_adapter = load_file(eager_folder / "adapter_model.safetensors")
    compiled_adapter = load_file(compiled_folder / "adapter_model.safetensors")
    assert compiled_adapter.keys() == eager_adapter.keys()  # the same parameter names: no `_orig_mod.` prefix
