"""VIP5 adapters as a PEFT method: the paper's trainable set, the bottleneck, saving / loading / pushing, LoRA."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import httpx2
import peft
import pytest
import torch
from conftest import tiny_config_kwargs
from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import ModulesToSaveWrapper, PeftType
from safetensors import safe_open
from test_modeling import make_batch
from torch import nn

from modeling_vip5 import VIP5_MODULES_TO_SAVE, VIP5AdapterConfig, VIP5Config, VIP5ForConditionalGeneration
from modeling_vip5.adapters import VIP5AdapterLayer, register_vip5_adapter_method

REPO = Path(__file__).resolve().parents[1]
LABELS = torch.tensor([[11, 12, 1], [13, 1, -100]])


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """The original's `gelu_new` (tanh approximation), written out."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def adapter_layers(model: nn.Module) -> dict[str, VIP5AdapterLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, VIP5AdapterLayer)}


def logits(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, labels=LABELS).logits


@pytest.mark.parametrize(
    ("k", "trainable", "paper_total", "percent"),
    [(2, 2_788_736, 63_797_120, 4.37), (1, 2_263_168, 63_271_552, 3.58)],
)
def test_trainable_set_at_t5_small_size_is_the_papers(k, trainable, paper_total, percent):
    """ViT-B/32, r=8: adapters (30 × 66,112) + mapping network + 32 RMSNorms, spec §1.9."""
    model = VIP5ForConditionalGeneration(VIP5Config(num_image_tokens=k, image_feature_dim=512))
    peft_model = get_peft_model(model, VIP5AdapterConfig())
    n_trainable, n_total = peft_model.get_nb_trainable_parameters()
    assert n_trainable == trainable
    # PEFT's total also counts the frozen originals that `modules_to_save` keeps beside the trained copies
    originals = sum(p.numel() for m in peft_model.modules() if isinstance(m, ModulesToSaveWrapper)
                    for p in m.original_module.parameters())
    assert n_total - originals == paper_total
    assert round(100 * n_trainable / paper_total, 2) == percent

    layers = adapter_layers(peft_model)
    assert len(layers) == 30
    assert sum(p.numel() for m in layers.values() for p in m.parameters() if p.requires_grad) == 30 * 66_112
    wrapped = [n for n, m in peft_model.named_modules() if isinstance(m, ModulesToSaveWrapper)]
    assert sum(n.endswith("layer_norm") for n in wrapped) == 32 and len(wrapped) == 35
    trainable_names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert all(".vip5_" in n or ".modules_to_save.default." in n for n in trainable_names)


def test_adapter_is_the_original_bottleneck_on_the_projection_output(tiny_model):
    peft_model = get_peft_model(tiny_model, VIP5AdapterConfig(reduction_factor=4))
    layer = peft_model.base_model.model.decoder.block[1].layer[1].EncDecAttention.o
    down, up = layer.vip5_down["default"], layer.vip5_up["default"]
    assert (down.out_features, up.out_features) == (8, 32)
    x = torch.randn(3, 5, 32)
    y = layer.base_layer(x)
    expected = y + gelu_new(y @ down.weight.T + down.bias) @ up.weight.T + up.bias
    torch.testing.assert_close(layer(x), expected)
    # PyTorch's default Linear init as in the original (Kaiming-uniform a=√5: |w| <= 1/sqrt(fan_in)), not the identity
    for linear in (down, up):
        bound = linear.in_features**-0.5
        assert 0 < linear.weight.abs().max() <= bound and 0 < linear.bias.abs().max() <= bound
    assert not torch.allclose(layer(x), y)


def test_identity_init_leaves_the_base_model_unchanged(tiny_model):
    batch = make_batch(tiny_model.config)
    expected = logits(tiny_model, batch)
    peft_model = get_peft_model(tiny_model, VIP5AdapterConfig(init_identity=True))
    assert torch.equal(logits(peft_model, batch), expected)
    assert all(not m.vip5_up["default"].weight.any() for m in adapter_layers(peft_model).values())


