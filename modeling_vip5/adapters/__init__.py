"""VIP5's bottleneck adapters as a PEFT method, registered with PEFT when `modeling_vip5` is imported.

    from peft import PeftModel, get_peft_model
    import modeling_vip5
    peft_model = get_peft_model(VIP5ForConditionalGeneration(config), modeling_vip5.VIP5AdapterConfig())
    peft_model.save_pretrained(folder)                     # adapter_config.json + adapter_model.safetensors
    PeftModel.from_pretrained(base_model, folder)          # in any process that imported modeling_vip5

LoRA on the same model instead: `peft.LoraConfig(task_type="SEQ_2_SEQ_LM", target_modules=["q", "v"],
modules_to_save=list(VIP5_MODULES_TO_SAVE))` (T5's attention query/value projections, PEFT's choice for T5, plus the
modules VIP5 trains alongside its adapters).
"""

from __future__ import annotations

import peft
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType, register_peft_method

from .config import PEFT_TYPE_NAME, SUBLAYER_PATTERNS, VIP5_MODULES_TO_SAVE, VIP5AdapterConfig
from .layer import Linear, VIP5AdapterLayer
from .model import VIP5AdapterModel

TESTED_PEFT_MINOR_VERSIONS = ("0.21",)


def register_vip5_adapter_method() -> None:
    """Make `VIP5_ADAPTER` a PEFT method, so `get_peft_model`, `save_pretrained` and `PeftModel.from_pretrained` know it.

    PEFT's `register_peft_method` only accepts names that are already members of its `PeftType` enum, and PEFT has no
    bottleneck adapter. So the member is added to the enum first, through the enum's internal tables (`_member_map_`,
    `_value2member_map_`, `_member_names_`): unsupported by PEFT and Python, hence pinned to the PEFT versions the tests
    cover and checked afterwards. Calling it again is a no-op.
    """
    minor = ".".join(peft.__version__.split(".")[:2])
    if minor not in TESTED_PEFT_MINOR_VERSIONS:
        raise RuntimeError(
            f"modeling_vip5 registers its adapter method with PEFT through enum internals tested only with PEFT "
            f"{', '.join(v + '.x' for v in TESTED_PEFT_MINOR_VERSIONS)}; found peft {peft.__version__}. Install a tested "
            "version (pip install 'peft>=0.21,<0.22')."
        )
    if PEFT_TYPE_NAME not in PeftType.__members__:
        member = str.__new__(PeftType, PEFT_TYPE_NAME)
        member._name_ = member._value_ = PEFT_TYPE_NAME
        PeftType._member_names_.append(PEFT_TYPE_NAME)
        PeftType._member_map_[PEFT_TYPE_NAME] = member
        PeftType._value2member_map_[PEFT_TYPE_NAME] = member
        type.__setattr__(PeftType, PEFT_TYPE_NAME, member)
        if PeftType(PEFT_TYPE_NAME) is not member or member not in list(PeftType):
            raise RuntimeError(f"could not add {PEFT_TYPE_NAME} to peft's PeftType enum on this Python version")
    peft_type = PeftType[PEFT_TYPE_NAME]
    registered = PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type)
    if registered is VIP5AdapterModel and PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type) is VIP5AdapterConfig:
        return
    if registered is not None:
        raise RuntimeError(f"PEFT method {PEFT_TYPE_NAME} is already registered with another tuner: {registered}")
    register_peft_method(
        name=PEFT_TYPE_NAME.lower(), config_cls=VIP5AdapterConfig, model_cls=VIP5AdapterModel,
        prefix=VIP5AdapterModel.prefix,
    )


__all__ = [
    "Linear",
    "SUBLAYER_PATTERNS",
    "VIP5_MODULES_TO_SAVE",
    "VIP5AdapterConfig",
    "VIP5AdapterLayer",
    "VIP5AdapterModel",
    "register_vip5_adapter_method",
]
