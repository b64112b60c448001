"""VIP5 model configuration: T5's geometry plus the multimodal and prompt-embedding fields of VIP5."""

from huggingface_hub.dataclasses import strict
from transformers import T5Config

# CLIP image-embedding widths, keyed by the `image_feature_type` names of the original code (spec §1.6).
IMAGE_FEATURE_DIMS = {"rn50": 1024, "rn101": 512, "vitb32": 512, "vitb16": 512, "vitl14": 768}
LOSS_NORMALIZATIONS = ("paper", "example_mean", "token_mean")


@strict
class VIP5Config(T5Config):
    r"""
    Configuration of [`VIP5ForConditionalGeneration`]. The defaults are t5-small as VIP5 uses it (vocabulary cut to the
    32,000 SentencePiece pieces + 100 `<extra_id_*>` tokens) with ViT-B/32 features and k = 2 image tokens per item.

    image_feature_dim (`int`, defaults to 512):
        Width of the CLIP image feature of one item (RN50 1024, RN101 512, ViT-B/32 512, ViT-B/16 512, ViT-L/14 768).
    image_feature_type (`str`, defaults to `"vitb32"`):
        Which CLIP encoder produced the features; recorded so that features and checkpoints are not mixed up.
    num_image_tokens (`int`, defaults to 2):
        k, the number of embeddings the mapping network makes from one item feature (and of placeholders per item).
    whole_word_vocab_size (`int`, defaults to 1024):
        Rows of the whole-word embedding table (word index within the prompt; row 0 is `</s>` and padding).
    category_vocab_size (`int`, defaults to 16):
        Rows of the category embedding table (0 = text, 1 = image; the other rows are unused, as in the original).
    image_token_id (`int`, defaults to 32099):
        Id of the placeholder token whose embeddings are replaced by image tokens (`<extra_id_0>` in the T5 vocabulary).
    loss_normalization (`str`, defaults to `"paper"`):
        `"paper"`: per-example token mean, divided again by the target length, averaged over the batch (VIP5, spec §1.10);
        `"example_mean"`: per-example token mean averaged over the batch (P5);
        `"token_mean"`: mean over all target tokens of the batch (transformers' default).
    """

    model_type = "vip5"

    vocab_size: int = 32100
    decoder_start_token_id: int | None = 0
    image_feature_dim: int = 512
    image_feature_type: str = "vitb32"
    num_image_tokens: int = 2
    whole_word_vocab_size: int = 1024
    category_vocab_size: int = 16
    image_token_id: int = 32099
    loss_normalization: str = "paper"

    def validate_architecture(self):
        """Part of `@strict` validation: reject settings the model cannot run with, naming the field."""
        super().validate_architecture()
        if self.loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(f"`loss_normalization` must be one of {LOSS_NORMALIZATIONS}, got {self.loss_normalization!r}")
        if self.num_image_tokens < 1:
            raise ValueError(f"`num_image_tokens` must be at least 1, got {self.num_image_tokens}")
        if self.image_feature_dim < 1:
            raise ValueError(f"`image_feature_dim` must be positive, got {self.image_feature_dim}")
        if not 0 <= self.image_token_id < self.vocab_size:
            raise ValueError(f"`image_token_id` {self.image_token_id} is outside the vocabulary (size {self.vocab_size})")


__all__ = ["IMAGE_FEATURE_DIMS", "VIP5Config"]
