"""The VIP5 adapter tuner: puts a `Linear` adapter layer in place of every targeted output projection."""

from __future__ import annotations

from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from .config import VIP5AdapterConfig
from .layer import NOT_MERGEABLE, Linear, VIP5AdapterLayer


class VIP5AdapterModel(BaseTuner):
    """PEFT tuner for [`VIP5AdapterConfig`]; built like PEFT's own methods (config / layer / model).

    `merge_and_unload()` raises (the adapters are non-linear in the projection output, see `NOT_MERGEABLE`);
    `unload()` removes them and returns the base model with the modules trained alongside (as PEFT does for
    `modules_to_save`).
    """

    prefix: str = "vip5_"
    tuner_layer_cls = VIP5AdapterLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _prepare_adapter_config(self, peft_config: VIP5AdapterConfig, model_config: dict) -> VIP5AdapterConfig:
        """`target_modules` always comes from the config (derived from `sublayers`), never from a model-type table."""
        return peft_config

    def _create_and_replace(
        self,
        peft_config: VIP5AdapterConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
    ) -> None:
        if isinstance(target, VIP5AdapterLayer):
            target.update_layer(adapter_name, peft_config, inference_mode=peft_config.inference_mode)
            return
        if not isinstance(target, nn.Linear):
            raise TypeError(f"VIP5 adapters attach to nn.Linear projections; {current_key} is a {type(target).__name__}")
        new_module = Linear(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added, inactive adapter is not trained
        self._replace_module(parent, target_name, new_module, target)

    def _check_merge_allowed(self) -> None:
        """Refuse before anything is changed: there is no weight that reproduces a bottleneck with a non-linearity."""
        raise ValueError(NOT_MERGEABLE)
