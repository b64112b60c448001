"""VIP5Processor: T5 tokenizer + image-feature side, turning VIP5 prompts into model inputs (spec §1.2-1.7, §4).

Usage::

    from modeling_vip5 import VIP5Processor

    processor = VIP5Processor.from_pretrained("t5-small")          # T5 tokenizer; feature side ViT-B/32 (512), k = 2
    processor.feature_extractor.set_item_features(table)           # optional: float [num_items + 1, 512], row = item id
    prompt = processor.render("A-3", user_id=15, history=[101, 102, 103], target_item_id=104)
    batch = processor([prompt], return_tensors="pt")                # features of items 101-103 looked up in the table
    # or, with features at hand: processor([prompt.source], image_features=[rows], targets=["104"], return_tensors="pt")
    batch.keys()  # input_ids, attention_mask, whole_word_ids, category_ids, image_features, image_features_mask, labels

    processor.save_pretrained("out")   # AutoProcessor.from_pretrained("out") (or trust_remote_code=True without the package)

Other widths / k: `VIP5Processor(AutoTokenizer.from_pretrained("t5-small"), VIP5FeatureExtractor(768, 3))`.
The item table is not saved with the processor (it belongs to the dataset); attach it after loading.

Tokenisation semantics (checked against raw sentencepiece in the tests): transformers 5 has a single, Rust-backed
`T5Tokenizer`. Its pre-tokenizer splits on whitespace and prefixes every word with "▁", and `<extra_id_*>` are special
tokens that split the text, so the text next to a placeholder is stripped and the next piece starts a new word, as
with the original slow tokenizer. `\\n` carries no token. Whole-word ids therefore follow spec §1.4 unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import (
    AutoFeatureExtractor,
    AutoProcessor,
    BatchFeature,
    FeatureExtractionMixin,
    PreTrainedTokenizerBase,
    ProcessorMixin,
)

from .configuration_vip5 import VIP5Config
from .prompts import IMAGE_TOKEN, RenderedPrompt, load_templates, parse_templates, render_prompt

TRUNCATIONS = ("right", "history")


def whole_word_ids(tokens: Sequence[str], image_token: str = IMAGE_TOKEN) -> list[int]:
    """Spec §1.4: a piece that starts with "▁" or is the image placeholder opens a new word; words count from 1."""
    ids, word = [], 0
    for token in tokens:
        word += token.startswith("▁") or token == image_token
        ids.append(word)
    return ids


class VIP5FeatureExtractor(FeatureExtractionMixin):
    """The image side of VIP5: one CLIP feature row per photographed item, k placeholders per row.

    Optionally holds an item-feature table (row = item id, e.g. memory-mapped from the dataset) to look rows up by item
    id, with a boolean `item_has_image` mask for items without a photo. The table is runtime state and is not saved.
    """

    model_input_names = ["image_features", "image_features_mask"]

    def __init__(self, feature_dim: int = 512, num_image_tokens: int = 2, item_features: Any = None,
                 item_has_image: Any = None, **kwargs: Any):
        if feature_dim < 1 or num_image_tokens < 1:
            raise ValueError(f"feature_dim and num_image_tokens must be positive, got {feature_dim} and {num_image_tokens}")
        super().__init__(**kwargs)
        self.feature_dim = feature_dim
        self.num_image_tokens = num_image_tokens
        self._item_features: np.ndarray | None = None
        self._item_has_image: np.ndarray | None = None
        if item_features is not None:
            self.set_item_features(item_features, item_has_image)

    def set_item_features(self, item_features: Any, item_has_image: Any = None) -> None:
        """Attach the item table `[num_rows, feature_dim]` (row = item id) and optionally a `[num_rows]` photo mask."""
        table = np.asarray(item_features)
        if table.ndim != 2 or table.shape[1] != self.feature_dim or not np.issubdtype(table.dtype, np.floating):
            raise ValueError(f"item_features must be a float array [num_rows, {self.feature_dim}] (feature_dim), got "
                             f"{table.dtype} {list(table.shape)}")
        mask = None
        if item_has_image is not None:
            mask = np.asarray(item_has_image)
            if mask.dtype != np.bool_ or mask.shape != table.shape[:1]:
                raise ValueError(f"item_has_image must be a bool array [{table.shape[0]}], got {mask.dtype} {list(mask.shape)}")
            mask = mask.view()
            mask.flags.writeable = False
        table = table.view()  # read-only view: copies of this extractor share the table (see __deepcopy__)
        table.flags.writeable = False
        self._item_features, self._item_has_image = table, mask

    @property
    def item_features(self) -> np.ndarray | None:
        """The attached item table (read-only), or None."""
        return self._item_features

    @property
    def item_has_image(self) -> np.ndarray | None:
        """The attached photo mask (read-only), or None (every item has an image)."""
        return self._item_has_image

    def has_image(self, item_id: int) -> bool:
        """Whether the item gets placeholders and a feature row (True for every item unless a mask says otherwise)."""
        if self._item_has_image is None:
            return True
        self._check_item(item_id, self._item_has_image.shape[0])
        return bool(self._item_has_image[item_id])

    @staticmethod
    def _check_item(item_id: int, num_rows: int) -> None:
        if not 0 <= item_id < num_rows:
            raise ValueError(f"item id {item_id} is outside the item-feature table (rows 0..{num_rows - 1})")

    def lookup(self, item_ids: Sequence[int]) -> np.ndarray:
        """Feature rows `[len(item_ids), feature_dim]` of the given items, in order."""
        if self._item_features is None:
            raise ValueError("no item-feature table attached: call set_item_features(table) or pass image_features")
        for item_id in item_ids:
            if not self.has_image(item_id):
                raise ValueError(f"item {item_id} has no image (item_has_image is False) but a feature row was requested")
            self._check_item(item_id, self._item_features.shape[0])
        return np.asarray(self._item_features[np.asarray(item_ids, dtype=np.int64)], dtype=np.float32)

    def check_rows(self, rows: Any, example: int) -> np.ndarray:
        """Feature rows of one example as float32 `[n, feature_dim]`, rejecting wrong widths and NaN/inf."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.feature_dim:
            raise ValueError(f"example {example}: image features must be [n_items, {self.feature_dim}] (feature_dim), "
                             f"got shape {list(rows.shape)}")
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if bad.size:
            raise ValueError(f"example {example}: image feature row(s) {bad.tolist()} contain NaN or inf")
        return rows

    def __call__(self, image_features: Sequence[Any], return_tensors: str | None = None) -> BatchFeature:
        """Check and pad per-example rows to `image_features` `[batch, max_items, dim]` + bool `image_features_mask`."""
        rows = [self.check_rows(r, i) for i, r in enumerate(image_features)]
        width = max((len(r) for r in rows), default=0)
        features = np.zeros((len(rows), width, self.feature_dim), dtype=np.float32)
        mask = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            features[i, : len(r)] = r
            mask[i, : len(r)] = True
        return BatchFeature({"image_features": features, "image_features_mask": mask}, tensor_type=return_tensors)

    def to_dict(self) -> dict[str, Any]:
        """Configuration only: the item table is data, not configuration."""
        output = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in ("_item_features", "_item_has_image")}
        output["feature_extractor_type"] = type(self).__name__
        return output

    def __deepcopy__(self, memo: dict[int, Any]) -> VIP5FeatureExtractor:
        """Share the read-only table: processor serialisation deep-copies sub-processors, and tables can be large."""
        clone = copy.copy(self)
        clone.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()
                               if k not in ("_item_features", "_item_has_image")})
        return clone


