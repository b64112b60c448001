"""Bad input at every entry point: one line `vip5-<tool>: error: <what and where>` on stderr, exit status 1 (usage
errors: argparse's 2), no traceback, nothing left behind; the public constructors and the model raise clear errors."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_inputs import CASES, setup_files
from conftest import GOLDEN
from huggingface_hub.errors import StrictDataclassError

import data_builders.cli
import model_cards.model_card
import training.convert_cli
import training.evaluate_cli
import training.train
from data_builders.errors import removed_on_failure
from modeling_vip5 import VIP5Config
from modeling_vip5.processing_vip5 import VIP5FeatureExtractor, VIP5Processor
from training.config import TrainConfig, build_parser, default_config_path, documentation, load_config
from training.evaluate import EvaluateConfig
from training.preflight import Source, check_sources

REPO = Path(__file__).resolve().parents[1]
MAINS = {"vip5-train": training.train.main, "vip5-evaluate": training.evaluate_cli.main,
         "vip5-convert": training.convert_cli.main, "vip5-card": model_cards.model_card.main,
         "vip5-data": data_builders.cli.main}


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.fixture
def offline_hub(tmp_path_factory, monkeypatch):
    """HF_HUB_OFFLINE=1 (conftest) with an empty Hub cache, whatever the machine has cached."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("tool, argv, message", CASES, ids=[f"{c[0]}:{c[1][:60]}" for c in CASES])
def test_console_script_answers_bad_input_with_one_line(tool, argv, message, tmp_path, tiny_dataset, capsys,
                                                        monkeypatch, offline_hub):
    monkeypatch.chdir(tmp_path)
    setup_files(tmp_path)
    before = tree(tmp_path)
    paths = {"tmp": tmp_path, "golden": GOLDEN / "vip5_tiny_original.pth", **tiny_dataset}
    args = shlex.split(argv.format(**{k: shlex.quote(str(v)) for k, v in paths.items()}))
    if message is None:  # a usage error: argparse's message and exit status 2
        with pytest.raises(SystemExit) as exit_:
            MAINS[tool](args)
        assert exit_.value.code == 2
        assert "usage:" in capsys.readouterr().err
    else:
        assert MAINS[tool](args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"{tool}: error: "), err
        assert re.search(message, err.removesuffix("\n")), err
    assert tree(tmp_path) == before  # nothing written, nothing removed


def test_at_least_thirty_bad_inputs_cover_every_console_script():
    assert len(CASES) >= 30 and {case[0] for case in CASES} == set(MAINS)


# ---------------------------------------------------------------- library entry points

def _model_inputs(config, items: int, rows: int, mask: list[bool] | None = None, dim: int | None = None) -> dict:
    ids = [5] + [config.image_token_id] * config.num_image_tokens * items + [1]
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
              "image_features": torch.randn(1, rows, dim or config.image_feature_dim),
              "decoder_input_ids": torch.zeros(1, 1, dtype=torch.long)}
    if mask is not None:
        inputs["image_features_mask"] = torch.tensor([mask])
    return inputs


LIBRARY_CASES = [
    ("2 rows for 1 photographed item, no mask", lambda m: m(**_model_inputs(m.config, 1, 2)),
     r"example 0 has 2 image placeholders but 2 image-feature rows, i.e. 4 image tokens with k=2: say which rows are "
     r"padding with image_features_mask"),
    ("1 row for 2 photographed items, no mask", lambda m: m(**_model_inputs(m.config, 2, 1)),
     r"example 0 has 4 image placeholders but only 1 image-feature rows, i.e. 2 image tokens with k=2$"),
    ("the mask leaves too few rows", lambda m: m(**_model_inputs(m.config, 2, 2, mask=[True, False])),
     r"example 0 has 4 image placeholders but only 1 image-feature rows"),
    ("feature width", lambda m: m(**_model_inputs(m.config, 1, 1, dim=7)), r"image_features must have shape \[batch, "
                                                                          r"n_items, 16\].*got \[1, 1, 7\]"),
    ("placeholders without features",
     lambda m: m(**{k: v for k, v in _model_inputs(m.config, 1, 1).items() if k != "image_features"}),
     r"input_ids contain \[2\] image placeholders .* but no image_features were given"),
    ("VIP5Config loss", lambda m: VIP5Config(loss_normalization="mean"), r"`loss_normalization` must be one of"),
    ("TrainConfig model_config key", lambda m: TrainConfig(dataset="x", model_config={"d_modle": 8}).validate(),
     r"model_config: \['d_modle'\] are not VIP5Config fields"),
    ("TrainConfig model_config value", lambda m: TrainConfig(dataset="x", model_config={"d_model": "8"}).validate(),
     r"model_config: Validation error for field 'd_model': TypeError: Field 'd_model' expected int"),
    ("feature extractor width", lambda m: VIP5FeatureExtractor(feature_dim=0), r"feature_dim and num_image_tokens must "
                                                                              r"be positive, got 0 and 2"),
    ("feature table shape", lambda m: VIP5FeatureExtractor(16).set_item_features(np.zeros((3, 5), np.float32)),
     r"item_features must be a float array \[num_rows, 16\]"),
    ("TrainConfig range", lambda m: TrainConfig(dataset="x", epochs=0).validate(), r"epochs: must be at least 1, got 0"),
    ("TrainConfig type", lambda m: TrainConfig(dataset="x", learning_rate="fast").validate(),
     r"learning_rate: expected a number, got the string 'fast'"),
    ("EvaluateConfig split", lambda m: EvaluateConfig(model="m", dataset="d", split="train").validate(),
     r"split: expected validation or test, got 'train'"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in LIBRARY_CASES], ids=[c[0] for c in LIBRARY_CASES])
