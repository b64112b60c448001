"""vip5-train: configuration, end-to-end adapter tuning, resume after SIGKILL, two processes, pushing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from train_fixture import TINY_MODEL

from modeling_vip5 import VIP5ForConditionalGeneration
from modeling_vip5.processing_vip5 import VIP5Processor
from training.config import load_config
from training.train import train

REPO = Path(__file__).resolve().parents[1]


def flags(tiny_dataset, output: Path, **overrides) -> list[str]:
    """A run of a few seconds: tiny model, sequential prompts of 8 users, batches of 4."""
    settings = {
        "dataset": tiny_dataset["dataset"], "domain": "toy", "processor": tiny_dataset["processor"],
        "model_config": json.dumps(TINY_MODEL), "tasks": '["sequential"]', "max_users": 8,
        "sequential_per_user": 2, "per_device_batch_size": 4, "epochs": 2, "log_every": 1, "eval_examples": 4,
        "output_dir": output, "learning_rate": 1e-2,
    }
    settings.update(overrides)
    return [arg for key, value in settings.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def test_config_file_and_flags_and_errors(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: some/data\nlearning_rate: 0.0005\nepochs: 3\n")
    config = load_config(["--config", str(path), "--epochs", "4"])
    assert (config.dataset, config.learning_rate, config.epochs, config.reduction_factor) == ("some/data", 5e-4, 4, 8)
    path.write_text("dataset: x\nmixed_precision: no\n")  # YAML reads the unquoted `no` as false
    assert load_config(["--config", str(path)]).mixed_precision == "no"
    path.write_text("dataset: x\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"run.yaml: unknown keys \['learning_rat'\]"):
        load_config(["--config", str(path)])
    with pytest.raises(ValueError, match="method: expected one of"):
        load_config(["--dataset", "x", "--method", "prefix"])
    with pytest.raises(ValueError, match="dataset: give the folder"):
        load_config([])


def test_paper_config_file_documents_every_key():
    import dataclasses

    import yaml

    from training.config import TrainConfig, default_config_path

    text = default_config_path().read_text()
    assert set(yaml.safe_load(text)) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all("#" in line for line in text.splitlines() if line and not line.startswith((" ", "#")))
    config = load_config(["--config", str(default_config_path()), "--dataset", "x"])
    assert (config.learning_rate, config.adam_epsilon, config.warmup_ratio, config.max_grad_norm) == (1e-3, 1e-6, 0.1, 5.0)
    assert (config.per_device_batch_size, config.epochs, config.num_image_tokens, config.seed) == (36, 10, 2, 2022)


def test_adapter_tuning_end_to_end(tiny_dataset, tmp_path):
    result = train(load_config(flags(tiny_dataset, tmp_path, tasks='["sequential", "direct"]', direct_per_user=1)))
    folder = result.folder
    assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
    assert not (folder / "model.safetensors").exists()
    adapter_bytes = (folder / "adapter_model.safetensors").stat().st_size
    base_bytes = (tmp_path / "base-model" / "model.safetensors").stat().st_size
    assert adapter_bytes < base_bytes
    log = [json.loads(line) for line in (tmp_path / "logs" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len([r for r in log if "eval_loss" in r]) == 2  # one per epoch
    assert sum(losses[-4:]) < sum(losses[:4])  # it learns (means of the first and last four logged steps)
    assert (tmp_path / "training_curve.png").stat().st_size > 1000

    # the adapter folder loads onto the saved base model and reproduces the trained model
    processor = VIP5Processor.from_pretrained(folder)
    prompt = processor.render("A-3", user_id=1, history=[1, 2, 3], target_item_id=4)
    processor.feature_extractor.set_item_features(torch.randn(200, 512).numpy())
    batch = processor([prompt], return_tensors="pt")
    base = VIP5ForConditionalGeneration.from_pretrained(tmp_path / "base-model")
    loaded = PeftModel.from_pretrained(base, folder).eval()
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, result.model(**batch).logits, atol=0, rtol=0)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_other_tuning_methods(tiny_dataset, tmp_path, method):
    result = train(load_config(flags(tiny_dataset, tmp_path, method=method, epochs=1)))
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    assert (result.folder / weights).exists()
    if method == "full":
        assert all(p.requires_grad for p in result.model.parameters())
        reloaded = VIP5ForConditionalGeneration.from_pretrained(result.folder)
        assert torch.equal(reloaded.visual_embedding.fc1.weight, result.model.visual_embedding.fc1.weight)


def test_errors_surface_before_training(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="no training examples"):
        train(load_config(flags(tiny_dataset, tmp_path, tasks='["explanation"]')))
    with pytest.raises(KeyError, match="no 'vitl14' features"):
        train(load_config(flags(tiny_dataset, tmp_path, image_encoder="vitl14")))
    assert not (tmp_path / "logs" / "log.jsonl").exists()


def run_training(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "training.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_weights(tiny_dataset, tmp_path):
    common = dict(epochs=3, save_every=2, keep_checkpoints=2)
    reference = run_training(flags(tiny_dataset, tmp_path / "reference", **common))
    assert reference.wait(timeout=600) == 0, reference.stdout.read()[-3000:]

    killed_dir = tmp_path / "killed"
    victim = run_training(flags(tiny_dataset, killed_dir, **common))
    deadline = time.time() + 600
    while not list(killed_dir.glob("checkpoint-*")) and time.time() < deadline and victim.poll() is None:
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert list(killed_dir.glob("checkpoint-*")) and not (killed_dir / "adapter").exists()
    assert not list(killed_dir.glob(".checkpoint-*")) or all(not (p / "trainer_state.json").exists()
                                                             for p in killed_dir.glob(".checkpoint-*"))

    resumed = run_training(flags(tiny_dataset, killed_dir, resume_from="latest", **common))
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert "resumed from" in output
    expected = load_file(tmp_path / "reference" / "adapter" / "adapter_model.safetensors")
    got = load_file(killed_dir / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_two_processes_stay_in_sync_and_log_the_mean_loss(tiny_dataset, tmp_path):
    """torchrun with gloo: both ranks end with identical weights; the logged loss is the mean of the ranks' losses."""
    script = tmp_path / "run.py"
    script.write_text(
        "import os, sys, torch\n"
        "from training.config import load_config\nfrom training.train import train\n"
        "result = train(load_config(sys.argv[1:]))\n"
        "flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])\n"
        f"open(r'{tmp_path}/checksum-%s.txt' % os.environ['RANK'], 'w').write(repr(flat.double().sum().item()))\n"
    )
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port, so parallel runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
               str(script), *flags(tiny_dataset, tmp_path / "out", epochs=1)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "Error" in line)[-4000:]
    checksums = [(tmp_path / f"checksum-{rank}.txt").read_text() for rank in (0, 1)]
    assert checksums[0] == checksums[1]
    log = [json.loads(line) for line in (tmp_path / "out" / "logs" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss_per_process" in r]
    assert steps and all(len(r["loss_per_process"]) == 2 for r in steps)
    assert all(abs(r["loss"] - sum(r["loss_per_process"]) / 2) < 1e-6 for r in steps)
    assert any(r["loss_per_process"][0] != r["loss_per_process"][1] for r in steps)  # ranks saw different data


def test_push_to_hub_uploads_base_adapter_and_card(tiny_dataset, tmp_path, monkeypatch):
    calls = []

    def fake_upload(self, *, repo_id, folder_path, **kwargs):
        calls.append(("upload", repo_id, sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*")
                                                if p.is_file())))
        return None

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id)))
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", fake_upload)
    train(load_config(flags(tiny_dataset, tmp_path, epochs=1, push_to_hub="me/vip5-toy")))
    assert calls[0] == ("create", "me/vip5-toy")
    files = calls[1][2]
    assert {"README.md", "config.json", "model.safetensors", "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors", "adapter/processor_config.json", "adapter/tokenizer.json"} <= set(files)
    staged = tmp_path / "hub"
    assert json.loads((staged / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "me/vip5-toy"
    card = (staged / "README.md").read_text()
    assert "vip5" in card and "me/vip5-toy" in card


def test_example_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = REPO / "training" / "configs" / "accelerate"
    kinds = {path.stem: load_config_from_file(str(path)).distributed_type for path in folder.glob("*.yaml")}
    assert kinds == {"multi_gpu": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED"}


def test_training_starts_from_a_plain_t5_checkpoint(tiny_dataset, tmp_path):
    """A T5 folder (like t5-small: 28 padding rows beyond the tokenizer) fills the backbone; VIP5 parts start fresh."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokens = len(VIP5Processor.from_pretrained(tiny_dataset["processor"]).tokenizer)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=tokens + 28, **{k: v for k, v in TINY_MODEL.items()}))
    t5.save_pretrained(tmp_path / "t5")
    result = train(load_config(flags(tiny_dataset, tmp_path / "run", model=tmp_path / "t5", epochs=1)))
    base = VIP5ForConditionalGeneration.from_pretrained(tmp_path / "run" / "base-model")
    assert base.config.vocab_size == tokens and base.config.model_type == "vip5"
    torch.testing.assert_close(base.shared.weight, t5.shared.weight[:tokens])
    torch.testing.assert_close(base.encoder.block[1].layer[1].DenseReluDense.wi.weight,
                               t5.encoder.block[1].layer[1].DenseReluDense.wi.weight)
    assert (result.folder / "adapter_model.safetensors").exists()


def test_mixed_precision_auto_follows_the_hardware(monkeypatch):
    from training.config import resolve_mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_mixed_precision("") == "no"  # fp32, unless `accelerate launch` says otherwise
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_mixed_precision("") == "bf16"
    assert resolve_mixed_precision("fp16") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, expected in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "no")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert resolve_mixed_precision("auto") == expected
    with pytest.raises(ValueError, match="mixed_precision: expected one of"):
        load_config(["--dataset", "x", "--mixed-precision", "fp8"])
