"""The VIP5 adapter layer: a PEFT tuner layer around a T5 output projection (spec §1.8)."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.activations import ACT2FN

from .config import VIP5AdapterConfig

NOT_MERGEABLE = (
    "VIP5 adapters cannot be merged into the base weights: each computes y + up(act(down(y))) on the output y of the "
    "projection it follows, and with a non-linear act (gelu_new in VIP5) that is not a linear map of y, so no weight "
    "matrix reproduces it (T5's projections also have no bias to absorb the adapter biases). Keep the PeftModel, or "
    "call `unload()` to remove the adapters."
)


class VIP5AdapterLayer(BaseTunerLayer):
    """Per-adapter bottlenecks (`vip5_down`, `vip5_up`) on the output of a wrapped `nn.Linear`.

    Several adapters may be active at once; they are then applied one after the other (each on the previous output),
    the natural composition for adapters that carry their own skip connection.
    """

    adapter_layer_names = ("vip5_down", "vip5_up")
    other_param_names = ("vip5_activation",)

    def __init__(self, base_layer: nn.Linear) -> None:
        self.base_layer = base_layer
        self.vip5_down = nn.ModuleDict({})
        self.vip5_up = nn.ModuleDict({})
        self.vip5_activation: dict[str, nn.Module] = {}  # parameter-free, so a plain dict (not moved, not saved)
        self._disable_adapters = False
        self.merged_adapters = []
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features

    def update_layer(self, adapter_name: str, config: VIP5AdapterConfig, inference_mode: bool = False) -> None:
        """Add (or replace) the bottleneck `adapter_name`: d -> d // r -> d, initialised as `config` says."""
        width = self.out_features // config.reduction_factor
        if width < 1:
            raise ValueError(
                f"reduction_factor {config.reduction_factor} leaves no bottleneck for a {self.out_features}-wide output"
            )
        self.vip5_down[adapter_name] = nn.Linear(self.out_features, width)
        self.vip5_up[adapter_name] = nn.Linear(width, self.out_features)
        self.vip5_activation[adapter_name] = ACT2FN[config.activation]
        if config.init_identity:
            nn.init.zeros_(self.vip5_up[adapter_name].weight)
            nn.init.zeros_(self.vip5_up[adapter_name].bias)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Always refused, with the reason (see `NOT_MERGEABLE`)."""
        raise ValueError(NOT_MERGEABLE)

    def unmerge(self) -> None:
        """Nothing is ever merged (see `merge`)."""


class Linear(nn.Module, VIP5AdapterLayer):
    """A T5 `o` / `wo` projection followed by the active VIP5 adapters."""

    def __init__(self, base_layer: nn.Linear, adapter_name: str, config: VIP5AdapterConfig) -> None:
        super().__init__()
        VIP5AdapterLayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config, inference_mode=config.inference_mode)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for name in self.active_adapters:
            if name not in self.vip5_down:
                continue
            down, up = self.vip5_down[name], self.vip5_up[name]
            hidden = self.vip5_activation[name](down(self._cast_input_dtype(result, down.weight.dtype)))
            result = result + up(hidden).to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "vip5_adapter." + super().__repr__()