def test_model_and_constructors_reject_inputs_that_cannot_work(call, message, tiny_model):
    """ValueErrors, except VIP5Config's own (huggingface_hub's strict dataclass errors, which the boundary also
    reports in one line)."""
    with pytest.raises((ValueError, StrictDataclassError), match=message):
        call(tiny_model)


@pytest.mark.parametrize("kwargs, message", [
    ({"truncation": "middle"}, r"truncation must be one of \('right', 'history'\), got 'middle'"),
    ({"max_length": 0}, r"max_length and max_target_length must be positive, got 0"),
    ({}, r"example 0: 4 image placeholders '<extra_id_0>' in the prompt, but 0 feature rows x k=2 = 0 \(give "
         r"image_features, item_ids or an item-feature table"),
])
def test_processor_rejects_inputs_that_cannot_work(kwargs, message, t5_tokenizer):
    processor = VIP5Processor(t5_tokenizer, VIP5FeatureExtractor(16, 2))
    prompt = processor.render("A-3", user_id=3, history=[4, 5])
    with pytest.raises(ValueError, match=message):
        processor([prompt], **kwargs)


def test_matched_counts_pass_and_a_cache_raises_no_deprecation(tiny_model):
    """The current cache API: generate and an explicit `cache=` run without any FutureWarning/DeprecationWarning."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    inputs = _model_inputs(tiny_model.config, 2, 3, mask=[True, True, False])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        out = tiny_model(**inputs, cache=EncoderDecoderCache(DynamicCache(), DynamicCache()), use_cache=True)
        assert out.cache.get_seq_length() == 1
        generate_inputs = {k: v for k, v in inputs.items() if k != "decoder_input_ids"}
        tiny_model.generate(**generate_inputs, max_new_tokens=3, use_cache=True)


# ---------------------------------------------------------------- what a failed run leaves behind

def test_a_run_that_fails_while_training_removes_its_output_folder(tiny_dataset, tmp_path, capsys):
    output = tmp_path / "out"
    code = training.train.main(["--dataset", str(tiny_dataset["dataset"]), "--domain", "toy", "--processor",
                                str(tiny_dataset["processor"]), "--model-config", '{"d_model": 16, "d_kv": 4, '
                                '"d_ff": 32, "num_layers": 1, "num_heads": 2}', "--tasks", '["explanation"]',
                                "--output-dir", str(output)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("vip5-train: error: ") and "no training examples" in err.splitlines()[-1]
    assert not output.exists()


def test_a_failed_run_keeps_complete_checkpoints_and_drops_half_written_outputs(tiny_dataset, tmp_path, capsys,
                                                                                monkeypatch):
    output = tmp_path / "out"

    def interrupted_train(config):
        (output / "logs").mkdir(parents=True)
        (output / "checkpoint-00000002").mkdir()
        (output / "checkpoint-00000002" / "trainer_state.json").write_text('{"step": 2, "epoch": 0}')
        (output / ".checkpoint-00000004.tmp").mkdir()
        (output / "adapter").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(training.train, "train", interrupted_train)
    argv = ["--dataset", str(tiny_dataset["dataset"]), "--domain", "toy", "--processor",
            str(tiny_dataset["processor"]), "--output-dir", str(output)]
    assert training.train.main(argv) == 130
    assert capsys.readouterr().err == "vip5-train: interrupted\n"
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint-00000002", "logs"]
    assert training.train.main(argv) == 1  # the policy: continue it or start afresh
    assert "--resume-from latest" in capsys.readouterr().err
    monkeypatch.setattr(training.train, "train", lambda config: None)
    assert training.train.main([*argv, "--overwrite"]) == 0
    assert not output.exists() or not any(output.iterdir())


def test_removed_on_failure_never_touches_what_existed(tmp_path):
    (tmp_path / "old.txt").write_text("mine")
    with pytest.raises(RuntimeError), removed_on_failure(tmp_path):
        (tmp_path / "new.txt").write_text("half")
        raise RuntimeError
    assert tree(tmp_path) == {"old.txt"}
    with pytest.raises(RuntimeError), removed_on_failure(tmp_path / "file.json"):
        (tmp_path / "file.json").write_text("{")
        raise RuntimeError
    assert not (tmp_path / "file.json").exists()


# ---------------------------------------------------------------- the Hub

@pytest.mark.parametrize("answer, message", [
    ("timeout", r"as a Hub model id, the Hub could not be reached \(ReadTimeout: slow\); pass a local folder instead: "
                r"--model path/to/m, .* or set HF_HUB_OFFLINE=1"),
    ("missing", r"as a Hub model id, it is not on the Hub \(or private: log in with `hf auth login`\)"),
    ("gated", r"it is gated: accept its terms"),
    ("found", None),
])
def test_hub_ids_are_looked_up_once_with_a_short_timeout(answer, message, monkeypatch):
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    calls = []

    def repo_info(self, repo_id, *, repo_type=None, timeout=None, **kwargs):
        calls.append((repo_id, repo_type, timeout))
        response = httpx2.Response(404, request=httpx2.Request("GET", "https://hub.local"))
        if answer == "timeout":
            raise httpx2.ReadTimeout("slow")
        if answer in ("missing", "gated"):
            raise (RepositoryNotFoundError if answer == "missing" else GatedRepoError)("no", response=response)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    source = Source("--model", "org/m", "model")
    if message is None:
        check_sources([source])
    else:
        with pytest.raises(ValueError, match=message):
            check_sources([source])
    assert calls == [("org/m", "model", 5.0)]


def test_a_cached_hub_id_passes_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    (tmp_path / "models--org--cached" / "snapshots" / "abc").mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    check_sources([Source("--model", "org/cached", "model")])
    with pytest.raises(ValueError, match="not in the Hub cache"):
        check_sources([Source("--dataset", "org/cached", "dataset")])


# ---------------------------------------------------------------- help and accepted spellings

def test_help_shows_the_yaml_comment_of_every_key():
    docs, sections = documentation()
    keys = {name for name in TrainConfig.__dataclass_fields__}
    assert set(docs) == keys and all(docs.values()) and set(sections.values()) >= {"model", "tuning method"}
    text = "".join(build_parser().format_help().split())  # argparse re-wraps (and breaks words at hyphens)
    for key, doc in docs.items():
        assert f"--{key.replace('_', '-')}" in text and "".join(doc.split()) in text, key
    assert "--overwrite" in text and "--debug" in text and "output_dir:aneworemptyfolder" in text


def test_yaml_spellings_that_are_accepted(tmp_path):
    (tmp_path / "ok.yaml").write_text("dataset: x\nmixed_precision: no\nlearning_rate: 1e-3\nepochs: 3\n")
    config = load_config(["--config", str(tmp_path / "ok.yaml")])
    assert (config.mixed_precision, config.learning_rate, config.epochs) == ("no", 1e-3, 3)
    assert load_config(["--config", str(default_config_path()), "--dataset", "x"]) == TrainConfig(dataset="x")


# ---------------------------------------------------------------- the installed console scripts

def _run(command: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return done, time.perf_counter() - start


def test_console_scripts_in_a_fresh_process(tmp_path):
    (tmp_path / "c.yaml").write_text("dataset: x\nlearnig_rate: 0.1\n")
    bin_dir = Path(sys.executable).parent
    done, _ = _run([str(bin_dir / "vip5-train"), "--config", str(tmp_path / "c.yaml")])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("vip5-train: error: ")
    done, _ = _run([sys.executable, "-m", "training.convert_cli", "vip5", str(tmp_path / "x.pth"), str(tmp_path / "o")])
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == f"vip5-convert: error: {tmp_path}/x.pth: " \
                                                                           "no such file"
    done, _ = _run([str(bin_dir / "vip5-evaluate"), "--model", str(tmp_path / "m"), "--dataset", "d", "--debug"])
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError: --model: no folder" in done.stderr
    assert not (tmp_path / "o").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_without_offline_mode_a_hub_name_fails_within_seconds(tiny_dataset, tmp_path):
    """No HF_HUB_OFFLINE: one look-up with a 5 s timeout, not the libraries' ~25 s of retries."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "training.train", "--dataset", str(tiny_dataset["dataset"]),
                           "--domain", "toy", "--processor", "vip5-test/no-such-processor", "--output-dir",
                           str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert re.match(r"vip5-train: error: --processor: 'vip5-test/no-such-processor' is not a local folder .* as a Hub "
                    r"model id, (the Hub could not be reached|it is not on the Hub)", line), line
    assert time.perf_counter() - start < 60  # interpreter start and imports included; the look-up itself is <= 5 s
    assert not (tmp_path / "out").exists()


def test_the_old_cache_name_still_works_with_a_warning(tiny_model):
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    inputs = _model_inputs(tiny_model.config, 1, 1)
    with pytest.warns(FutureWarning, match="Use `cache` instead"):
        out = tiny_model(**inputs, past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()), use_cache=True)
    assert out.cache.get_seq_length() == 1
