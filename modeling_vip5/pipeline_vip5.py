"""`pipeline("vip5-recommendation")`: the next items for a user, from a trained VIP5 folder or Hub id.

    import modeling_vip5  # registers the task (a saved folder also works without it: trust_remote_code=True)
    from transformers import pipeline

    pipe = pipeline("vip5-recommendation", model="out/model")
    pipe({"history": [101, 102, 103], "user_id": 15})                     # {"protocol", "template_id", "items": [...]}
    pipe([{"history": ["B000123", "B000456"]}, ...], top_k=5, batch_size=16)
    pipe({"history": [...], "candidates": [...]}, protocol="scoring")
    pipe.explain(user_id=15, item_id=104)                                   # a C-3 explanation, greedy
    pipe.catalogue.title(104)

Every returned score is the exact log-likelihood log p(item id tokens | prompt), the quantity vip5-evaluate ranks by,
whatever the protocol: `constrained` finds its items by beam search over the catalogue's prefix trie (fast, may miss
items beam search prunes), `scoring` ranks the user's `candidates`, `full_ranking` scores every catalogue item (exact,
cost grows with the catalogue). The ranking itself is `modeling_vip5.ranking`, shared with vip5-evaluate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, Pipeline
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

from .catalogue import Catalogue, UnknownItemError
from .ranking import ENCODER_INPUTS, ItemTrie, ScoredItems, generate_ranked_items, item_token_ids, rank_items

TASK = "vip5-recommendation"
# The key of the saved folders' `custom_pipelines` entry. transformers lets a folder's entry win over the in-process
# registry and then insists on trust_remote_code, so it must not be TASK: with this package imported,
# `pipeline(TASK, model=folder)` then runs the package's class; without it, `pipeline(model=folder,
# trust_remote_code=True)` (the task taken from the folder) runs the folder's copy of this file.
REMOTE_TASK = f"{TASK}-remote-code"
PROTOCOLS = ("constrained", "scoring", "full_ranking")
DEFAULT_TEMPLATES = {"constrained": "A-3", "scoring": "B-5", "full_ranking": "A-3"}
USER_KEYS = ("history", "user_id", "user_desc", "template_id", "candidates")
MIN_BEAMS = 20  # vip5-evaluate's constrained beams (the paper's 20); more when top_k asks for more
# Greedy, as vip5-evaluate's explanation protocol; room for a sentence (the paper's max_length=20 cuts many short).
EXPLANATION_GENERATION = {"do_sample": False, "num_beams": 1, "max_new_tokens": 32}
UNKNOWN_TITLE = "unknown title"  # what the prompts show for an item without a title, as in the datasets


@dataclass(frozen=True)
class UserRequest:
    """One user's input, checked and with every item resolved to a catalogue item id."""

    template_id: str
    history: list[int]
    user_id: int | str
    user_desc: str
    candidates: list[int] | None = None
    excluded: frozenset[int] = field(default_factory=frozenset)


