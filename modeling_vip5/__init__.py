"""VIP5 for Hugging Face: importing this package registers the model with the Auto classes and the
`vip5-recommendation` pipeline task."""

from transformers import AutoConfig, AutoModelForSeq2SeqLM

from .adapters import VIP5_MODULES_TO_SAVE, VIP5AdapterConfig, register_vip5_adapter_method
from .catalogue import Catalogue
from .configuration_vip5 import IMAGE_FEATURE_DIMS, VIP5Config
from .modeling_vip5 import VIP5ForConditionalGeneration
from .pipeline_vip5 import VIP5RecommendationPipeline, register_pipeline
from .processing_vip5 import VIP5FeatureExtractor, VIP5Processor, register_auto_classes
from .prompts import RenderedPrompt, load_templates, render_prompt, template_ids

AutoConfig.register("vip5", VIP5Config, exist_ok=True)
AutoModelForSeq2SeqLM.register(VIP5Config, VIP5ForConditionalGeneration, exist_ok=True)
VIP5Config.register_for_auto_class()
VIP5ForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
register_vip5_adapter_method()
register_auto_classes()
register_pipeline()

__all__ = [
    "IMAGE_FEATURE_DIMS",
    "Catalogue",
    "VIP5_MODULES_TO_SAVE",
    "VIP5AdapterConfig",
    "VIP5Config",
    "VIP5FeatureExtractor",
    "VIP5ForConditionalGeneration",
    "VIP5Processor",
    "VIP5RecommendationPipeline",
    "RenderedPrompt",
    "load_templates",
    "render_prompt",
    "template_ids",
]
