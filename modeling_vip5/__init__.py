"""VIP5 for Hugging Face: importing this package registers the model with the Auto classes."""

from transformers import AutoConfig, AutoModelForSeq2SeqLM

from .adapters import VIP5_MODULES_TO_SAVE, VIP5AdapterConfig, register_vip5_adapter_method
from .configuration_vip5 import IMAGE_FEATURE_DIMS, VIP5Config
from .modeling_vip5 import VIP5ForConditionalGeneration
from .processing_vip5 import VIP5FeatureExtractor, VIP5Processor, register_auto_classes
from .prompts import RenderedPrompt, load_templates, render_prompt, template_ids

AutoConfig.register("vip5", VIP5Config, exist_ok=True)
AutoModelForSeq2SeqLM.register(VIP5Config, VIP5ForConditionalGeneration, exist_ok=True)
VIP5Config.register_for_auto_class()
VIP5ForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
register_vip5_adapter_method()
register_auto_classes()

__all__ = [
    "IMAGE_FEATURE_DIMS",
    "VIP5_MODULES_TO_SAVE",
    "VIP5AdapterConfig",
    "VIP5Config",
    "VIP5FeatureExtractor",
    "VIP5ForConditionalGeneration",
    "VIP5Processor",
    "RenderedPrompt",
    "load_templates",
    "render_prompt",
    "template_ids",
]
