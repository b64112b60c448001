"""VIP5Processor: whole-word / category ids, features, batching, truncation, errors, save/load (spec §1.2-1.7)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from tokenizer_fixture import prompt_corpus
from transformers import AutoFeatureExtractor, AutoProcessor

from modeling_vip5.configuration_vip5 import VIP5Config
from modeling_vip5.processing_vip5 import VIP5FeatureExtractor, VIP5Processor, register_auto_classes, whole_word_ids
from modeling_vip5.prompts import IMAGE_TOKEN, RenderedPrompt, load_templates

SHARED = Path(__file__).resolve().parents[2] / "shared"
DIM = 8
X = IMAGE_TOKEN


@pytest.fixture
def table() -> np.ndarray:
    """Item-feature table for item ids 0..12101 (row = item id), distinct rows."""
    return np.random.default_rng(0).normal(size=(12102, DIM)).astype(np.float32)


@pytest.fixture
def processor(t5_tokenizer, table) -> VIP5Processor:
    return VIP5Processor(t5_tokenizer, VIP5FeatureExtractor(feature_dim=DIM, num_image_tokens=2, item_features=table))


def _words_by_offsets(tokenizer, text: str) -> tuple[list[str], list[int]]:
    """Independent oracle for whole-word ids: index (from 1) of the whitespace-separated word holding each token."""
    enc = tokenizer(text, return_offsets_mapping=True)
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    words = [next(w for w, (s, e) in enumerate(spans, 1) if s <= start < e) if end > start else 0
             for start, end in enc["offset_mapping"]]
    return enc.tokens(), words


def test_worked_example_token_by_token(processor, table, t5_tokenizer):
    """Spec §4.5: A-3, k = 2, history [101, 102, 103], target 104."""
    prompt = processor.render("A-3", user_id=15, history=[101, 102, 103], target_item_id=104)
    batch = processor(prompt)
    ids, words, categories = batch["input_ids"][0], batch["whole_word_ids"][0], batch["category_ids"][0]
    tokens, oracle = _words_by_offsets(t5_tokenizer, prompt.source)
    assert ids.tolist() == t5_tokenizer(prompt.source)["input_ids"] and tokens[-1] == "</s>"
    assert words.tolist() == oracle  # every token carries the index of its word; </s> gets 0
    spec_words = {"Here": 1, "is": 2, "user_15": 8, ":": 9, "101": 10, ",": 13, "102": 14}
    text_words = prompt.source.split()
    for t, (token, word) in enumerate(zip(tokens, words.tolist(), strict=True)):
        if token == X:
            assert categories[t] == 1 and ids[t] == t5_tokenizer.convert_tokens_to_ids(X)
        else:
            assert categories[t] == 0
        if 0 < word and text_words[word - 1] in spec_words and word <= 14:
            assert word == spec_words[text_words[word - 1]]
    placeholder_words = [w for token, w in zip(tokens, words.tolist(), strict=True) if token == X]
    assert placeholder_words == [11, 12, 15, 16, 19, 20]  # each placeholder is a word of its own
    assert categories.sum() == 6
    np.testing.assert_array_equal(batch["image_features"][0], table[[101, 102, 103]])
    assert batch["image_features_mask"].tolist() == [[True, True, True]]
    assert batch["labels"][0].tolist() == t5_tokenizer("104")["input_ids"]


def test_whole_word_rule_on_a_token_list():
    tokens = ["▁He", "re", "▁user", "_", "15", X, X, "▁", ",", "<extra_id_1>", "ab"]
    assert whole_word_ids(tokens) == [1, 1, 2, 2, 2, 3, 4, 5, 5, 5, 5]


def _slow_t5(sp: spm.SentencePieceProcessor, tokenizer, text: str) -> tuple[list[int], list[str]]:
    """What transformers <= 4.33's slow T5Tokenizer (used by VIP5) did: split on special tokens, strip the text next to
    them, run sentencepiece on each chunk (each gets the "▁" prefix), append </s>."""
    specials = sorted(tokenizer.all_special_tokens, key=len, reverse=True)
    ids, pieces = [], []
    for chunk in re.split("(" + "|".join(map(re.escape, specials)) + ")", text):
        if chunk in specials:
            ids.append(tokenizer.convert_tokens_to_ids(chunk))
            pieces.append(chunk)
        elif chunk.strip():
            ids += sp.encode(chunk.strip())
            pieces += sp.encode(chunk.strip(), out_type=str)
    return ids + [tokenizer.eos_token_id], pieces


def test_tokenizer_matches_raw_sentencepiece_on_rendered_prompts(t5_tokenizer):
    """v5 has one (Rust) T5 tokenizer class; the slow path is raw sentencepiece with the old special-token split."""
    sp = spm.SentencePieceProcessor(model_file=str(Path(t5_tokenizer.name_or_path) / "spiece.model"))
    assert "<extra_id_5>" in t5_tokenizer.all_special_tokens
    texts = []
    for prompt in prompt_corpus(300, seed=11):
        texts += [prompt.source, prompt.target]
    texts += ["  leading and  double  spaces \n\n newline ", f"glued{X}{X}text {X}", "ＦＵＬＬ width ① and 日本語 ☃ 😀",
              f"unknown ☃{X} 😀 <extra_id_7>", ""]
    for text in texts:
        slow_ids, slow_pieces = _slow_t5(sp, t5_tokenizer, text)
        fast_ids = t5_tokenizer(text)["input_ids"]
        assert fast_ids == slow_ids, text
        fast_tokens = t5_tokenizer.convert_ids_to_tokens(fast_ids[:-1])
        assert whole_word_ids(fast_tokens) == whole_word_ids(slow_pieces), text


def test_batch_pads_consistently_and_matches_single_examples(processor, table, t5_tokenizer):
    prompts = [processor.render("A-3", user_id=15, history=[1, 2, 3, 4], target_item_id=5),
               processor.render("C-1", user_id=2, item_title="Rose Oil", item_id=9, explanation="nice smell and soft"),
               processor.render("B-1", user_id=7, item_id=11, answer="yes")]
    batch = processor(prompts, return_tensors="pt")
    assert batch["image_features"].shape == (3, 4, DIM) and str(batch["image_features"].dtype) == "torch.float32"
    assert batch["image_features_mask"].tolist() == [[True] * 4, [True, False, False, False], [True, False, False, False]]
    for i, prompt in enumerate(prompts):
        single = processor(prompt)
        n = single["input_ids"].shape[1]
        for key in ("input_ids", "whole_word_ids", "category_ids", "attention_mask"):
            assert batch[key][i, :n].tolist() == single[key][0].tolist()
            assert batch[key][i, n:].tolist() == [t5_tokenizer.pad_token_id if key == "input_ids" else 0] * \
                (batch[key].shape[1] - n)
        rows = len(prompt.image_item_ids)
        np.testing.assert_array_equal(batch["image_features"][i, :rows].numpy(), table[list(prompt.image_item_ids)])
        assert not batch["image_features"][i, rows:].any()
        label = t5_tokenizer(prompt.target)["input_ids"]
        assert batch["labels"][i].tolist() == label + [-100] * (batch["labels"].shape[1] - len(label))


def test_plain_strings_with_given_features_or_item_ids(processor, table):
    text = f"Will user_3 likely to interact with item_8 {X} {X} ?"
    given = processor([text, "no image here"], image_features=[table[[8]], None], targets=["yes", "no"])
    looked_up = processor([text, "no image here"], item_ids=[[8], []], targets=["yes", "no"])
    for key in given:
        np.testing.assert_array_equal(given[key], looked_up[key])
    assert given["image_features_mask"].tolist() == [[True], [False]]
    assert processor("text only")["image_features"].shape == (1, 0, DIM)


def _long_prompt(processor, template="A-3", n=40, **extra):
    return processor.render(template, user_id=15, user_desc="Kim", history=list(range(101, 101 + n)),
                            target_item_id=999, **extra)


def test_right_truncation_keeps_placeholders_and_rows_aligned(processor, table, t5_tokenizer):
    prompt = _long_prompt(processor)
    full = processor(prompt, max_length=4096)
    full_ids, full_words = full["input_ids"][0].tolist(), full["whole_word_ids"][0].tolist()
    placeholder = processor.image_token_id
    for max_length in range(60, 140):
        out = processor(prompt, max_length=max_length)
        ids, words = out["input_ids"][0].tolist(), out["whole_word_ids"][0].tolist()
        count = ids.count(placeholder)
        assert ids[-1] == t5_tokenizer.eos_token_id and words[-1] == 0
        assert ids[:-1] == full_ids[: len(ids) - 1] and words[:-1] == full_words[: len(ids) - 1]  # untruncated ids
        assert count % 2 == 0 and out["image_features_mask"][0].sum() == count // 2
        np.testing.assert_array_equal(out["image_features"][0], table[101: 101 + count // 2])
        reference = t5_tokenizer(prompt.source, truncation=True, max_length=max_length)["input_ids"]  # original cut
        if reference.count(placeholder) % 2 == 0:
            assert ids == reference
        else:  # the original cut inside an item's placeholder pair: that half pair is dropped too
            assert len(ids) == max_length - 1 and ids[:-1] == reference[:-2] and reference[-2] == placeholder


def test_history_truncation_drops_the_oldest_items_first(processor, table, t5_tokenizer):
    prompt = _long_prompt(processor)
    full_ids = processor(prompt, max_length=4096)["input_ids"][0].tolist()
    max_length = 120
    out = processor(prompt, max_length=max_length, truncation="history")
    ids = out["input_ids"][0].tolist()
    assert len(ids) <= max_length < len(full_ids)
    tail = t5_tokenizer(" try to recommend next item to the user")["input_ids"]
    assert ids[-len(tail):] == full_ids[-len(tail):] == tail  # the instruction survives
    kept = int(out["image_features_mask"][0].sum())
    dropped = 40 - kept
    shorter = prompt.drop_oldest(dropped)
    assert shorter.image_item_ids == tuple(range(101 + dropped, 141))  # the most recent items survive
    reference = processor(shorter, max_length=4096)  # whole-word ids as for the shorter, untruncated prompt
    for key in reference:
        np.testing.assert_array_equal(out[key], reference[key])
    np.testing.assert_array_equal(out["image_features"][0], table[101 + dropped: 141])
    assert len(processor(prompt.drop_oldest(dropped - 1), max_length=4096)["input_ids"][0]) > max_length  # minimal


def test_history_truncation_with_given_features_keeps_the_candidate_row(processor, table):
    prompt = _long_prompt(processor, "A-7", item_id=7, answer="yes")
    rows = table[list(prompt.image_item_ids)]
    out = processor(prompt, image_features=[rows], max_length=100, truncation="history")
    kept = int(out["image_features_mask"][0].sum())
    np.testing.assert_array_equal(out["image_features"][0], np.concatenate([rows[40 - kept + 1: 40], rows[-1:]]))
    assert out["input_ids"].shape[1] <= 100 and out["category_ids"][0].sum() == 2 * kept


def test_history_truncation_falls_back_and_refuses_plain_strings(processor):
    explanation = processor.render("C-1", user_id=1, item_title="word " * 300, item_id=3)
    right = processor(explanation, max_length=50)
    history = processor(explanation, max_length=50, truncation="history")
    for key in right:
        np.testing.assert_array_equal(right[key], history[key])
    one_item = processor(_long_prompt(processor, n=1), max_length=20, truncation="history")
    assert one_item["input_ids"].shape[1] == 20
    assert processor("short text", truncation="history")["input_ids"].shape[1] < 10
    with pytest.raises(ValueError, match="truncation='history' needs a RenderedPrompt"):
        processor(_long_prompt(processor).source, image_features=[np.zeros((40, DIM))], max_length=50,
                  truncation="history")


def test_misaligned_or_bad_features_give_clear_errors(processor, table):
    text = f"item_8 {X} {X} and item_9 {X} {X}"
    with pytest.raises(ValueError, match=r"example 0: 4 image placeholders '<extra_id_0>' .* but 1 feature rows x k=2"):
        processor(text, image_features=[table[[8]]])
    with pytest.raises(ValueError, match=r"example 1: image features must be \[n_items, 8\] .* got shape \[2, 7\]"):
        processor([text, text], image_features=[table[[8, 9]], np.zeros((2, 7))])
    bad = table[[8, 9]].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"example 0: image feature row\(s\) \[1\] contain NaN or inf"):
        processor(text, image_features=[bad])
    with pytest.raises(ValueError, match="4 image placeholders .* but 0 feature rows"):
        VIP5Processor(processor.tokenizer, VIP5FeatureExtractor(DIM))(processor.render("A-1", user_id=1, history=[1, 2]))
    with pytest.raises(ValueError, match="item id 20000 is outside the item-feature table"):
        processor(text, item_ids=[[8, 20000]])
    with pytest.raises(ValueError, match="image_features or item_ids, not both"):
        processor(text, image_features=[table[[8, 9]]], item_ids=[[8, 9]])
    with pytest.raises(ValueError, match=r"examples \[1\] have no target"):
        processor([text, text], item_ids=[[8, 9], [8, 9]], targets=["yes", None])
    with pytest.raises(ValueError, match="truncation must be one of"):
        processor(text, item_ids=[[8, 9]], truncation="left")


def test_photo_mask_controls_placeholders_and_lookups(processor, table):
    has_image = np.ones(len(table), dtype=bool)
    has_image[102] = False
    processor.feature_extractor.set_item_features(table, has_image)
    prompt = processor.render("A-3", user_id=1, history=[101, 102, 103])
    assert prompt.image_item_ids == (101, 103) and "102 ," in prompt.source
    np.testing.assert_array_equal(processor(prompt)["image_features"][0], table[[101, 103]])
    with pytest.raises(ValueError, match="item 102 has no image"):
        processor.feature_extractor.lookup([102])
    with pytest.raises(ValueError, match=r"item_features must be a float array \[num_rows, 8\]"):
        processor.feature_extractor.set_item_features(table[:, :4])
    with pytest.raises(ValueError, match=r"item_has_image must be a bool array \[12102\]"):
        processor.feature_extractor.set_item_features(table, has_image[:5])


def test_check_model_config(processor, t5_tokenizer):
    good = VIP5Config(vocab_size=len(t5_tokenizer), image_token_id=processor.image_token_id, image_feature_dim=DIM)
    processor.check_model_config(good)
    bad = VIP5Config(vocab_size=len(t5_tokenizer), image_token_id=processor.image_token_id - 1, num_image_tokens=3,
                     image_feature_dim=DIM)
    with pytest.raises(ValueError, match=rf"image_token_id: model {processor.image_token_id - 1} vs processor "
                                         rf"{processor.image_token_id}; num_image_tokens: model 3 vs processor 2$"):
        processor.check_model_config(bad)
    small = VIP5Config(vocab_size=processor.image_token_id + 1 - 50, image_token_id=10, image_feature_dim=DIM)
    with pytest.raises(ValueError, match=rf"vocab_size: model {processor.image_token_id - 49} < tokenizer 2100"):
        processor.check_model_config(small)


def test_placeholder_must_be_a_single_tokenizer_token(t5_tokenizer):
    with pytest.raises(ValueError, match="must encode the image placeholder '<image>' as one token"):
        VIP5Processor(t5_tokenizer, image_token="<image>")
    assert VIP5Processor(t5_tokenizer, image_token="<extra_id_9>").image_token_id == \
        t5_tokenizer.convert_tokens_to_ids("<extra_id_9>")


def test_save_and_reload_through_auto_classes(processor, tmp_path):
    custom = [t.to_dict() for t in load_templates().values()][:3]
    custom[0]["source"] = custom[0]["source"].replace("Given", "Given  now")
    saved = VIP5Processor(processor.tokenizer, processor.feature_extractor, prompt_templates=custom)
    saved.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert "item_features" not in json.dumps(config) and config["feature_extractor"]["feature_dim"] == DIM
    register_auto_classes()
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is VIP5Processor and loaded.feature_extractor.item_features is None
    assert loaded.prompt_templates == custom and loaded.image_token_id == processor.image_token_id
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is VIP5FeatureExtractor
    loaded.feature_extractor.set_item_features(processor.feature_extractor.item_features)
    prompt = loaded.render("A-1", user_id=3, history=[5, 6], target_item_id=7)
    assert "Given  now" in prompt.source
    before, after = saved(prompt), loaded(prompt)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_plain_tokenizer_folder_loads_like_t5_small(t5_tokenizer, tmp_path):
    """`VIP5Processor.from_pretrained("t5-small")` path, with a local folder holding only tokenizer files."""
    t5_tokenizer.save_pretrained(tmp_path)
    processor = VIP5Processor.from_pretrained(tmp_path)
    assert processor.feature_extractor.feature_dim == 512 and processor.feature_extractor.num_image_tokens == 2
    assert processor.tokenizer("a b")["input_ids"] == t5_tokenizer("a b")["input_ids"]
    assert list(processor.templates) == list(load_templates())


def test_copies_share_the_read_only_item_table(processor):
    clone = copy.deepcopy(processor.feature_extractor)
    assert clone.item_features is processor.feature_extractor.item_features
    assert not clone.item_features.flags.writeable
    clone.num_image_tokens = 3
    assert processor.feature_extractor.num_image_tokens == 2


REMOTE_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):  # the package is installed (editable finder): hide it
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"modeling_vip5", "data_builders", "training"}:
                raise ModuleNotFoundError(f"blocked {name}")

    sys.meta_path.insert(0, Block())
    try:
        import modeling_vip5  # noqa: F401
        raise SystemExit("modeling_vip5 is importable: the test would prove nothing")
    except ModuleNotFoundError:
        pass
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    prompt = processor.render("A-3", user_id=15, history=[101, 102, 103], target_item_id=104)
    batch = processor(prompt, image_features=[[[0.5] * 8] * 3])
    print(json.dumps({"module": type(processor).__module__, "fe": type(processor.feature_extractor).__name__,
                      "batch": {k: v.tolist() for k, v in batch.items()}}))
""")


