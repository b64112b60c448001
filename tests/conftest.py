"""Shared fixtures: tiny VIP5 configs and the location of the workplace's shared reference files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizer_fixture import t5_tokenizer  # noqa: F401  (session fixture shared by the test modules)
from train_fixture import tiny_dataset  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[2] / "shared"
# The original implementation's tiny checkpoint and outputs, vendored from shared/golden (see its README).
GOLDEN = Path(__file__).resolve().parent / "golden" / "vip5-tiny-original"


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one state per process, mixed precision included: a test that trained in bf16 would make the
    next `Accelerator()` refuse fp32. Reset after every test, as accelerate's own `AccelerateTestCase` does."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def require_shared(*parts: str) -> Path:
    """Path below ../shared, or skip the test with the reason when the workplace files are not beside the repo."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the workplace's shared/ folder beside the repository), which is absent")
    return path


def assert_matches_golden(model, golden: dict[str, torch.Tensor]) -> None:
    """The original code's outputs (tests/golden): encoder states, logits, paper loss, greedy ids."""
    inputs = {k: golden[k] for k in ("input_ids", "attention_mask", "whole_word_ids", "category_ids")}
    inputs["image_features_mask"] = golden_image_features_mask(golden, model.config)
    with torch.no_grad():
        out = model(**inputs, image_features=golden["vis_feats"], labels=golden["labels"])
    torch.testing.assert_close(out.encoder_last_hidden_state, golden["encoder_last_hidden_state"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, golden["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, golden["loss_paper"].squeeze(), atol=1e-5, rtol=1e-5)
    generated = model.generate(**inputs, image_features=golden["vis_feats"], max_length=6, do_sample=False)
    assert torch.equal(generated, golden["greedy_generate"])


def golden_image_features_mask(golden: dict[str, torch.Tensor], config) -> torch.Tensor:
    """Which `vis_feats` rows are items (the rest are zero padding, as in the original's batches): the first
    placeholders / k rows of each example."""
    items = (golden["input_ids"] == config.image_token_id).sum(dim=1) // config.num_image_tokens
    return torch.arange(golden["vis_feats"].shape[1]) < items.unsqueeze(1)


def tiny_config_kwargs(**overrides) -> dict:
    """A VIP5 small enough for unit tests (d_model 32, 2+2 layers) with a real-size vocabulary."""
    kwargs = dict(
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, image_feature_dim=16,
        num_image_tokens=2, dropout_rate=0.0,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tiny_config():
    from modeling_vip5 import VIP5Config

    return VIP5Config(**tiny_config_kwargs())


@pytest.fixture
def tiny_model(tiny_config):
    from modeling_vip5 import VIP5ForConditionalGeneration

    torch.manual_seed(0)
    return VIP5ForConditionalGeneration(tiny_config).eval()
