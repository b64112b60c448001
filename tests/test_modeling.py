"""VIP5ForConditionalGeneration: parameter counts, equivalence with the original code, generation, saving and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GOLDEN, assert_matches_golden, golden_image_features_mask, tiny_config_kwargs
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, LogitsProcessor, LogitsProcessorList
from transformers.activations import ACT2FN

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration
from training.convert import split_original_state_dict

IMG = 32099
REPO = Path(__file__).resolve().parents[1]


def make_batch(config: VIP5Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two prompts: the first with 3 photographed items, the second with 1 and a padded feature row and padding."""
    g = torch.Generator().manual_seed(seed)
    k = config.num_image_tokens
    ex1 = [5, 6] + sum(([100 + i] + [IMG] * k + [7] for i in range(3)), []) + [1]
    ex2 = [8, 9, 10] + [200] + [IMG] * k + [1]
    length = max(len(ex1), len(ex2))
    input_ids = torch.zeros(2, length, dtype=torch.long)
    input_ids[0, : len(ex1)] = torch.tensor(ex1)
    input_ids[1, : len(ex2)] = torch.tensor(ex2)
    attention_mask = (torch.arange(length) < torch.tensor([[len(ex1)], [len(ex2)]])).long()
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        whole_word_ids=torch.randint(0, 20, (2, length), generator=g) * attention_mask,
        category_ids=(input_ids == IMG).long(),
        image_features=torch.randn(2, 3, config.image_feature_dim, generator=g),
        image_features_mask=torch.tensor([[True, True, True], [True, False, False]]),
    )


@pytest.mark.parametrize(("k", "expected"), [(2, 61_813_760), (1, 61_288_192)])
def test_parameter_count_of_t5_small_vip5(k, expected):
    model = VIP5ForConditionalGeneration(VIP5Config(num_image_tokens=k, image_feature_dim=512))
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.lm_head.weight is model.shared.weight


def test_image_tokens_replace_placeholders_in_prompt_order(tiny_model):
    config = tiny_model.config
    batch = make_batch(config)
    embeds = tiny_model.embed_inputs(
        batch["input_ids"], batch["whole_word_ids"], batch["category_ids"], batch["image_features"],
        batch["image_features_mask"],
    )
    image_tokens = tiny_model.visual_embedding(batch["image_features"])
    extra = tiny_model.whole_word_embeddings(batch["whole_word_ids"]) + tiny_model.category_embeddings(
        batch["category_ids"]
    )
    for b in range(2):  # reference: the original's per-example loop (spec §1.3)
        expected = tiny_model.shared(batch["input_ids"][b]).clone()
        slots = (batch["input_ids"][b] == IMG).nonzero().squeeze(1)
        expected[slots] = image_tokens[b, : len(slots)]
        torch.testing.assert_close(embeds[b], expected + extra[b])
    # the mapping network's RMSNorm spans all k tokens of an item jointly (spec §1.6)
    hidden = tiny_model.visual_embedding.fc2(tiny_model.visual_embedding.act(tiny_model.visual_embedding.fc1(
        batch["image_features"][:1, :1])))
    joint = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + config.layer_norm_epsilon)
    torch.testing.assert_close(image_tokens[0, : config.num_image_tokens].flatten(), joint.flatten())


