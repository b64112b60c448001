"""VIP5: T5 with CLIP image tokens and whole-word / category embeddings (Geng et al., EMNLP Findings 2023).

The backbone is transformers' own T5 (parameter names unchanged, so t5-small and P5 weights load by name). VIP5 only
changes how the encoder input is embedded (spec §1.3):

    E = shared(input_ids)
    E[placeholders] = visual_embedding(image_features)      # k image tokens per item replace `<extra_id_0>` slots
    E = E + whole_word_embeddings(whole_word_ids) + category_embeddings(category_ids)
    encoder(inputs_embeds=E)

The adapters are not part of this model: they are a PEFT method (`VIP5AdapterConfig`) that wraps the attention-output
projections `SelfAttention.o`, `EncDecAttention.o` and the FFN output projection `DenseReluDense.wo` by name.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F
from transformers import T5ForConditionalGeneration
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.integrations.sdpa_attention import create_position_bias_mask, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.modeling_utils import AttentionInterface
from transformers.models.t5.modeling_t5 import T5LayerNorm

from .configuration_vip5 import VIP5Config

VIP5_SDPA = "vip5_sdpa"  # the default attention of VIP5 models (nothing requested): see `vip5_attention_forward`


def vip5_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           is_causal: bool | None = None, position_bias: torch.Tensor | None = None, **kwargs):
    """SDPA (its fused kernels), except for attention-probability dropout on a CPU: there SDPA falls back to its
    unfused kernel, which also upcasts to fp32 under bf16 autocast. T5's own formula then does the same sums on the
    same additive mask faster (QK^T and PV in bf16 under autocast, softmax and dropout in fp32, as the original VIP5):
    0.89-0.95x the bf16 adapter step at input 256 (docs/benchmarks.md)."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = query.shape[2] > 1 and attention_mask is None and causal
    if (dropout == 0.0 or query.device.type != "cpu" or position_bias is None
            or (causal and key.shape[2] != query.shape[2])):  # (the last: a prefill SDPA crops; not in training)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_bias=position_bias, **kwargs)
    mask = create_position_bias_mask(position_bias, attention_mask, causal, query, key)  # what SDPA would be given
    return eager_attention(query, key, value, mask, dropout, 1.0 if scaling is None else scaling), None


def eager_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, dropout: float,
                    scaling: float) -> torch.Tensor:
    """softmax(QK^T·scaling + mask), dropout, times V: [batch, heads, q, d] -> [batch, q, heads, d]. The softmax and
    the dropout run in fp32, as in T5's eager attention under autocast, whose fp32 additive mask promotes the scores
    (here a cross-attention mask inherits the bf16 of its zero position bias, hence the explicit dtype)."""
    scores = torch.matmul(query, key.transpose(2, 3))
    if scaling != 1.0:  # T5 does not scale
        scores = scores * scaling
    weights = F.dropout(F.softmax(scores + mask, dim=-1, dtype=torch.float32), p=dropout, training=dropout > 0)
    return torch.matmul(weights.to(value.dtype), value).transpose(1, 2).contiguous()


AttentionInterface.register(VIP5_SDPA, vip5_attention_forward)
if VIP5_SDPA not in ALL_MASK_ATTENTION_FUNCTIONS:  # the masks SDPA takes (boolean, or none at all)
    AttentionMaskInterface.register(VIP5_SDPA, sdpa_mask)


