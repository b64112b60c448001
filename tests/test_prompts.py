"""The 29 VIP5 templates as data and the renderer (spec §4)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tokenizer_fixture import prompt_corpus

from modeling_vip5.prompts import IMAGE_TOKEN, load_templates, parse_templates, render_prompt, template_ids

SPEC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "vip5_spec.md"
X = IMAGE_TOKEN


def test_registry_has_the_29_templates_in_three_families():
    templates = load_templates()
    assert list(templates) == [f"A-{i}" for i in range(1, 10)] + [f"B-{i}" for i in range(1, 9)] + [
        f"C-{i}" for i in range(1, 13)
    ]
    assert {t.task for t in templates.values() if t.id[0] == "A"} == {"sequential"}
    assert {t.task for t in templates.values() if t.id[0] == "B"} == {"direct"}
    assert {t.task for t in templates.values() if t.id[0] == "C"} == {"explanation"}
    assert template_ids(seen=False) == ["A-9", "B-8", "C-12"]
    assert template_ids("direct", seen=True) == [f"B-{i}" for i in range(1, 8)]
    assert len(template_ids("explanation")) == 12
    with pytest.raises(ValueError, match="unknown task 'rating'"):
        template_ids("rating")


def test_spacing_quirks_of_the_original_are_kept():
    t = load_templates()
    assert "user_{} .  Select" in t["B-8"].source  # two spaces
    assert t["B-3"].source.startswith("For {}, do")  # comma attached, unlike every other template
    assert "I wonder what is the next item" in t["A-2"].source
    assert t["C-7"].target == t["C-8"].target == "{} , {}"
    assert t["C-2"].source == (
        "Given the following review headline \n {} \n can you help generate an explanation of user_{} for item_{} {} ?"
    )


def _spec_table() -> dict[str, tuple[str, str | None]]:
    """Source (and backticked target) of every template row in spec §4.2, `\\n` turned into a newline."""
    rows = {}
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| ([ABC]-\d+) \| `(.*?)`(?: \(two spaces after `\.`\))? \| (.*?) \|", line)
        if match:
            target = re.match(r"`(.*?)`", match.group(3))
            rows[match.group(1)] = (match.group(2).replace("\\n", "\n"), target.group(1) if target else None)
    return rows


def test_template_text_matches_the_spec_table():
    if not SPEC.exists():
        pytest.skip(f"reference spec not found at {SPEC} (the ../shared folder next to the repo)")
    spec = _spec_table()
    assert sorted(spec) == sorted(load_templates())
    for template in load_templates().values():
        source, target = spec[template.id]
        assert template.source == source, template.id
        if target is not None:
            assert template.target == target, template.id


def test_worked_example_of_the_spec_renders_verbatim():
    prompt = render_prompt("A-3", user_id=15, history=[101, 102, 103], target_item_id=104)
    assert prompt.source == (
        f"Here is the purchase history list of user_15 : \n 101 {X} {X} , 102 {X} {X} , "
        f"103 {X} {X} \n try to recommend next item to the user"
    )
    assert prompt.target == "104"
    assert prompt.image_item_ids == (101, 102, 103)
    assert prompt.image_slots == (("history", 0), ("history", 1), ("history", 2))


def test_separator_and_k_change_the_list_rendering():
    arrow = render_prompt("A-4", user_desc="Zoë", history=["7", "8"], separator="->", num_image_tokens=3)
    assert (
        arrow.source == f"Given the following purchase history of Zoë : \n 7 {X} {X} {X} -> 8 {X} {X} {X} \n predict "
        "next possible item for the user"
    )
    candidates = render_prompt("B-7", user_id=3, candidates=[5, 6, 9], num_image_tokens=1)
    assert candidates.source.endswith(f": \n 5 {X} , 6 {X} , 9 {X}")
    with pytest.raises(ValueError, match="separator must be one of"):
        render_prompt("A-3", user_id=1, history=[1], separator=";")


def test_photo_slot_follows_item_id_even_when_only_the_title_is_shown():
    prompt = render_prompt("B-3", user_desc="Kim", item_title="Rose Oil", item_id=42, answer="yes")
    assert prompt.source == f"For Kim, do you think it is good to recommend Rose Oil {X} {X} ?"
    assert prompt.image_item_ids == (42,) and prompt.image_slots == (("item_id", 0),)
    with pytest.raises(ValueError, match="needs field 'item_id'.*photo"):
        render_prompt("B-3", user_desc="Kim", item_title="Rose Oil")


def test_items_without_a_photo_get_no_placeholders():
    photographed = {101, 103, 7}
    prompt = render_prompt(
        "A-7", user_id=2, history=[101, 102, 103], item_id=9, answer="no", has_photo=photographed.__contains__
    )
    assert prompt.source == (
        f"user_2 has the following purchase history : \n 101 {X} {X} , 102 , 103 {X} {X} \n does "
        "the user likely to buy 9  next ?"
    )
    assert prompt.image_item_ids == (101, 103)
    assert prompt.image_slots == (("history", 0), ("history", 2))


def test_targets_render_when_complete_and_stay_none_for_inference():
    fields = {"feature": "scent", "user_id": 4, "item_id": 10}
    assert render_prompt("C-7", star_rating=4.3, explanation="smells great", **fields).target == "4.3 , smells great"
    assert render_prompt("C-7", **fields).target is None
    with pytest.raises(ValueError, match=r"target field\(s\) \['star_rating'\] missing"):
        render_prompt("C-7", explanation="smells great", **fields)


def test_unknown_template_and_missing_fields_are_named():
    with pytest.raises(KeyError, match="unknown template id 'A-10'; valid ids: A-1, A-2.*C-12"):
        render_prompt("A-10", user_id=1)
    with pytest.raises(ValueError, match="template 'C-3' needs field 'star_rating'"):
        render_prompt("C-3", user_id=1, item_title="t", item_id=3)
    with pytest.raises(ValueError, match="field 'history' must be a non-empty sequence"):
        render_prompt("A-1", user_id=1, history=[])
    with pytest.raises(ValueError, match=r"history\[1\] must be an integer item id, got 'B00X'"):
        render_prompt("A-1", user_id=1, history=[3, "B00X"])
    with pytest.raises(TypeError):
        render_prompt("A-1", user_id=1, histroy=[3])  # typos are not silently ignored


def test_every_template_renders_all_its_slots():
    for prompt in prompt_corpus(29 * 3, seed=5):
        assert "{}" not in prompt.source and prompt.target is not None
        k = prompt.num_image_tokens
        assert prompt.source.count(X) == k * len(prompt.image_item_ids) > 0
        assert f"{X} {X}" not in prompt.source.replace(" ".join([X] * k), "")  # placeholders come in groups of k


def test_drop_oldest_rerenders_a_shorter_history():
    prompt = render_prompt("A-8", user_desc="Bob", history=[1, 2, 3, 4], item_id=50, answer="yes", num_image_tokens=1)
    shorter = prompt.drop_oldest(3)
    assert (
        shorter.source == f"According to Bob 's purchase history list : \n 4 {X} \n Predict whether the user will "
        f"purchase 50 {X} next ?"
    )
    assert shorter.image_item_ids == (4, 50) and shorter.image_slots == (("history", 0), ("item_id", 0))
    assert shorter.target == prompt.target and prompt.history_length == 4 and shorter.history_length == 1
    with pytest.raises(ValueError, match="can drop 0..3 of the 4 history items"):
        prompt.drop_oldest(4)
    assert render_prompt("B-1", user_id=1, item_id=2).history_length == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(source="no slots"), "field 'source' must have exactly 2"),
        (lambda r: r.update(source_args=["user_id", "purchase_history"]), "unknown names \\['purchase_history'\\]"),
        (lambda r: r.update(task="rating"), "field 'task' must be one of"),
        (lambda r: r.update(seen="yes"), "field 'seen' must be true or false"),
        (lambda r: r.pop("target"), "expected keys"),
        (lambda r: r.update(source="{name} and {}"), "field 'source' must have exactly 2"),
        (lambda r: r.update(source=3), "field 'source' must be a string"),
        (lambda r: r.update(target_args="target_item_id"), "field 'target_args' must be a list of field names"),
    ],
)
def test_bad_template_records_are_rejected_with_their_location(change, message):
    records = json.loads(json.dumps([t.to_dict() for t in load_templates().values()]))
    change(records[2])
    with pytest.raises(ValueError, match=rf"my.json, template #2 \(A-3\): .*{message}"):
        parse_templates(records, "my.json")


def test_duplicate_ids_are_rejected():
    records = [t.to_dict() for t in load_templates().values()]
    with pytest.raises(ValueError, match="duplicate id 'A-1'"):
        parse_templates(records + records[:1], "x")


def test_custom_registry_is_used_for_rendering():
    custom = parse_templates(
        [
            {
                "id": "Z-1",
                "task": "direct",
                "source": "{} likes {} ?",
                "target": "{}",
                "source_args": ["user_desc", "item_photo"],
                "target_args": ["answer"],
                "seen": True,
            }
        ],
        "x",
    )
    prompt = render_prompt("Z-1", user_desc="Ann", item_id=3, templates=custom)
    assert prompt.source == f"Ann likes {X} {X} ?"
    assert template_ids(templates=custom) == ["Z-1"]
