"""The 29 VIP5 prompt templates (spec §4) and the one function that renders them.

The templates are data (`templates.json`, verbatim from the original implementation, spacing quirks included). Item
lists render as the original did, `"a P , b P , c P"` (or `->`), where `P` is k space-separated image placeholders, so
image rows follow the placeholders left to right. `render_prompt` returns a `RenderedPrompt` that remembers its fields,
so the processor can drop the oldest history items by re-rendering instead of re-parsing text.

Field names (the original argument names in brackets where they differ): `user_id`, `user_desc`, `history`
[purchase_history], `candidates`, `item_id`, `item_title`, `star_rating`, `feature`, `review_headline`; targets
`target_item_id` [item_id / groundtruth_item_ids], `answer` [yes_no], `explanation`, `star_rating`. The photo slot
`item_photo` is not a field: it is rendered from `item_id` (k placeholders if that item has a photo).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

IMAGE_TOKEN = "<extra_id_0>"
TASKS = ("sequential", "direct", "explanation")
SEPARATORS = (",", "->")
LIST_FIELDS = ("history", "candidates")
PHOTO_SLOT = "item_photo"
SOURCE_FIELDS = ("user_id", "user_desc", "history", "candidates", "item_id", "item_title", "star_rating", "feature",
                 "review_headline")
TARGET_FIELDS = ("target_item_id", "answer", "explanation", "star_rating")
_TEMPLATE_KEYS = {"id", "task", "source", "target", "source_args", "target_args", "seen"}

ItemId = int | str


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt: `source`/`target` are `str.format` strings with one `{}` per argument, in argument order."""

    id: str
    task: str
    source: str
    target: str
    source_args: tuple[str, ...]
    target_args: tuple[str, ...]
    seen: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in `templates.json` and in a saved processor's config."""
        return {"id": self.id, "task": self.task, "source": self.source, "target": self.target,
                "source_args": list(self.source_args), "target_args": list(self.target_args), "seen": self.seen}


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered template plus what it was rendered from (needed to drop history items and to look up features)."""

    template: PromptTemplate
    source: str
    target: str | None
    image_item_ids: tuple[int, ...]  # photographed items, in the order of their placeholders (= feature-row order)
    image_slots: tuple[tuple[str, int], ...]  # per image row: (field, position in it), e.g. ("history", 0)
    fields: Mapping[str, Any] = field(repr=False)
    num_image_tokens: int = 2
    separator: str = ","
    image_token: str = IMAGE_TOKEN
    has_photo: Callable[[int], bool] | None = field(default=None, repr=False)

    @property
    def history_length(self) -> int:
        """Number of history items (0 for templates without a history)."""
        return len(self.fields["history"]) if "history" in self.template.source_args else 0

    def drop_oldest(self, n: int) -> RenderedPrompt:
        """The same prompt without its `n` oldest history items (at least one item must remain)."""
        if not 0 <= n < self.history_length:
            raise ValueError(f"can drop 0..{self.history_length - 1} of the {self.history_length} history items of "
                             f"template {self.template.id!r}, not {n}")
        fields = {**self.fields, "history": list(self.fields["history"])[n:]}
        return _render(self.template, fields, self.num_image_tokens, self.separator, self.image_token, self.has_photo)


def _format_fields(text: str) -> list[str | None]:
    """Replacement fields of a `str.format` string (None for positional `{}`)."""
    return [name or None for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def parse_templates(records: Sequence[Mapping[str, Any]], origin: str) -> dict[str, PromptTemplate]:
    """Validate template records (from `templates.json` or a saved processor) and index them by id."""
    known = {"source_args": set(SOURCE_FIELDS) | {PHOTO_SLOT}, "target_args": set(TARGET_FIELDS)}
    templates: dict[str, PromptTemplate] = {}
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"{origin}, template #{index}: expected an object, got {type(record).__name__}")
        where = f"{origin}, template #{index} ({record.get('id', '?')})"
        if set(record) != _TEMPLATE_KEYS:
            raise ValueError(f"{where}: expected keys {sorted(_TEMPLATE_KEYS)}, got {sorted(record)}")
        for key in ("id", "source", "target"):
            if not isinstance(record[key], str):
                raise ValueError(f"{where}: field {key!r} must be a string, got {record[key]!r}")
        if record["task"] not in TASKS:
            raise ValueError(f"{where}: field 'task' must be one of {TASKS}, got {record['task']!r}")
        if not isinstance(record["seen"], bool):
            raise ValueError(f"{where}: field 'seen' must be true or false, got {record['seen']!r}")
        for text_key, args_key in (("source", "source_args"), ("target", "target_args")):
            args = record[args_key]
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise ValueError(f"{where}: field {args_key!r} must be a list of field names, got {args!r}")
            unknown = [a for a in args if a not in known[args_key]]
            if unknown:
                raise ValueError(f"{where}: field {args_key!r} has unknown names {unknown}; known: {sorted(known[args_key])}")
            slots = _format_fields(record[text_key])
            if any(s is not None for s in slots) or len(slots) != len(args):
                raise ValueError(f"{where}: field {text_key!r} must have exactly {len(args)} '{{}}' slots (one per "
                                 f"{args_key} entry), got {record[text_key]!r}")
        if record["id"] in templates:
            raise ValueError(f"{where}: duplicate id {record['id']!r}")
        templates[record["id"]] = PromptTemplate(
            id=record["id"], task=record["task"], source=record["source"], target=record["target"],
            source_args=tuple(record["source_args"]), target_args=tuple(record["target_args"]), seen=record["seen"])
    return templates


@lru_cache(maxsize=1)
def load_templates() -> Mapping[str, PromptTemplate]:
    """The packaged registry, read-only (read lazily: code loaded with `trust_remote_code` gets its templates from the
    saved processor config instead, as only .py files are copied)."""
    path = resources.files(__package__).joinpath("templates.json")
    return MappingProxyType(parse_templates(json.loads(path.read_text(encoding="utf-8"))["templates"], str(path)))


def template_ids(task: str | None = None, seen: bool | None = None,
                 templates: Mapping[str, PromptTemplate] | None = None) -> list[str]:
    """Ids of one task family and/or of the seen (training) or unseen (held-out) prompts, in registry order."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {TASKS}")
    registry = load_templates() if templates is None else templates
    return [t.id for t in registry.values() if task in (None, t.task) and seen in (None, t.seen)]