class VIP5VisualEmbedding(nn.Module):
    """The mapping network: one CLIP feature -> k token embeddings.

    Linear(F, d·k/2) -> Tanh -> Linear(d·k/2, d·k) -> RMSNorm over the whole d·k vector (before the split into k
    tokens, as in the original, spec §1.6).
    """

    def __init__(self, config: VIP5Config):
        super().__init__()
        width = config.d_model * config.num_image_tokens
        self.num_image_tokens = config.num_image_tokens
        self.fc1 = nn.Linear(config.image_feature_dim, width // 2)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(width // 2, width)
        self.norm = T5LayerNorm(width, eps=config.layer_norm_epsilon)
        for linear in (self.fc1, self.fc2):  # read by `_init_weights`: PyTorch's default init, as the original
            linear._vip5_torch_default_init = True

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """[batch, n_items, F] -> [batch, n_items * k, d]; item j becomes tokens j·k … j·k + k − 1."""
        hidden = self.norm(self.fc2(self.act(self.fc1(image_features))))
        batch, n_items, _ = image_features.shape
        return hidden.reshape(batch, n_items * self.num_image_tokens, hidden.shape[-1] // self.num_image_tokens)


class VIP5Encoder(nn.Module):
    """The encoder as `generate()` and `forward()` see it: VIP5 input embedding, then T5's encoder stack.

    A view on the model, not a module of its own: it holds no parameters, so the state dict keeps T5's names.
    """

    def __init__(self, model: VIP5ForConditionalGeneration):
        super().__init__()
        object.__setattr__(self, "model", model)  # plain attribute: not a registered submodule

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        whole_word_ids: torch.LongTensor | None = None,
        category_ids: torch.LongTensor | None = None,
        image_features: torch.Tensor | None = None,
        image_features_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        if inputs_embeds is None:
            inputs_embeds = self.model.embed_inputs(
                input_ids, whole_word_ids, category_ids, image_features, image_features_mask
            )
        return self.model.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)


class VIP5ForConditionalGeneration(T5ForConditionalGeneration):
    """VIP5 base model: T5 + image mapping network + whole-word and category embeddings (no adapters).

    The VIP5 additions live at the top level (`visual_embedding`, `whole_word_embeddings`, `category_embeddings`), not
    inside `encoder`, so that T5's weight initialisation of its stacks never touches them.
    """

    config_class = VIP5Config
    config: VIP5Config

    def __init__(self, config: VIP5Config):
        super().__init__(config)
        self.whole_word_embeddings = nn.Embedding(config.whole_word_vocab_size, config.d_model)
        self.category_embeddings = nn.Embedding(config.category_vocab_size, config.d_model)
        self.visual_embedding = VIP5VisualEmbedding(config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original's constructor init for the VIP5 additions (spec §1.12): N(0, 1) tables, PyTorch's Linear init."""
        if isinstance(module, VIP5ForConditionalGeneration):
            super()._init_weights(module)
            init.normal_(module.whole_word_embeddings.weight, mean=0.0, std=1.0)
            init.normal_(module.category_embeddings.weight, mean=0.0, std=1.0)
        elif isinstance(module, nn.Linear) and getattr(module, "_vip5_torch_default_init", False):
            init.kaiming_uniform_(module.weight, a=5**0.5)
            bound = module.in_features**-0.5
            init.uniform_(module.bias, -bound, bound)
        else:
            super()._init_weights(module)

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """Nothing requested: `vip5_sdpa` where transformers would pick SDPA (an explicit "sdpa" stays plain SDPA)."""
        chosen = super().get_correct_attn_implementation(requested_attention, is_init_check)
        return VIP5_SDPA if requested_attention is None and chosen == "sdpa" else chosen

    def get_encoder(self, modality: str | None = None) -> nn.Module:
        """`generate()` runs this once per call: the VIP5 embedding step followed by T5's encoder."""
        if modality is not None:
            return super().get_encoder(modality)
        return VIP5Encoder(self)

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        whole_word_ids: torch.LongTensor | None = None,
        category_ids: torch.LongTensor | None = None,
        image_features: torch.Tensor | None = None,
        image_features_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encoder input embeddings (spec §1.3).

        The i-th `image_token_id` placeholder of an example takes the i-th image token of that example (items in prompt
        order, k tokens each), in one vectorised gather. `category_ids` defaults to 1 at placeholders; without
        `whole_word_ids` no whole-word embedding is added (as in P5's inference).
        """
        embeds = self.shared(input_ids)
        placeholders = input_ids == self.config.image_token_id
        num_placeholders = placeholders.sum(dim=1)
        if image_features is None:
            if bool(num_placeholders.any()):
                raise ValueError(
                    f"input_ids contain {num_placeholders.tolist()} image placeholders (id {self.config.image_token_id}) "
                    "per example but no image_features were given"
                )
        else:
            image_tokens = self._image_tokens(image_features, image_features_mask, num_placeholders)
            if image_tokens.shape[1]:
                rank = (placeholders.cumsum(dim=1) - 1).clamp(min=0)
                gathered = image_tokens.gather(1, rank.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
                embeds = torch.where(placeholders.unsqueeze(-1), gathered.to(embeds.dtype), embeds)
            else:  # no photographed item in the batch: a zero that keeps the mapping network in the graph (DDP)
                embeds = embeds + image_tokens.sum().to(embeds.dtype)
        if category_ids is None:
            category_ids = placeholders.long()
        embeds = embeds + self.category_embeddings(category_ids)
        if whole_word_ids is not None:
            if bool((whole_word_ids >= self.config.whole_word_vocab_size).any()):
                raise ValueError(f"whole_word_ids go up to {int(whole_word_ids.max())} but the whole-word table has "
                                 f"{self.config.whole_word_vocab_size} rows: prompts must stay under that many words")
            embeds = embeds + self.whole_word_embeddings(whole_word_ids)
        return embeds

    def _image_tokens(
        self, image_features: torch.Tensor, image_features_mask: torch.Tensor | None, num_placeholders: torch.Tensor
    ) -> torch.Tensor:
        """Check the features against the placeholders, then map them to [batch, n_items * k, d] image tokens."""
        expected_dim = self.config.image_feature_dim
        if image_features.dim() != 3 or image_features.shape[-1] != expected_dim:
            raise ValueError(
                f"image_features must have shape [batch, n_items, {expected_dim}] "
                f"(image_feature_dim of the config), got {list(image_features.shape)}"
            )
        if image_features.shape[0] != num_placeholders.shape[0]:
            raise ValueError(
                f"image_features has batch size {image_features.shape[0]} but input_ids has {num_placeholders.shape[0]}"
            )
        k = self.config.num_image_tokens
        if image_features_mask is None:  # every row is an item: the counts must agree exactly, both ways
            rows = torch.full_like(num_placeholders, image_features.shape[1])
            wrong = num_placeholders != rows * k
        else:
            rows = image_features_mask.sum(dim=1)
            wrong = num_placeholders > rows * k
        if bool(wrong.any()):
            b = int(wrong.nonzero()[0, 0])
            fewer = bool(num_placeholders[b] > rows[b] * k)
            padding = "" if fewer else ": say which rows are padding with image_features_mask (as the processor does)"
            raise ValueError(
                f"example {b} has {int(num_placeholders[b])} image placeholders but {'only ' if fewer else ''}"
                f"{int(rows[b])} image-feature rows, i.e. {int(rows[b]) * k} image tokens with k={k}{padding}"
            )
        return self.visual_embedding(image_features.to(self.visual_embedding.fc1.weight.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        whole_word_ids: torch.LongTensor | None = None,
        category_ids: torch.LongTensor | None = None,
        image_features: torch.Tensor | None = None,
        image_features_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.BoolTensor | None = None,
        encoder_outputs: tuple | BaseModelOutput | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""
        whole_word_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Index of the word each token belongs to (1-based; 0 for `</s>` and padding), spec §1.4.
        category_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 at image placeholders, 0 elsewhere; derived from `input_ids` when omitted.
        image_features (`torch.FloatTensor` of shape `(batch_size, n_items, image_feature_dim)`, *optional*):
            One CLIP feature per photographed item, in the order of the items' placeholders; padded rows at the end.
        image_features_mask (`torch.BoolTensor` of shape `(batch_size, n_items)`, *optional*):
            True for real rows of `image_features`.
        labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*):
            Target ids, -100 where ignored. The loss is normalised as `config.loss_normalization` says.
        cache (`EncoderDecoderCache`, *optional*):
            The decoder's key/value cache (transformers >= 5.24 name; `past_key_values` still works, with T5's warning).
        """
        if "past_key_values" in kwargs:  # the old name: T5 would see both names and ignore it, so rename it here
            warnings.warn("`past_key_values` is deprecated for `VIP5ForConditionalGeneration.forward`, as for T5 since "
                          "transformers 5.24. Use `cache` instead.", FutureWarning, stacklevel=2)
            cache = kwargs.pop("past_key_values") if cache is None else cache
        if encoder_outputs is None:
            encoder_outputs = self.get_encoder()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                whole_word_ids=whole_word_ids,
                category_ids=category_ids,
                image_features=image_features,
                image_features_mask=image_features_mask,
                inputs_embeds=inputs_embeds,
                **kwargs,
            )
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)
        outputs = super().forward(
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        if labels is not None:
            outputs.loss = self.loss_from_logits(outputs.logits, labels)
        return outputs

    def loss_from_logits(self, logits: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
        """Cross-entropy normalised as `config.loss_normalization` says (the original VIP5 weighting by default)."""
        labels = labels.to(logits.device)
        token_loss = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        mask = labels != -100
        if self.config.loss_normalization == "token_mean":
            return token_loss.sum() / mask.sum().clamp(min=1)
        lengths = mask.sum(dim=1).clamp(min=1)
        example_loss = token_loss.sum(dim=1) / lengths
        if self.config.loss_normalization == "paper":
            example_loss = example_loss / lengths
        return example_loss.mean()


__all__ = ["VIP5Encoder", "VIP5ForConditionalGeneration", "VIP5VisualEmbedding", "vip5_attention_forward"]