def test_sublayer_kinds_choose_the_insertion_points(tiny_model):
    peft_model = get_peft_model(tiny_model, VIP5AdapterConfig(sublayers=["cross_attention", "encoder_ffn"]))
    assert sorted(adapter_layers(peft_model.base_model.model)) == [
        "decoder.block.0.layer.1.EncDecAttention.o", "decoder.block.1.layer.1.EncDecAttention.o",
        "encoder.block.0.layer.1.DenseReluDense.wo", "encoder.block.1.layer.1.DenseReluDense.wo",
    ]
    with pytest.raises(ValueError, match="sublayers"):
        VIP5AdapterConfig(sublayers=["decoder_cross_attention"])
    with pytest.raises(ValueError, match="reduction_factor"):
        VIP5AdapterConfig(reduction_factor=0)
    with pytest.raises(ValueError, match="ACT2FN"):
        VIP5AdapterConfig(activation="swishy")


def train_one_step(peft_model: nn.Module, batch: dict) -> None:
    """One SGD step, so that adapters *and* the copies of norms / mapping network differ from their init."""
    params = [p for p in peft_model.parameters() if p.requires_grad]
    peft_model.train()
    peft_model(**batch, labels=LABELS).loss.backward()
    torch.optim.SGD(params, lr=1.0).step()
    peft_model.eval()