def _item_number(value: ItemId, what: str) -> int:
    """Item ids index the feature table, so they must be integers (P5 data writes them as digit strings)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer item id, got {value!r}") from None


def _render(template: PromptTemplate, fields: Mapping[str, Any], num_image_tokens: int, separator: str,
            image_token: str, has_photo: Callable[[int], bool] | None) -> RenderedPrompt:
    """Render a template whose fields are known to be present (see `render_prompt`)."""
    photo = " ".join([image_token] * num_image_tokens)
    image_item_ids: list[int] = []
    image_slots: list[tuple[str, int]] = []

    def photo_of(item: ItemId, name: str, position: int) -> str:
        number = _item_number(item, f"{name}[{position}]" if name in LIST_FIELDS else name)
        if has_photo is None or has_photo(number):
            image_item_ids.append(number)
            image_slots.append((name, position))
            return photo
        return ""

    values = []
    for arg in template.source_args:
        if arg in LIST_FIELDS:
            texts = [f"{x} {p}" if (p := photo_of(x, arg, i)) else str(x) for i, x in enumerate(fields[arg])]
            values.append(f" {separator} ".join(texts))
        elif arg == PHOTO_SLOT:
            values.append(photo_of(fields["item_id"], "item_id", 0))
        else:
            values.append(str(fields[arg]))
    target = None
    if all(fields.get(a) is not None for a in template.target_args):
        target = template.target.format(*(fields[a] for a in template.target_args))
    return RenderedPrompt(template=template, source=template.source.format(*values), target=target,
                          image_item_ids=tuple(image_item_ids), image_slots=tuple(image_slots), fields=dict(fields), num_image_tokens=num_image_tokens,
                          separator=separator, image_token=image_token, has_photo=has_photo)


def render_prompt(
    template_id: str,
    *,
    user_id: int | str | None = None,
    user_desc: str | None = None,
    history: Sequence[ItemId] | None = None,
    candidates: Sequence[ItemId] | None = None,
    item_id: ItemId | None = None,
    item_title: str | None = None,
    star_rating: int | float | str | None = None,
    feature: str | None = None,
    review_headline: str | None = None,
    target_item_id: ItemId | None = None,
    answer: str | None = None,
    explanation: str | None = None,
    num_image_tokens: int = 2,
    separator: str = ",",
    image_token: str = IMAGE_TOKEN,
    has_photo: Callable[[int], bool] | None = None,
    templates: Mapping[str, PromptTemplate] | None = None,
) -> RenderedPrompt:
    """Render template `template_id` from named fields.

    Fields a template does not use are ignored, so callers can pass everything they have. `item_id` is also required
    by templates that show only the item's title, because it says whose photo fills the photo slot. The target is
    rendered when all its fields are given and left as None when none are (inference). `has_photo(item_id)` says
    whether an item gets placeholders (None: every item has a photo, as in the original data). `separator` joins
    item lists: `,` or `->` (the original drew one at random for sequential prompts, always `,` for candidates).
    """
    registry = load_templates() if templates is None else templates
    if template_id not in registry:
        raise KeyError(f"unknown template id {template_id!r}; valid ids: {', '.join(registry)}")
    if separator not in SEPARATORS:
        raise ValueError(f"separator must be one of {SEPARATORS}, got {separator!r}")
    if num_image_tokens < 1:
        raise ValueError(f"num_image_tokens must be at least 1, got {num_image_tokens}")
    template = registry[template_id]
    fields = {"user_id": user_id, "user_desc": user_desc, "history": history, "candidates": candidates,
              "item_id": item_id, "item_title": item_title, "star_rating": star_rating, "feature": feature,
              "review_headline": review_headline, "target_item_id": target_item_id, "answer": answer,
              "explanation": explanation}
    needed = [a for a in template.source_args if a != PHOTO_SLOT]
    if PHOTO_SLOT in template.source_args and "item_id" not in needed:
        needed.append("item_id")
    for name in needed:
        if fields[name] is None:
            hint = " (the item whose photo fills the photo slot)" if name == "item_id" else ""
            raise ValueError(f"template {template_id!r} needs field {name!r}{hint}; it uses {list(template.source_args)}")
        if name in LIST_FIELDS and (isinstance(fields[name], str) or len(fields[name]) == 0):
            raise ValueError(f"template {template_id!r}: field {name!r} must be a non-empty sequence of item ids")
    given = [a for a in template.target_args if fields[a] is not None]
    if given and len(given) != len(template.target_args):
        missing = [a for a in template.target_args if fields[a] is None]
        raise ValueError(f"template {template_id!r}: target field(s) {missing} missing (give all of "
                         f"{list(template.target_args)} or none)")
    return _render(template, {k: v for k, v in fields.items() if v is not None}, num_image_tokens, separator,
                   image_token, has_photo)


__all__ = ["IMAGE_TOKEN", "SEPARATORS", "TASKS", "PromptTemplate", "RenderedPrompt", "load_templates", "parse_templates",
           "render_prompt", "template_ids"]
