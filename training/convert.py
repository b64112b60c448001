"""Conversion of original VIP5 / P5 state dicts (spec §2) into this package's names.

The backbone keys are T5's and stay as they are. The VIP5 additions move from `encoder.*` to the top level, and each
original adapter (`attn_adapter`, `enc_attn_adapter`, `ff_adapter`, one shared copy under three task names) is keyed by the
projection it follows, which is where the PEFT adapter method attaches it.
"""

from __future__ import annotations

import re

import torch

VISUAL_RENAMES = {
    "encoder.visual_embedding.feat_embedding.0.model.0.": "visual_embedding.fc1.",
    "encoder.visual_embedding.feat_embedding.0.model.2.": "visual_embedding.fc2.",
    "encoder.visual_embedding.feat_embedding.1.": "visual_embedding.norm.",
    "encoder.whole_word_embeddings.": "whole_word_embeddings.",
    "encoder.category_embeddings.": "category_embeddings.",
}
# (stack, layer index, original adapter attribute) -> the projection whose output the adapter transforms.
ADAPTER_TARGETS = {
    ("encoder", "0", "attn_adapter"): "layer.0.SelfAttention.o",
    ("encoder", "1", "ff_adapter"): "layer.1.DenseReluDense.wo",
    ("decoder", "0", "attn_adapter"): "layer.0.SelfAttention.o",
    ("decoder", "1", "enc_attn_adapter"): "layer.1.EncDecAttention.o",
    ("decoder", "2", "ff_adapter"): "layer.2.DenseReluDense.wo",
}
ADAPTER_KEY = re.compile(
    r"^(?P<stack>encoder|decoder)\.block\.(?P<block>\d+)\.layer\.(?P<layer>\d+)\.(?P<attr>\w+_adapter)"
    r"\.adapters\.(?P<task>\w+)\.(?P<part>down_sampler|up_sampler)\.(?P<param>weight|bias)$"
)
TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")


def split_original_state_dict(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, dict[str, torch.Tensor]]]]:
    """Split an original snapshot into base-model tensors (new names) and adapters.

    Returns `(base, adapters)` where `adapters[target_module][task]` holds `down.weight`, `down.bias`, `up.weight`,
    `up.bias` for the adapter after `target_module` (e.g. `encoder.block.0.layer.0.SelfAttention.o`).
    """
    base: dict[str, torch.Tensor] = {}
    adapters: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for raw_key, tensor in state_dict.items():
        key = raw_key.removeprefix("module.")
        match = ADAPTER_KEY.match(key)
        if match:
            target = ADAPTER_TARGETS.get((match["stack"], match["layer"], match["attr"]))
            if target is None:
                raise KeyError(f"adapter key {raw_key!r} is at no sublayer the original code adapts")
            module = f"{match['stack']}.block.{match['block']}.{target}"
            part = "down" if match["part"] == "down_sampler" else "up"
            adapters.setdefault(module, {}).setdefault(match["task"], {})[f"{part}.{match['param']}"] = tensor
            continue
        if key in TIED_COPIES:
            continue
        for old, new in VISUAL_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        base[key] = tensor
    return base, adapters
