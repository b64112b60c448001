"""`vip5-convert`: original VIP5 snapshots and P5 checkpoints into base-model and PEFT adapter folders."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import GOLDEN, assert_matches_golden, tiny_config_kwargs
from peft import PeftModel
from safetensors.torch import load_file
from test_modeling import OriginalAdapter, make_batch
from transformers import T5Config, T5ForConditionalGeneration

from modeling_vip5 import VIP5Config, VIP5ForConditionalGeneration
from training.convert import ConversionError, convert_p5_checkpoint, convert_vip5_snapshot
from training.convert_cli import main

TASKS = ("sequential", "direct", "explanation")
LABELS = torch.tensor([[11, 12, 1], [13, 1, -100]])
# The original layout (spec §2.3), spelled out here independently of training/convert.py:
# our module path -> (stack, layer index, original adapter attribute)
ORIGINAL_SUBLAYERS = {
    "encoder.block.{i}.layer.0.SelfAttention.o": ("encoder", 0, "attn_adapter"),
    "encoder.block.{i}.layer.1.DenseReluDense.wo": ("encoder", 1, "ff_adapter"),
    "decoder.block.{i}.layer.0.SelfAttention.o": ("decoder", 0, "attn_adapter"),
    "decoder.block.{i}.layer.1.EncDecAttention.o": ("decoder", 1, "enc_attn_adapter"),
    "decoder.block.{i}.layer.2.DenseReluDense.wo": ("decoder", 2, "ff_adapter"),
}
ORIGINAL_NAMES = {
    "visual_embedding.fc1.": "encoder.visual_embedding.feat_embedding.0.model.0.",
    "visual_embedding.fc2.": "encoder.visual_embedding.feat_embedding.0.model.2.",
    "visual_embedding.norm.": "encoder.visual_embedding.feat_embedding.1.",
    "whole_word_embeddings.": "encoder.whole_word_embeddings.",
    "category_embeddings.": "encoder.category_embeddings.",
}


def original_name(key: str) -> str:
    for new, old in ORIGINAL_NAMES.items():
        if key.startswith(new):
            return old + key[len(new):]
    return key


def adapter_key(module: str, task: str, part: str) -> str:
    """`module.decoder.block.1.layer.1.enc_attn_adapter.adapters.direct.up_sampler.bias` for our module path."""
    block = int(re.search(r"block\.(\d+)\.", module)[1])
    pattern = re.sub(r"block\.\d+\.", "block.{i}.", module)
    stack, layer, attr = ORIGINAL_SUBLAYERS[pattern]
    sampler, param = part.split(".")
    return f"module.{stack}.block.{block}.layer.{layer}.{attr}.adapters.{task}.{sampler}_sampler.{param}"


def random_adapters(config: VIP5Config, r: int, kinds=tuple(ORIGINAL_SUBLAYERS), seed=1) -> dict[str, dict]:
    g = torch.Generator().manual_seed(seed)
    d, w = config.d_model, config.d_model // r
    shapes = {"down.weight": (w, d), "down.bias": (w,), "up.weight": (d, w), "up.bias": (d,)}
    return {
        pattern.format(i=i): {part: torch.randn(shape, generator=g) * 0.3 for part, shape in shapes.items()}
        for pattern in kinds
        for i in range(config.num_layers)
    }


def original_snapshot(model: VIP5ForConditionalGeneration, adapters: dict[str, dict], tasks=TASKS) -> dict:
    """What the original trainer saves: DDP `module.` prefixes, tied copies, each adapter once per task."""
    state = {f"module.{original_name(k)}": v.clone() for k, v in model.state_dict().items()}
    assert "module.lm_head.weight" in state and "module.encoder.embed_tokens.weight" in state
    for module, parts in adapters.items():
        for task in tasks:
            state.update({adapter_key(module, task, part): tensor.clone() for part, tensor in parts.items()})
    return state


def reference_logits(model: VIP5ForConditionalGeneration, adapters: dict[str, dict], batch: dict) -> torch.Tensor:
    """The forward pass written directly on the original tensors: y + up(gelu_new(down(y))) hooked after each o / wo."""
    hooks = [model.get_submodule(m).register_forward_hook(OriginalAdapter(parts)) for m, parts in adapters.items()]
    with torch.no_grad():
        out = model(**batch, labels=LABELS).logits
    for hook in hooks:
        hook.remove()
    return out


def load_converted(output) -> PeftModel:
    base = VIP5ForConditionalGeneration.from_pretrained(output / "base")
    return PeftModel.from_pretrained(base, output / "adapter").eval()


@pytest.fixture
def original(tmp_path):
    """A tiny trained-looking VIP5 (k=3, r=4, ViT-L/14-wide features) and its snapshot in the original layout."""
    torch.manual_seed(0)
    config = VIP5Config(**tiny_config_kwargs(num_image_tokens=3, image_feature_dim=768))
    model = VIP5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # trained norms are not all ones: make misplaced ones visible
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    adapters = random_adapters(config, r=4)
    path = tmp_path / "BEST_EVAL_LOSS.pth"
    torch.save(original_snapshot(model, adapters), path)
    return model, adapters, path


def test_snapshot_converts_to_base_and_adapter_folders_with_every_tensor_in_place(original, tmp_path):
    model, adapters, path = original
    summary = convert_vip5_snapshot(path, tmp_path / "out")
    assert (summary["num_image_tokens"], summary["reduction_factor"], summary["image_feature_dim"]) == (3, 4, 768)
    assert summary["image_feature_type"] == "vitl14" and summary["insertion_points"] == 10

    config = json.loads((tmp_path / "out" / "base" / "config.json").read_text())
    assert (config["num_image_tokens"], config["image_feature_dim"], config["d_model"], config["num_layers"]) == (
        3, 768, 32, 2)
    converted = load_file(tmp_path / "out" / "base" / "model.safetensors")
    expected = model.state_dict()
    assert set(converted) <= set(expected) and set(expected) - set(converted) <= {
        "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    for key, tensor in converted.items():
        assert torch.equal(tensor, expected[key]), key

    adapter = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    for module, parts in adapters.items():
        for part, tensor in parts.items():
            assert torch.equal(adapter.pop(f"base_model.model.{module}.vip5_{part}"), tensor)
    # what is left are the modules trained alongside: the mapping network and the RMSNorms, as in the snapshot
    assert len(adapter) == 5 + (2 * 2 + 1) + (2 * 3 + 1)
    for key, tensor in adapter.items():
        assert torch.equal(tensor, expected[key.removeprefix("base_model.model.")]), key
    adapter_config = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str((tmp_path / "out" / "base").resolve())

    batch = make_batch(model.config)
    with torch.no_grad():
        got = load_converted(tmp_path / "out")(**batch, labels=LABELS).logits
    torch.testing.assert_close(got, reference_logits(model, adapters, batch))


def test_snapshot_without_cross_attention_adapters_keeps_the_adapted_kinds(tmp_path):
    torch.manual_seed(0)
    config = VIP5Config(**tiny_config_kwargs())
    model = VIP5ForConditionalGeneration(config).eval()
    kinds = [k for k in ORIGINAL_SUBLAYERS if "EncDecAttention" not in k]
    adapters = random_adapters(config, r=8, kinds=kinds)
    torch.save(original_snapshot(model, adapters), tmp_path / "snap.pth")
    summary = convert_vip5_snapshot(tmp_path / "snap.pth", tmp_path / "out", image_feature_type="toy")
    assert "cross_attention" not in summary["sublayers"] and summary["insertion_points"] == 8
    batch = make_batch(config)
    with torch.no_grad():
        got = load_converted(tmp_path / "out")(**batch, labels=LABELS).logits
    torch.testing.assert_close(got, reference_logits(model, adapters, batch))


def test_unknown_missing_and_misshaped_keys_are_all_listed(original, tmp_path):
    model, adapters, path = original
    state = torch.load(path, weights_only=True)
    state["module.encoder.block.0.layer.0.SelfAttention.extra.weight"] = torch.zeros(2)
    state["module.encoder.block.0.layer.0.ff_adapter.adapters.direct.up_sampler.bias"] = torch.zeros(32)  # wrong place
    state[adapter_key("decoder.block.5.layer.0.SelfAttention.o", "direct", "up.bias")] = torch.zeros(32)  # no block 5
    del state["module.decoder.block.1.layer.2.DenseReluDense.wi.weight"]
    state["module.encoder.visual_embedding.feat_embedding.0.model.2.bias"] = torch.zeros(7)
    del state[adapter_key("encoder.block.1.layer.1.DenseReluDense.wo", "direct", "up.bias")]
    state[adapter_key("decoder.block.0.layer.0.SelfAttention.o", "sequential", "down.bias")] = torch.zeros(5)
    torch.save(state, path)
    with pytest.raises(ConversionError) as error:
        convert_vip5_snapshot(path, tmp_path / "out")
    message = str(error.value)
    assert str(path) in message
    assert re.search(r"unknown keys \(3\): module\.encoder\.block\.0\.layer\.0\.SelfAttention\.extra\.weight, "
                     r"module\.encoder\.block\.0\.layer\.0\.ff_adapter\.adapters\.direct\.up_sampler\.bias, "
                     r"module\.decoder\.block\.5\.layer\.0\.attn_adapter\.adapters\.direct\.up_sampler\.bias", message)
    assert re.search(r"missing keys \(2\):.*module\.decoder\.block\.1\.layer\.2\.DenseReluDense\.wi\.weight", message)
    assert "module.encoder.block.1.layer.1.ff_adapter.adapters.direct.up_sampler.bias" in message
    assert "module.encoder.visual_embedding.feat_embedding.0.model.2.bias [7] (expected [96])" in message
    assert "module.decoder.block.0.layer.0.attn_adapter.adapters.sequential.down_sampler.bias [5] (expected [8])" in message
    assert not (tmp_path / "out").exists()


def test_differing_task_adapters_are_reported_and_one_copy_can_be_chosen(original, tmp_path, capsys):
    model, adapters, path = original
    state = torch.load(path, weights_only=True)
    module = "decoder.block.1.layer.1.EncDecAttention.o"
    explanation = state[adapter_key(module, "explanation", "up.weight")] + 0.5
    state[adapter_key(module, "explanation", "up.weight")] = explanation
    torch.save(state, path)
    with pytest.raises(ConversionError, match=rf"differ at 1 of 10 insertion points \(e\.g\. {re.escape(module)}\).*--task"):
        convert_vip5_snapshot(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    assert main(["vip5", str(path), str(tmp_path / "out")]) == 1
    assert re.fullmatch(r"vip5-convert: error: .*separate adapters per task.*\n", capsys.readouterr().err)
    main(["vip5", str(path), str(tmp_path / "out"), "--task", "explanation"])
    adapter = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    assert torch.equal(adapter[f"base_model.model.{module}.vip5_up.weight"], explanation)
    with pytest.raises(ConversionError, match="--task review is not among"):
        convert_vip5_snapshot(path, tmp_path / "out2", task="review")


def test_untied_embeddings_and_unreadable_files_are_reported(original, tmp_path, capsys):
    model, adapters, path = original
    state = torch.load(path, weights_only=True)
    state["module.lm_head.weight"] = state["module.lm_head.weight"] + 1.0
    torch.save(state, path)
    with pytest.raises(ConversionError, match=r"\['lm_head.weight'\] are not copies of shared.weight"):
        convert_vip5_snapshot(path, tmp_path / "out")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    assert main(["vip5", str(text), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith(f"vip5-convert: error: {text}: cannot be read")
    torch.save({"model": {"a": 1}}, text)
    with pytest.raises(ConversionError, match="expected a state dict"):
        convert_vip5_snapshot(text, tmp_path / "out")


def t5_config(vocab_size: int) -> T5Config:
    """Plain transformers T5 with the tiny test geometry (the P5 backbone, without any VIP5 field)."""
    kwargs = {k: v for k, v in tiny_config_kwargs().items() if "image" not in k}
    return T5Config(**kwargs, vocab_size=vocab_size, decoder_start_token_id=0)


def p5_state(seed: int = 0) -> tuple[dict, dict]:
    """A P5-small-shaped checkpoint (tiny): T5 backbone with t5-small's 32,128 rows, a 512-row whole-word table."""
    torch.manual_seed(seed)
    t5 = T5ForConditionalGeneration(t5_config(vocab_size=32128))
    state = {f"module.{k}": v for k, v in t5.state_dict().items()}
    state["module.encoder.whole_word_embeddings.weight"] = torch.randn(512, 32)
    return state, t5.state_dict()