class VIP5RecommendationPipeline(Pipeline):
    """Top-k catalogue items for users given their purchase history (see the module docstring for the contract).

    `catalogue`: a `Catalogue`, or the folder / Hub id it was saved in; default: the model's own folder.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args: Any, catalogue: Catalogue | str | os.PathLike | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(f"{TASK} needs the VIP5 processor (saved with the model by vip5-train)")
        self.processor.check_model_config(self.model.config)
        if not isinstance(catalogue, Catalogue):
            catalogue = Catalogue.load(catalogue or self.model.name_or_path)
        self.catalogue = catalogue
        catalogue.attach(self.processor)
        self.model.eval()

    @cached_property
    def item_tokens(self) -> dict[int, list[int]]:
        """Target tokens of every catalogue item, computed once."""
        return item_token_ids(self.processor.tokenizer, self.catalogue.item_ids)

    @cached_property
    def trie(self) -> ItemTrie:
        return ItemTrie(self.item_tokens, eos_token_id=self.processor.tokenizer.eos_token_id)

    def _sanitize_parameters(self, top_k: int | None = None, protocol: str | None = None,
                             exclude_history: bool | None = None, **unknown: Any):
        if unknown:
            raise TypeError(f"{TASK}: unknown options {sorted(unknown)}; options: top_k, protocol, exclude_history, "
                            "batch_size")
        if protocol is not None and protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        preprocess = {k: v for k, v in (("protocol", protocol), ("exclude_history", exclude_history)) if v is not None}
        forward = {k: v for k, v in (("protocol", protocol), ("top_k", top_k)) if v is not None}
        return preprocess, forward, {}

    def __call__(self, users: Mapping[str, Any] | Sequence[Mapping[str, Any]], batch_size: int | None = None,
                 **kwargs: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """Recommendations for one user (a dict) or a list of users (a list of dicts), `batch_size` users per pass.

        Options: `top_k` (10), `protocol` ("constrained", "scoring" or "full_ranking"), `exclude_history` (True).
        """
        single = isinstance(users, Mapping)
        users = [users] if single else list(users)
        batch_size = batch_size or self._batch_size or 8
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        given = self._sanitize_parameters(**kwargs)  # on top of the options given at construction
        preprocess, forward, postprocess = ({**mine, **call} for mine, call in zip(
            (self._preprocess_params, self._forward_params, self._postprocess_params), given, strict=True))
        results: list[dict[str, Any]] = []
        for start in range(0, len(users), batch_size):
            results += self.run_single(users[start : start + batch_size], preprocess, forward, postprocess)
        return results[0] if single else results

    def resolve_user(self, user: Mapping[str, Any], protocol: str = "constrained",
                     exclude_history: bool = True) -> UserRequest:
        """Check one user dict and resolve its items (ids or ASINs) through the catalogue; raises ValueError naming
        what is wrong (unknown ASINs and ids: `UnknownItemError`, a KeyError and ValueError)."""
        if not isinstance(user, Mapping):
            raise ValueError(f"a user must be a dict with a 'history' list, got {type(user).__name__}")
        unknown = sorted(set(user) - set(USER_KEYS))
        if unknown:
            raise ValueError(f"unknown user keys {unknown}; a user has {list(USER_KEYS)}")
        template_id = user.get("template_id") or DEFAULT_TEMPLATES[protocol]
        template = self.processor.templates.get(template_id)
        if template is None or template.task not in ("sequential", "direct") or template.target_args != (
                "target_item_id",):
            raise ValueError(f"template_id {template_id!r} is not a prompt that answers with an item id; use one of "
                             f"{[t.id for t in self.processor.templates.values() if t.target_args == ('target_item_id',)]}")
        history = self._items(user.get("history"), "history")
        candidates = self._items(user["candidates"], "candidates") if user.get("candidates") is not None else None
        if candidates is None and (protocol == "scoring" or "candidates" in template.source_args):
            raise ValueError(f"protocol {protocol!r} with template {template_id} needs the user's 'candidates'")
        user_id = user.get("user_id", 0)  # no dataset user has id 0: a new user is known by the history alone
        return UserRequest(template_id, history, user_id, user.get("user_desc") or f"user_{user_id}", candidates,
                           frozenset(history) if exclude_history else frozenset())

    def _items(self, values: Any, name: str) -> list[int]:
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"'{name}' must be a non-empty list of item ids or ASINs, got {values!r}")
        try:
            return [self.catalogue.resolve(v) for v in values]
        except UnknownItemError as error:
            raise UnknownItemError(f"'{name}': {error}") from None

    def preprocess(self, users: Sequence[Mapping[str, Any]], protocol: str = "constrained",
                   exclude_history: bool = True) -> dict[str, Any]:
        requests = [self.resolve_user(u, protocol, exclude_history) for u in users]
        prompts = [self.processor.render(r.template_id, user_id=r.user_id, user_desc=r.user_desc, history=r.history,
                                         candidates=r.candidates) for r in requests]
        # the newest history items matter most: a long history loses its oldest items, never the instruction
        return dict(self.processor(prompts, truncation="history", return_tensors="pt"), requests=requests)

    def _forward(self, model_inputs: dict[str, Any], protocol: str = "constrained", top_k: int = 10) -> dict[str, Any]:
        requests: list[UserRequest] = model_inputs["requests"]
        inputs = {k: v for k, v in model_inputs.items() if k in ENCODER_INPUTS}
        excluded = [r.excluded for r in requests]
        if protocol == "full_ranking":
            candidates = [self.catalogue.item_ids] * len(requests)
        elif protocol == "scoring":
            candidates = [r.candidates for r in requests]
        else:  # beam search finds the items, exact scoring gives their scores (the beams' own, without rounding)
            found = generate_ranked_items(
                self.model, inputs, trie=self.trie, num_beams=max(MIN_BEAMS, top_k), excluded=excluded,
                max_new_tokens=max(map(len, self.item_tokens.values())), early_stopping=True, length_penalty=0.0)
            candidates = [f.ranking for f in found]
        ranked = rank_items(self.model, inputs, candidates, self.item_tokens, k=top_k, excluded=excluded)
        return {"ranked": ranked, "requests": requests, "protocol": protocol}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        ranked: list[ScoredItems] = model_outputs["ranked"]
        return [{"protocol": model_outputs["protocol"], "template_id": request.template_id,
                 "items": [{"item_id": item, "asin": self.catalogue.asin(item), "title": self.catalogue.title(item),
                            "score": score} for item, score in zip(r.items, r.scores, strict=True)]}
                for request, r in zip(model_outputs["requests"], ranked, strict=True)]

    def explain(self, user_id: int | str, item_id: int | str, history: Sequence[int | str] | None = None,
                template_id: str = "C-3", *, star_rating: float = 5, feature: str | None = None,
                review_headline: str | None = None, user_desc: str | None = None, **generate_kwargs: Any) -> str:
        """Why `user_id` would buy `item_id` (an id or ASIN), in the model's words: an explanation (C) prompt decoded
        greedily; `generate_kwargs` (num_beams, max_new_tokens, ...) override the defaults. Fields the template uses
        (C-3: the star rating) come from the keyword arguments."""
        template = self.processor.templates.get(template_id)
        if template is None or template.task != "explanation":
            raise ValueError(f"template_id {template_id!r} is not an explanation prompt; use one of "
                             f"{[t.id for t in self.processor.templates.values() if t.task == 'explanation']}")
        item = self.catalogue.resolve(item_id)
        prompt = self.processor.render(
            template_id, user_id=user_id, user_desc=user_desc or f"user_{user_id}", item_id=item,
            item_title=self.catalogue.title(item) or UNKNOWN_TITLE, star_rating=star_rating, feature=feature,
            review_headline=review_headline, history=self._items(history, "history") if history is not None else None)
        inputs = {k: v for k, v in self.processor(prompt, return_tensors="pt").items() if k in ENCODER_INPUTS}
        with self.device_placement(), torch.no_grad():
            output = self.model.generate(**self._ensure_tensor_on_device(inputs, self.device),
                                         **(EXPLANATION_GENERATION | generate_kwargs))
        return self.processor.tokenizer.decode(output[0], skip_special_tokens=True).strip()

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Model, processor, catalogue and this pipeline's code: the folder then loads with
        `pipeline("vip5-recommendation", model=folder)`, and without this package with `trust_remote_code=True`."""
        self.model.save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)
        save_pipeline_files(save_directory, self.catalogue)


def save_pipeline_files(folder: str | os.PathLike, catalogue: Catalogue) -> None:
    """Make a saved model folder a `vip5-recommendation` folder: its catalogue, this pipeline's code and, for a full
    model, the `custom_pipelines` entry of config.json that `trust_remote_code=True` reads. (An adapter folder has
    no config of its own; it loads with this package imported.)"""
    catalogue.save(folder)
    custom_object_save(VIP5RecommendationPipeline, folder)
    config_file = Path(folder) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        module = VIP5RecommendationPipeline.__module__.rsplit(".", 1)[-1]
        config["custom_pipelines"] = {REMOTE_TASK: {"impl": f"{module}.{VIP5RecommendationPipeline.__name__}",
                                             "pt": [AutoModelForSeq2SeqLM.__name__], "type": "multimodal"}}
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def register_pipeline() -> None:
    """Make `pipeline("vip5-recommendation", ...)` resolve to this class in-process."""
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=VIP5RecommendationPipeline,
                                        pt_model=AutoModelForSeq2SeqLM, type="multimodal")


__all__ = ["PROTOCOLS", "TASK", "UserRequest", "VIP5RecommendationPipeline", "register_pipeline",
           "save_pipeline_files"]
