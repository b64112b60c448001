"""VIP5's default attention (`vip5_sdpa`): SDPA's fused kernels where they apply, and T5's own formula for
attention-probability dropout on a CPU; either way the maths of T5's eager attention, dropout masks included."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config_kwargs
from transformers.integrations.sdpa_attention import create_position_bias_mask, sdpa_attention_forward

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.modeling_vip5 import VIP5_SDPA, eager_attention


def model(attention: str | None, dropout: float) -> VIP5ForConditionalGeneration:
    torch.manual_seed(0)
    kwargs = tiny_config_kwargs(dropout_rate=dropout) | ({"attn_implementation": attention} if attention else {})
    return VIP5ForConditionalGeneration(VIP5Config(**kwargs)).train()


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(100, 30000, (3, 14), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    return dict(input_ids=input_ids, attention_mask=attention_mask,
                labels=torch.randint(100, 30000, (3, 5), generator=generator))


def test_vip5_models_default_to_vip5_sdpa_and_an_explicit_choice_stays():
    assert model(None, 0.1).config._attn_implementation == VIP5_SDPA
    assert model(None, 0.1).encoder.block[0].layer[0].SelfAttention.config._attn_implementation == VIP5_SDPA
    assert model("sdpa", 0.1).config._attn_implementation == "sdpa"


@pytest.mark.parametrize("causal", [False, True])
def test_the_eager_branch_equals_sdpa_without_dropout(causal):
    generator = torch.Generator().manual_seed(2)
    query, key, value = (torch.randn(2, 4, 6, 8, generator=generator) for _ in range(3))
    bias = torch.randn(1, 4, 6, 6, generator=generator)
    padding = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    padding[1, ..., 4:] = False
    module = torch.nn.Module()
    module.is_causal = causal
    expected, _ = sdpa_attention_forward(module, query, key, value, None if causal else padding, scaling=1.0,
                                         position_bias=bias)
    mask = create_position_bias_mask(bias, None if causal else padding, causal, query, key)
    torch.testing.assert_close(eager_attention(query, key, value, mask, 0.0, 1.0), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_with_dropout_reproduces_t5_eager_attention(dtype):
    """Same seed, same dropout masks: the loss and every gradient of T5's eager attention (the original's maths)."""
    results = []
    for attention in ("eager", None):
        network = model(attention, 0.1)
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = network(**batch()).loss
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in network.named_parameters() if p.grad is not None}))
    (eager_loss, eager_grads), (loss, grads) = results
    assert loss == pytest.approx(eager_loss, rel=1e-6)
    assert grads.keys() == eager_grads.keys()
    for name, gradient in grads.items():
        torch.testing.assert_close(gradient, eager_grads[name], atol=1e-6, rtol=1e-5, msg=name)
    network.eval()
    with torch.no_grad():  # evaluation takes SDPA's fused kernel: the same outputs as eager within rounding
        evaluated = network(**batch()).loss
        reference = model("eager", 0.1).eval()(**batch()).loss
    torch.testing.assert_close(evaluated, reference, atol=1e-5, rtol=1e-5)