def test_p5_checkpoint_converts_to_a_base_model(tmp_path):
    state, backbone = p5_state()
    torch.save(state, tmp_path / "p5.pth")
    main(["p5", str(tmp_path / "p5.pth"), str(tmp_path / "out"), "--num-image-tokens", "1", "--seed", "3"])
    model = VIP5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    assert (model.config.vocab_size, model.config.num_image_tokens, model.config.image_feature_dim) == (32100, 1, 512)
    converted = model.state_dict()
    for key, tensor in backbone.items():
        assert torch.equal(converted[key], tensor[:32100] if tensor.shape[0] == 32128 else tensor), key
    words = model.whole_word_embeddings.weight
    assert torch.equal(words[:512], state["module.encoder.whole_word_embeddings.weight"])
    # rows 512.. and the category table: N(0, 1) as the original constructor; the mapping network: PyTorch's Linear init
    for fresh in (words[512:], model.category_embeddings.weight):
        assert abs(fresh.mean().item()) < 0.05 and abs(fresh.std().item() - 1) < 0.05
    assert model.visual_embedding.fc1.weight.abs().max() <= 512**-0.5

    # the same seed gives the same fresh rows; the backbone and whole-word rows feed an independent T5 identically
    convert_p5_checkpoint(tmp_path / "p5.pth", tmp_path / "again", num_image_tokens=1, seed=3)
    assert torch.equal(load_file(tmp_path / "again" / "model.safetensors")["whole_word_embeddings.weight"], words)
    t5 = T5ForConditionalGeneration(t5_config(vocab_size=32100)).eval()
    t5.load_state_dict({k: v[:32100] if v.shape[0] == 32128 else v for k, v in backbone.items()})
    input_ids = torch.tensor([[5, 6, 7, 1]])
    whole_word_ids = torch.tensor([[1, 2, 2, 0]])
    embeds = (t5.shared(input_ids) + state["module.encoder.whole_word_embeddings.weight"][whole_word_ids]
              + model.category_embeddings.weight[0])
    with torch.no_grad():
        expected = t5(inputs_embeds=embeds, labels=LABELS[:1]).logits
        got = model(input_ids=input_ids, whole_word_ids=whole_word_ids, labels=LABELS[:1]).logits
    torch.testing.assert_close(got, expected)