def test_saved_folder_loads_with_trust_remote_code_without_the_package(processor, tmp_path):
    """Fresh interpreter, HF_HUB_OFFLINE=1, cwd outside the repo, no PYTHONPATH, and an import blocker: the editable
    install puts a meta-path finder (not a sys.path entry) in site-packages, so filtering sys.path would not hide it."""
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    assert {"processing_vip5.py", "prompts.py", "configuration_vip5.py"} <= set(os.listdir(saved))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(saved)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.") and result["fe"] == "VIP5FeatureExtractor"
    prompt = processor.render("A-3", user_id=15, history=[101, 102, 103], target_item_id=104)
    expected = processor(prompt, image_features=[np.full((3, DIM), 0.5)])
    assert result["batch"] == {k: v.tolist() for k, v in expected.items()}


def test_real_beauty_histories_stay_aligned_under_both_truncations(t5_tokenizer):
    data = SHARED / "data" / "amazon-beauty-p5" / "sequential_data.txt"
    if not data.exists():
        pytest.skip(f"real data not found at {data} (the ../shared folder next to the repo)")
    lines = data.read_text(encoding="utf-8").splitlines()[:2000]  # CRLF: splitlines drops the \r too
    processor = VIP5Processor(t5_tokenizer, VIP5FeatureExtractor(DIM, 2, item_features=np.ones((12102, DIM), "f4")))
    prompts: list[RenderedPrompt] = []
    for line in lines:
        user, *items = line.split()
        prompts.append(processor.render("A-9", user_desc=f"user {user}", history=items[:-1], target_item_id=items[-1]))
    lengths = [len(ids) for ids in t5_tokenizer([p.source for p in prompts])["input_ids"]]
    long = [i for i, n in enumerate(lengths) if n > 1024]
    assert long, "the first 2000 Beauty users include histories longer than 1024 tokens"
    tail = t5_tokenizer(" Can you recommend the next possible item to the user ?")["input_ids"]
    for truncation in ("right", "history"):
        batch = processor(prompts, max_length=1024, truncation=truncation)
        rows = batch["image_features_mask"].sum(axis=1)
        assert (batch["category_ids"].sum(axis=1) == 2 * rows).all() and batch["input_ids"].shape[1] <= 1024
        short = [i for i in range(len(prompts)) if i not in long]
        assert (rows[short] == [len(prompts[i].image_item_ids) for i in short]).all()
        ends = batch["attention_mask"].sum(axis=1)
        ends_with_instruction = [batch["input_ids"][i, ends[i] - len(tail): ends[i]].tolist() == tail for i in long]
        assert all(ends_with_instruction) == (truncation == "history") and int(batch["whole_word_ids"].max()) < 1024