class OriginalAdapter(nn.Module):
    """The original bottleneck written out directly: y + up(gelu_new(down(y)))."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.tensors = tensors

    def forward(self, module, args, output):
        t = self.tensors
        hidden = ACT2FN["gelu_new"](output @ t["down.weight"].T + t["down.bias"])
        return output + hidden @ t["up.weight"].T + t["up.bias"]


def test_matches_the_original_implementation_on_golden_tensors():
    """Hidden states, logits, token losses, the paper loss and greedy ids of the original code (tests/golden)."""
    from safetensors.torch import load_file

    folder = GOLDEN
    spec = json.loads((folder / "config.json").read_text())
    golden = load_file(str(folder / "golden.safetensors"))
    state = torch.load(folder / "vip5_tiny_original.pth", weights_only=True)
    base, adapters = split_original_state_dict(state)
    config = VIP5Config(
        **{k: v for k, v in spec["t5"].items() if k != "tie_word_embeddings"},
        image_feature_dim=spec["vip5"]["feat_dim"], num_image_tokens=spec["vip5"]["n_vis_tokens"],
        image_token_id=spec["vip5"]["image_token_id"],
    )
    model = VIP5ForConditionalGeneration(config).eval()
    missing, unexpected = model.load_state_dict(base, strict=False)
    assert not unexpected
    assert set(missing) <= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    assert len(adapters) == 30 // 6 * config.num_layers  # 5 sublayer kinds per block pair
    for target, per_task in adapters.items():
        model.get_submodule(target).register_forward_hook(OriginalAdapter(per_task["sequential"]))

    assert_matches_golden(model, golden)
    inputs = {k: golden[k] for k in ("input_ids", "attention_mask", "whole_word_ids", "category_ids")}
    inputs["image_features_mask"] = golden_image_features_mask(golden, config)
    model.config.loss_normalization = "example_mean"
    with torch.no_grad():
        example_mean = model(**inputs, image_features=golden["vis_feats"], labels=golden["labels"]).loss
    torch.testing.assert_close(example_mean, golden["example_loss_token_mean"].mean(), atol=1e-5, rtol=1e-5)


def test_loss_normalizations(tiny_model):
    batch = make_batch(tiny_model.config)
    labels = torch.tensor([[11, 12, 13, 1], [14, 1, -100, -100]])
    with torch.no_grad():
        logits = tiny_model(**batch, labels=labels).logits
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    lengths = torch.tensor([4.0, 2.0])
    expected = {
        "paper": (token_loss.sum(1) / lengths / lengths).mean(),
        "example_mean": (token_loss.sum(1) / lengths).mean(),
        "token_mean": token_loss.sum() / lengths.sum(),
    }
    for name, value in expected.items():
        tiny_model.config.loss_normalization = name
        with torch.no_grad():
            torch.testing.assert_close(tiny_model(**batch, labels=labels).loss, value)


def test_generate_runs_the_encoder_once_and_supports_beams_and_constraints(tiny_model):
    batch = make_batch(tiny_model.config)
    calls = []
    tiny_model.encoder.register_forward_hook(lambda *args: calls.append(1))
    allowed = [21, 22, 23, 1]

    class OnlyAllowed(LogitsProcessor):
        def __call__(self, input_ids, scores):
            banned = torch.ones_like(scores, dtype=torch.bool)
            banned[:, allowed] = False
            return scores.masked_fill(banned, float("-inf"))

    out = tiny_model.generate(**batch, num_beams=4, num_return_sequences=3, max_new_tokens=5,
                              logits_processor=LogitsProcessorList([OnlyAllowed()]))
    assert calls == [1]
    assert out.shape[0] == 6
    assert set(out[:, 1:].flatten().tolist()) <= set(allowed) | {0}

    prefix_out = tiny_model.generate(**batch, num_beams=2, max_new_tokens=3,
                                     prefix_allowed_tokens_fn=lambda b, ids: [30 + len(ids), 1])
    assert prefix_out[:, 1].tolist() == [31, 31]

    # the image features reach generation: other features, other beams' scores
    scores = [tiny_model.generate(**{**batch, "image_features": f}, max_new_tokens=2, output_scores=True,
                                  return_dict_in_generate=True).scores[0]
              for f in (batch["image_features"], batch["image_features"] + 1.0)]
    assert not torch.allclose(scores[0], scores[1])


def test_kv_cache_gives_the_same_greedy_output(tiny_model):
    batch = make_batch(tiny_model.config)
    cached = tiny_model.generate(**batch, max_new_tokens=6, use_cache=True)
    uncached = tiny_model.generate(**batch, max_new_tokens=6, use_cache=False)
    assert torch.equal(cached, uncached)


def test_save_and_load_with_auto_classes(tiny_model, tmp_path):
    batch = make_batch(tiny_model.config)
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "vip5" and saved["auto_map"]["AutoModelForSeq2SeqLM"].endswith(
        "VIP5ForConditionalGeneration")
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VIP5Config)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, VIP5ForConditionalGeneration)
    assert loaded.lm_head.weight is loaded.shared.weight and loaded.encoder.embed_tokens.weight is loaded.shared.weight
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch, labels=batch["input_ids"][:, :3]).logits,
                                   tiny_model(**batch, labels=batch["input_ids"][:, :3]).logits, atol=0, rtol=0)


def test_fresh_process_loads_saved_folder_with_trust_remote_code(tiny_model, tmp_path):
    """A user without the package: transformers runs the modeling files copied into the folder."""
    batch = make_batch(tiny_model.config)
    tiny_model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "modeling_vip5.py").exists()
    torch.save({**batch, "expected": tiny_model.generate(**batch, max_new_tokens=4)}, tmp_path / "batch.pt")
    script = f"""
import importlib.util, sys, torch
sys.meta_path = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]  # pip's editable finder
sys.path = [p for p in sys.path if p not in ('', {str(REPO)!r})]
assert importlib.util.find_spec('modeling_vip5') is None, 'package must not be importable here'
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith('transformers_modules'), type(model).__module__
batch = torch.load({str(tmp_path / 'batch.pt')!r})
expected = batch.pop('expected')
assert torch.equal(model.generate(**batch, max_new_tokens=4), expected)
print('OK')
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop("image_features"), "no image_features"),
        (lambda b: b.update(image_features=torch.randn(2, 3, 7)), r"\[batch, n_items, 16\]"),
        (lambda b: b.update(image_features_mask=torch.tensor([[True, False, False], [True, False, False]])),
         "example 0 has 6 image placeholders but only 1 image-feature rows"),
        (lambda b: b.update(image_features=torch.randn(1, 3, 16)), "batch size 1"),
    ],
)
def test_inputs_that_cannot_work_raise_clear_errors(tiny_model, change, message):
    batch = make_batch(tiny_model.config)
    change(batch)
    with pytest.raises(ValueError, match=message):
        tiny_model(**batch, labels=torch.tensor([[5, 1], [6, 1]]))


def test_config_rejects_unknown_loss_normalization():
    with pytest.raises(Exception, match="loss_normalization"):
        VIP5Config(**tiny_config_kwargs(loss_normalization="sum"))


def test_batches_without_images_and_overlong_prompts(tiny_model):
    batch = make_batch(tiny_model.config)
    text_only = {k: v for k, v in batch.items() if k != "image_features_mask"}
    text_only["input_ids"] = text_only["input_ids"].masked_fill(text_only["input_ids"] == IMG, 5)
    text_only["category_ids"] = torch.zeros_like(text_only["input_ids"])
    text_only["image_features"] = torch.zeros(2, 0, tiny_model.config.image_feature_dim)
    labels = torch.tensor([[5, 1], [6, 1]])
    loss = tiny_model(**text_only, labels=labels).loss
    loss.backward()
    assert tiny_model.visual_embedding.fc1.weight.grad is not None  # still in the graph, with a zero gradient
    with pytest.raises(ValueError, match="whole-word table has 1024 rows"):
        tiny_model(**{**batch, "whole_word_ids": batch["whole_word_ids"] + 1024}, labels=labels)