def test_p5_conversion_rejects_vip5_keys_and_lists_missing_ones(original, tmp_path):
    _, _, snapshot = original
    with pytest.raises(ConversionError, match="not a P5 checkpoint; use `vip5-convert vip5`"):
        convert_p5_checkpoint(snapshot, tmp_path / "out")
    state, _ = p5_state()
    del state["module.encoder.whole_word_embeddings.weight"]
    state["module.encoder.category_embeddings.weight"] = torch.zeros(16, 32)
    torch.save(state, tmp_path / "p5.pth")
    with pytest.raises(ConversionError) as error:
        convert_p5_checkpoint(tmp_path / "p5.pth", tmp_path / "out")
    assert "unknown keys (1): module.encoder.category_embeddings.weight" in str(error.value)
    assert "missing keys (1): module.encoder.whole_word_embeddings.weight" in str(error.value)


def test_golden_original_checkpoint_converts_and_reproduces_the_original(tmp_path):
    """The original code's own snapshot and outputs (tests/golden), through the console script and PEFT loading."""
    folder = GOLDEN
    golden = load_file(str(folder / "golden.safetensors"))
    main(["vip5", str(folder / "vip5_tiny_original.pth"), str(tmp_path / "out"), "--image-feature-type", "toy"])
    model = load_converted(tmp_path / "out")
    spec = json.loads((folder / "config.json").read_text())
    assert model.peft_config["default"].reduction_factor == spec["vip5"]["reduction_factor"]
    assert model.config.num_image_tokens == spec["vip5"]["n_vis_tokens"]

    assert_matches_golden(model, golden)
