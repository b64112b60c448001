"""VIP5 for Hugging Face: importing this package registers the model with the Auto classes."""

from transformers import AutoConfig, AutoModelForSeq2SeqLM

from .configuration_vip5 import IMAGE_FEATURE_DIMS, VIP5Config
from .modeling_vip5 import VIP5ForConditionalGeneration

AutoConfig.register("vip5", VIP5Config, exist_ok=True)
AutoModelForSeq2SeqLM.register(VIP5Config, VIP5ForConditionalGeneration, exist_ok=True)
VIP5Config.register_for_auto_class()
VIP5ForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

__all__ = ["IMAGE_FEATURE_DIMS", "VIP5Config", "VIP5ForConditionalGeneration"]
