"""Configuration of the VIP5 bottleneck adapters as a PEFT method (spec §1.8, §1.9)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import PeftConfig
from peft.utils import PeftType
from transformers.activations import ACT2FN

PEFT_TYPE_NAME = "VIP5_ADAPTER"

# The five kinds of T5 sublayer the original adapts, each as the projection whose output the adapter transforms
# (names relative to `VIP5ForConditionalGeneration`; 6 blocks each in t5-small, so 30 insertion points).
SUBLAYER_PATTERNS = {
    "encoder_self_attention": r"encoder\.block\.\d+\.layer\.0\.SelfAttention\.o",
    "encoder_ffn": r"encoder\.block\.\d+\.layer\.1\.DenseReluDense\.wo",
    "decoder_self_attention": r"decoder\.block\.\d+\.layer\.0\.SelfAttention\.o",
    "cross_attention": r"decoder\.block\.\d+\.layer\.1\.EncDecAttention\.o",
    "decoder_ffn": r"decoder\.block\.\d+\.layer\.2\.DenseReluDense\.wo",
}

# What the original trains besides the adapters: the image mapping network (two Linear layers and its RMSNorm) and every
# T5 RMSNorm ("layer_norm" in each sublayer, "final_layer_norm" of each stack). Leaf modules on purpose: PEFT's
# `modules_to_save` rejects containers and would otherwise train a copy that a held reference never calls. The same list
# serves LoRA users: `LoraConfig(target_modules=["q", "v"], modules_to_save=list(VIP5_MODULES_TO_SAVE))`.
VIP5_MODULES_TO_SAVE = (
    "visual_embedding.fc1",
    "visual_embedding.fc2",
    "visual_embedding.norm",
    "layer_norm",
    "final_layer_norm",
)


def sublayer_target_regex(sublayers: list[str] | tuple[str, ...]) -> str:
    """One regex (PEFT full-matches string `target_modules`) selecting the output projections of the given kinds."""
    return "(" + "|".join(SUBLAYER_PATTERNS[kind] for kind in sublayers) + ")"


@dataclass
class VIP5AdapterConfig(PeftConfig):
    """
    Configuration of VIP5's bottleneck adapters: `y + up(act(down(y)))` on the output `y` of chosen T5 sublayers.

    With the defaults, `get_peft_model(VIP5ForConditionalGeneration(config), VIP5AdapterConfig())` trains exactly what
    the paper trains: the adapters, the image mapping network and every RMSNorm (2,788,736 parameters for t5-small,
    ViT-B/32, k=2, r=8). The mapping network and norms are trained as PEFT `modules_to_save`, i.e. as copies: the frozen
    originals stay in memory (so `disable_adapter()` gives the untuned model), and PEFT's total parameter count includes
    them; the paper's total does not.

    Args:
        reduction_factor (`int`, defaults to 8):
            r: the bottleneck width is `d_model // r` (the original script's example; its CLI default is 16).
        sublayers (`list[str]`):
            Which sublayer kinds get an adapter: any of `encoder_self_attention`, `encoder_ffn`,
            `decoder_self_attention`, `cross_attention`, `decoder_ffn` (default: all five).
        activation (`str`, defaults to `"gelu_new"`):
            Non-linearity inside the bottleneck, a key of `transformers.activations.ACT2FN`.
        init_identity (`bool`, defaults to `False`):
            False: PyTorch's default Linear init for both projections, as the original (adapters are not the identity at
            step 0). True: zero-initialised `up`, so that an untrained adapter is the identity.
        target_modules (`str` or `list[str]`, *optional*):
            Derived from `sublayers` when not given; set it only to adapt a model with other module names.
        modules_to_save (`list[str]`, *optional*):
            Modules trained alongside the adapters (default `VIP5_MODULES_TO_SAVE`); `[]` trains the adapters only.
    """

    reduction_factor: int = field(default=8, metadata={"help": "Bottleneck width is d_model // reduction_factor."})
    sublayers: list[str] = field(
        default_factory=lambda: list(SUBLAYER_PATTERNS), metadata={"help": f"Sublayer kinds: {list(SUBLAYER_PATTERNS)}"}
    )
    activation: str = field(default="gelu_new", metadata={"help": "Bottleneck non-linearity (key of ACT2FN)."})
    init_identity: bool = field(default=False, metadata={"help": "Zero-initialise `up` so adapters start as identity."})
    target_modules: str | list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt; derived from `sublayers` when None."}
    )
    modules_to_save: list[str] | None = field(
        default_factory=lambda: list(VIP5_MODULES_TO_SAVE),
        metadata={"help": "Modules trained (as copies) and saved alongside the adapters."},
    )
    task_type: str | None = field(default="SEQ_2_SEQ_LM", metadata={"help": "PEFT task type."})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType[PEFT_TYPE_NAME]
        unknown = [kind for kind in self.sublayers if kind not in SUBLAYER_PATTERNS]
        if unknown or not self.sublayers:
            raise ValueError(f"`sublayers` must be a non-empty subset of {list(SUBLAYER_PATTERNS)}, got {self.sublayers}")
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 1:
            raise ValueError(f"`reduction_factor` must be a positive integer, got {self.reduction_factor!r}")
        if self.activation not in ACT2FN:
            raise ValueError(f"`activation` {self.activation!r} is not a key of transformers' ACT2FN")
        if self.target_modules is None:
            self.target_modules = sublayer_target_regex(self.sublayers)