class VIP5Processor(ProcessorMixin):
    """Renders VIP5 prompts and encodes them with a T5 tokenizer plus per-item CLIP features.

    `image_token` (default `<extra_id_0>`, id 32099 in t5-small, so original checkpoints keep working) is the
    placeholder whose embeddings the model replaces with image tokens; its id comes from the tokenizer.
    `prompt_templates` (JSON records as in `templates.json`; default: the packaged 29) are saved with the processor, so
    a checkpoint keeps the prompts it was trained with.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, feature_extractor: VIP5FeatureExtractor | None = None,
                 image_token: str = IMAGE_TOKEN, prompt_templates: list[dict[str, Any]] | None = None):
        self.image_token = image_token
        self.templates = dict(load_templates()) if prompt_templates is None else \
            parse_templates(prompt_templates, "processor prompt_templates")
        self.prompt_templates = [t.to_dict() for t in self.templates.values()]
        super().__init__(tokenizer, VIP5FeatureExtractor() if feature_extractor is None else feature_extractor)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if tokenizer(image_token, add_special_tokens=False)["input_ids"] != [self.image_token_id] or \
                self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer must encode the image placeholder {image_token!r} as one token of its own "
                             "(T5 tokenizers do, with extra_ids=100)")

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path: Any, processor_dict: dict | None = None,
                                       **kwargs: Any) -> list[Any]:
        """A saved VIP5 processor keeps its feature side in processor_config.json; a plain T5 tokenizer repository
        (`"t5-small"`) has none and gets the default one."""
        subfolder = kwargs.pop("subfolder", "")
        tokenizer = cls._load_tokenizer_from_pretrained("tokenizer", pretrained_model_name_or_path, subfolder=subfolder,
                                                        **kwargs)
        config = (processor_dict or {}).get("feature_extractor")
        return [tokenizer, VIP5FeatureExtractor.from_dict(config) if config else VIP5FeatureExtractor()]

    @property
    def model_input_names(self) -> list[str]:
        """Everything `__call__` returns except labels (what a trainer must keep)."""
        return ["input_ids", "attention_mask", "whole_word_ids", "category_ids", *self.feature_extractor.model_input_names]

    def check_model_config(self, config: Any) -> None:
        """Raise if a model config disagrees with this processor (placeholder id, k, feature width, vocabulary)."""
        fe = self.feature_extractor
        pairs = [("image_token_id", self.image_token_id), ("num_image_tokens", fe.num_image_tokens),
                 ("image_feature_dim", fe.feature_dim)]
        problems = [f"{name}: model {getattr(config, name, None)} vs processor {mine}" for name, mine in pairs
                    if getattr(config, name, None) != mine]
        if config.vocab_size < len(self.tokenizer):
            problems.append(f"vocab_size: model {config.vocab_size} < tokenizer {len(self.tokenizer)}")
        if problems:
            raise ValueError("model config and processor disagree: " + "; ".join(problems))

    def render(self, template_id: str, **fields: Any) -> RenderedPrompt:
        """`render_prompt` with this processor's templates, placeholder, k and photo mask (see its fields)."""
        fe = self.feature_extractor
        return render_prompt(template_id, num_image_tokens=fe.num_image_tokens, image_token=self.image_token,
                             has_photo=fe.has_image, templates=self.templates, **fields)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, verbose=False)["input_ids"]

    def _rows(self, i: int, prompt: str | RenderedPrompt, image_features: Sequence[Any] | None,
              item_ids: Sequence[Sequence[int]] | None) -> np.ndarray:
        """Feature rows of example i: given, looked up by the given ids, or looked up for a rendered prompt's items."""
        fe = self.feature_extractor
        if image_features is not None and image_features[i] is not None:
            rows = image_features[i]
        elif item_ids is not None:
            rows = fe.lookup(item_ids[i])
        elif isinstance(prompt, RenderedPrompt) and prompt.image_item_ids and fe.item_features is not None:
            rows = fe.lookup(prompt.image_item_ids)
        else:
            rows = np.zeros((0, fe.feature_dim), dtype=np.float32)
        return fe.check_rows(rows, i)

    def _drop_history(self, i: int, prompt: str | RenderedPrompt, ids: list[int], rows: np.ndarray,
                      max_length: int) -> tuple[list[int], np.ndarray]:
        """Drop the fewest oldest history items so the prompt fits (keeping at least one); rows follow the items."""
        if not isinstance(prompt, RenderedPrompt):
            raise ValueError(f"example {i}: truncation='history' needs a RenderedPrompt (from render / render_prompt) to "
                             f"know the history items; this plain string has {len(ids)} tokens > max_length={max_length}")
        if prompt.history_length < 2:
            return ids, rows
        encoded = {}
        low, high = 1, prompt.history_length - 1
        while low < high:  # smallest n with len(encode(drop_oldest(n))) <= max_length, else history_length - 1
            middle = (low + high) // 2
            encoded[middle] = self._encode(prompt.drop_oldest(middle).source)
            if len(encoded[middle]) <= max_length:
                high = middle
            else:
                low = middle + 1
        keep = [j for j, (name, position) in enumerate(prompt.image_slots) if not (name == "history" and position < low)]
        return encoded.get(low) or self._encode(prompt.drop_oldest(low).source), rows[keep]

    def _check_alignment(self, i: int, ids: list[int], rows: np.ndarray) -> None:
        """Every feature row needs exactly k placeholders."""
        k = self.feature_extractor.num_image_tokens
        count = ids.count(self.image_token_id)
        if count != k * len(rows):
            raise ValueError(f"example {i}: {count} image placeholders {self.image_token!r} in the prompt, but "
                             f"{len(rows)} feature rows x k={k} = {k * len(rows)} (give image_features, item_ids or an "
                             "item-feature table for the photographed items)")

    def _truncate(self, ids: list[int], rows: np.ndarray, max_length: int) -> tuple[list[int], list[int], np.ndarray]:
        """Whole-word ids on the full prompt, then cut its tail as the original did (spec §1.2), but never inside a
        group of k placeholders, so the kept placeholders and rows stay aligned."""
        k = self.feature_extractor.num_image_tokens
        body, eos = ids[:-1], ids[-1]
        count = body.count(self.image_token_id)
        words = whole_word_ids(self.tokenizer.convert_ids_to_tokens(body), self.image_token)
        if len(ids) > max_length:
            body = body[: max_length - 1]
            count = body.count(self.image_token_id)
            while count % k:
                count -= body.pop() == self.image_token_id
        return body + [eos], words[: len(body)] + [0], rows[: count // k]

    def __call__(
        self,
        prompts: str | RenderedPrompt | Sequence[str | RenderedPrompt],
        *,
        image_features: Sequence[Any] | None = None,
        item_ids: Sequence[Sequence[int]] | None = None,
        targets: str | Sequence[str | None] | None = None,
        max_length: int = 1024,
        max_target_length: int = 64,
        truncation: str = "right",
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Encode prompts (strings or `RenderedPrompt`s) and their image features into one padded batch.

        Feature rows per example come from `image_features` (`[n_i, dim]`, rows in placeholder order), else from
        `item_ids` looked up in the item table, else (for rendered prompts) from the table by the prompt's photographed
        items. Each photographed item has k placeholders, so an example needs exactly k x n_i of them.
        `truncation="right"` cuts the prompt tail as the original did (max_length includes `</s>`); `"history"` first
        drops the oldest history items of rendered prompts so the instruction and the latest items survive.
        Targets default to the rendered prompts' targets; `labels` are returned when every example has one.
        `return_tensors`: "pt", "np" or None (numpy arrays).
        """
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        if max_length < 1 or max_target_length < 1:
            raise ValueError(f"max_length and max_target_length must be positive, got {max_length}, {max_target_length}")
        prompts = [prompts] if isinstance(prompts, (str, RenderedPrompt)) else list(prompts)
        targets = [targets] if isinstance(targets, str) else targets
        for name, value in (("image_features", image_features), ("item_ids", item_ids), ("targets", targets)):
            if value is not None and len(value) != len(prompts):
                raise ValueError(f"{name} has {len(value)} entries for {len(prompts)} prompts")
        if image_features is not None and item_ids is not None:
            raise ValueError("give image_features or item_ids, not both")

        sources = [p.source if isinstance(p, RenderedPrompt) else p for p in prompts]
        encoded = self.tokenizer(sources, verbose=False)["input_ids"] if prompts else []
        examples = []
        for i, (prompt, ids) in enumerate(zip(prompts, encoded, strict=True)):
            rows = self._rows(i, prompt, image_features, item_ids)
            self._check_alignment(i, ids, rows)
            if len(ids) > max_length and truncation == "history":
                ids, rows = self._drop_history(i, prompt, ids, rows, max_length)
            examples.append(self._truncate(ids, rows, max_length))

        pad = self.tokenizer.pad_token_id
        length = max((len(ids) for ids, _, _ in examples), default=0)
        data = {name: np.full((len(examples), length), value, dtype=np.int64)
                for name, value in (("input_ids", pad), ("attention_mask", 0), ("whole_word_ids", 0), ("category_ids", 0))}
        for i, (ids, words, _) in enumerate(examples):
            data["input_ids"][i, : len(ids)] = ids
            data["attention_mask"][i, : len(ids)] = 1
            data["whole_word_ids"][i, : len(ids)] = words
            data["category_ids"][i, : len(ids)] = np.equal(ids, self.image_token_id)
        data.update(self.feature_extractor([rows for _, _, rows in examples]))

        target_texts = targets if targets is not None else [p.target if isinstance(p, RenderedPrompt) else None
                                                              for p in prompts]
        missing = [i for i, t in enumerate(target_texts) if t is None]
        if target_texts and len(missing) < len(target_texts):
            if missing:
                raise ValueError(f"examples {missing} have no target while others do; give targets for all or none")
            labels = self.tokenizer(list(target_texts), truncation=True, max_length=max_target_length)["input_ids"]
            data["labels"] = np.full((len(labels), max(map(len, labels))), -100, dtype=np.int64)
            for i, label in enumerate(labels):
                data["labels"][i, : len(label)] = label
        return BatchFeature(data, tensor_type=return_tensors)


def register_auto_classes() -> None:
    """Let `AutoProcessor` / `AutoFeatureExtractor` resolve the VIP5 classes in-process (idempotent)."""
    AutoFeatureExtractor.register(VIP5Config, VIP5FeatureExtractor, exist_ok=True)
    AutoProcessor.register(VIP5Config, VIP5Processor, exist_ok=True)


# Saved folders carry this code and an auto_map, so they load with trust_remote_code=True without the package.
VIP5FeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
VIP5Processor.register_for_auto_class("AutoProcessor")

__all__ = ["VIP5FeatureExtractor", "VIP5Processor", "register_auto_classes", "whole_word_ids"]