def test_saved_adapter_reloads_in_a_new_process_with_identical_outputs(tiny_model, tmp_path):
    batch = make_batch(tiny_model.config)
    tiny_model.save_pretrained(tmp_path / "base")
    frozen = {n: p.clone() for n, p in tiny_model.named_parameters()}
    peft_model = get_peft_model(tiny_model, VIP5AdapterConfig())
    train_one_step(peft_model, batch)
    base = peft_model.get_base_model()
    assert torch.equal(base.shared.weight, frozen["shared.weight"])  # the backbone stays frozen
    assert not torch.equal(base.visual_embedding.fc1.weight, frozen["visual_embedding.fc1.weight"])  # the copy trained
    peft_model.save_pretrained(tmp_path / "adapter")

    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "VIP5_ADAPTER" and saved["reduction_factor"] == 8
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", "pt") as f:
        keys = set(f.keys())
    n_adapters = len(adapter_layers(peft_model))
    assert sum(".vip5_" in k for k in keys) == 4 * n_adapters
    assert {k for k in keys if ".vip5_" not in k} == {
        f"base_model.model.{n.removesuffix('.modules_to_save.default')}.{p}"
        for n, m in peft_model.base_model.model.named_modules() if n.endswith(".modules_to_save.default")
        for p, _ in m.named_parameters()
    }
    adapter_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (tmp_path / "base" / "model.safetensors").stat().st_size / 20

    expected = {"logits": logits(peft_model, batch), "generated": peft_model.generate(**batch, max_new_tokens=4)}
    torch.save({"batch": batch, "labels": LABELS, **expected}, tmp_path / "expected.pt")
    script = f"""
import torch
torch.set_num_threads({torch.get_num_threads()})  # bit-identical sums need the parent's thread count
import modeling_vip5
from peft import PeftModel
from modeling_vip5 import VIP5ForConditionalGeneration
data = torch.load({str(tmp_path / 'expected.pt')!r})
base = VIP5ForConditionalGeneration.from_pretrained({str(tmp_path / 'base')!r})
model = PeftModel.from_pretrained(base, {str(tmp_path / 'adapter')!r}).eval()
with torch.no_grad():
    assert torch.equal(model(**data['batch'], labels=data['labels']).logits, data['logits'])
assert torch.equal(model.generate(**data['batch'], max_new_tokens=4), data['generated'])
print('OK')
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_generate_through_the_peft_model_uses_image_features_and_adapters(tiny_model):
    batch = make_batch(tiny_model.config)

    def first_scores(model, features):
        out = model.generate(**{**batch, "image_features": features}, num_beams=2, max_new_tokens=3, output_scores=True,
                             return_dict_in_generate=True)
        assert out.sequences.shape[0] == 2
        return out.scores[0]

    base_scores = first_scores(tiny_model, batch["image_features"])
    peft_model = get_peft_model(tiny_model, VIP5AdapterConfig()).eval()
    scores = first_scores(peft_model, batch["image_features"])
    assert not torch.allclose(scores, base_scores)
    assert not torch.allclose(scores, first_scores(peft_model, batch["image_features"] + 1.0))
    with peft_model.disable_adapter():
        torch.testing.assert_close(first_scores(peft_model, batch["image_features"]), base_scores)


def test_merge_is_refused_with_the_reason_and_unload_removes_the_adapters(tiny_model):
    batch = make_batch(tiny_model.config)
    expected = logits(tiny_model, batch)
    peft_model = get_peft_model(tiny_model, VIP5AdapterConfig())
    adapted = logits(peft_model, batch)
    assert not torch.allclose(adapted, expected)
    with pytest.raises(ValueError, match="not a linear map of y"):
        peft_model.merge_and_unload()
    assert torch.equal(logits(peft_model, batch), adapted)  # the refused merge changed nothing
    unloaded = peft_model.unload()
    assert isinstance(unloaded, VIP5ForConditionalGeneration) and not adapter_layers(unloaded)
    assert torch.equal(logits(unloaded, batch), expected)


def test_lora_on_the_same_model_with_documented_targets(tiny_model, tmp_path):
    batch = make_batch(tiny_model.config)
    tiny_model.save_pretrained(tmp_path / "base")
    config = LoraConfig(task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8, target_modules=["q", "v"],
                        modules_to_save=list(VIP5_MODULES_TO_SAVE))
    peft_model = get_peft_model(tiny_model, config)
    lora_linears = [m for n, m in tiny_model.named_modules() if n.endswith((".q.base_layer", ".v.base_layer"))]
    assert len(lora_linears) == 12  # encoder self, decoder self and cross attention, 2 blocks each
    extra = sum(p.numel() for m in peft_model.modules() if isinstance(m, ModulesToSaveWrapper)
                for p in m.modules_to_save["default"].parameters())
    lora = sum(4 * (m.in_features + m.out_features) for m in lora_linears)
    assert peft_model.get_nb_trainable_parameters()[0] == lora + extra
    train_one_step(peft_model, batch)
    peft_model.save_pretrained(tmp_path / "lora")
    reloaded = PeftModel.from_pretrained(VIP5ForConditionalGeneration.from_pretrained(tmp_path / "base"),
                                         tmp_path / "lora").eval()
    assert torch.equal(logits(reloaded, batch), logits(peft_model, batch))
    assert reloaded.generate(**batch, max_new_tokens=3).shape[0] == 2


@pytest.fixture
def fake_hub(monkeypatch):
    """An in-process Hub (hf_ecosystem.md §8): records the files of every commit; no network."""
    from huggingface_hub import constants

    commits: list[list[str]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "https://huggingface.co/me/vip5-adapter"})
        if path == "/api/validate-yaml":  # the model card's metadata
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            lines = [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]
            commits.append(sorted(line["value"]["path"] for line in lines if line["key"] == "file"))
            return httpx2.Response(200, json={"success": True, "commitOid": "a" * 40,
                                              "commitUrl": "https://huggingface.co/me/vip5-adapter/commit/" + "a" * 40})
        return httpx2.Response(404, json={"error": f"unmocked {request.method} {path}"})

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler)))
    yield commits
    set_client_factory(default_client_factory)


def test_push_to_hub_uploads_the_adapter_folder(tiny_model, fake_hub):
    peft_model = get_peft_model(tiny_model, VIP5AdapterConfig())
    peft_model.push_to_hub("me/vip5-adapter")
    assert len(fake_hub) == 1
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(fake_hub[0])
    assert "model.safetensors" not in fake_hub[0]


def test_registration_is_idempotent_and_refuses_untested_peft(monkeypatch):
    assert PeftType("VIP5_ADAPTER") in list(PeftType)
    register_vip5_adapter_method()  # a second call changes nothing
    assert VIP5AdapterConfig().peft_type is PeftType.VIP5_ADAPTER
    monkeypatch.setattr(peft, "__version__", "0.22.0")
    with pytest.raises(RuntimeError, match=r"tested only with PEFT 0\.21\.x; found peft 0\.22\.0"):
        register_vip5_adapter_method()


def test_adapters_follow_a_half_precision_base(tmp_path):
    """PEFT keeps adapter weights in fp32 on a bf16 base; the layer casts in and out, so bf16 generation works."""
    model = VIP5ForConditionalGeneration(VIP5Config(**tiny_config_kwargs())).to(torch.bfloat16).eval()
    peft_model = get_peft_model(model, VIP5AdapterConfig())
    layer = next(iter(adapter_layers(peft_model).values()))
    assert layer.vip5_down["default"].weight.dtype == torch.float32
    batch = make_batch(model.config)
    assert logits(peft_model, batch).dtype == torch.bfloat16
    assert peft_model.generate(**batch, max_new_tokens=3).shape[0] == 2
