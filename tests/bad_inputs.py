"""The bad inputs of `test_errors.py`: per console script, the arguments and the one-line message they must give
(None: a usage error, argparse's exit status 2), and the files they point at."""

from __future__ import annotations

import json
from pathlib import Path

import torch

T = "--dataset {dataset} --domain toy --processor {processor} "  # a vip5-train run whose inputs are all fine
E = "--model {tmp}/model --dataset {dataset} --domain toy --processor {processor} "  # the same for vip5-evaluate


def setup_files(tmp: Path) -> None:
    """What the cases point at: a file, a folder with a file, a model folder, an adapter, checkpoints, runs."""
    (tmp / "notes.txt").write_text("not what the option needs")
    (tmp / "folder").mkdir()
    (tmp / "folder" / "notes.txt").write_text("x")
    (tmp / "model").mkdir()
    (tmp / "model" / "config.json").write_text("{}")
    (tmp / "adapter").mkdir()
    (tmp / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/gone/base"}))
    (tmp / "run" / "checkpoint-00000004").mkdir(parents=True)
    (tmp / "run" / "checkpoint-00000004" / "trainer_state.json").write_text('{"step": 4, "epoch": 0}')
    torch.save([1, 2], tmp / "list.pth")
    torch.save({"shared.weight": torch.zeros(4, 2)}, tmp / "no_t5.pth")
    (tmp / "bad.json").write_text('{"model": ')
    for name, text in YAML.items():
        (tmp / f"{name}.yaml").write_text(text)


YAML = {
    "misspelt": "dataset: x\nlearnig_rate: 0.1\n", "many": "dataset: x\nper_device_batch_size: many\n",
    "half": "dataset: x\nper_device_batch_size: 36.5\n", "no": "dataset: x\ndomain: no\n",
    "yes": "dataset: x\nepochs: yes\n", "scalar": "dataset: x\ntasks: sequential\n",
    "unclosed": "dataset: x\ntasks: [sequential, direct\n", "list": "- dataset\n- x\n",
    "twice": "dataset: x\nepochs: 1\nepochs: 2\n", "config_list": "dataset: x\nmodel_config: [1]\n",
    "null": "dataset:\n",
}
CASES = [
    # vip5-train: the config file (keys, types, YAML)
    ("vip5-train", "--config misspelt.yaml",
     r"misspelt.yaml: unknown keys \['learnig_rate'\] \(line 2; did you mean 'learning_rate'\?"),
    ("vip5-train", "--config many.yaml", r"many.yaml:2: per_device_batch_size: expected an integer, got the string 'many'"),
    ("vip5-train", "--config half.yaml", r"half.yaml:2: per_device_batch_size: expected an integer, got the number 36.5"),
    ("vip5-train", "--config no.yaml", r"no.yaml:2: domain: expected a string, got `no`, which YAML reads as the boolean "
                                       r"false; quote it \('no'\)"),
    ("vip5-train", "--config yes.yaml", r"yes.yaml:2: epochs: expected an integer, got `yes`, which YAML reads as the "
                                        "boolean true$"),
    ("vip5-train", "--config scalar.yaml", r"scalar.yaml:2: tasks: expected a list of strings, got the string"),
    ("vip5-train", "--config unclosed.yaml", r"unclosed.yaml:3: invalid YAML: .*flow sequence started on line 2\)"),
    ("vip5-train", "--config list.yaml", r"list.yaml: expected a mapping of settings"),
    ("vip5-train", "--config twice.yaml", r"twice.yaml:3: epochs is given twice \(also on line 2\)"),
    ("vip5-train", "--config config_list.yaml", r"config_list.yaml:2: model_config: expected a mapping, got the list"),
    ("vip5-train", "--config null.yaml", r"null.yaml:1: dataset: expected a string, got nothing \(null\)"),
    ("vip5-train", "--config absent.yaml", r"absent.yaml: cannot read the config file \(No such file or directory\)"),
    # vip5-train: values and ranges (flags)
    ("vip5-train", "--dataset x --method prefix", r"method: expected one of \('vip5_adapter', 'lora', 'full'\), got 'prefix'"),
    ("vip5-train", "--dataset x --warmup-ratio 1.5", r"warmup_ratio: must be between 0 and 1, got 1.5"),
    ("vip5-train", "--dataset x --learning-rate 0", r"learning_rate: must be greater than 0, got 0.0"),
    ("vip5-train", "--dataset x --per-device-batch-size 0", r"per_device_batch_size: must be at least 1, got 0"),
    ("vip5-train", "--dataset x --max-users -1", r"max_users: must be 0 or more, got -1"),
    ("vip5-train", "--dataset x --mixed-precision fp8", r"mixed_precision: expected one of .*got 'fp8'"),
    ("vip5-train", """--dataset x --tasks '["sequential", "ranking"]'""", r"tasks: expected a non-empty subset"),
    ("vip5-train", "--dataset x --tasks '\"sequential\"'", r"tasks: expected a list of strings, got the string"),
    ("vip5-train", "--dataset x --method lora --lora-target-modules []", r"lora_target_modules: give at least one"),
    ("vip5-train", "--dataset x --image-encoder vitl13", r"image_encoder: expected one of .*got 'vitl13'"),
    ("vip5-train", "", r"dataset: give the folder or Hub id of a dataset built by `vip5-data build`"),
    # vip5-train: inputs, local then Hub (offline here)
    ("vip5-train", "--dataset {tmp}/gone/data", r"--dataset: no folder .*/gone/data \(and '.*' cannot be a Hub id\)"),
    ("vip5-train", "--dataset {tmp}/folder", r"--dataset: .*/folder is not a folder built by `vip5-data build`"),
    ("vip5-train", "--dataset {dataset} --domain beauty", r"domain: .* has no domain 'beauty'; built domains: \['toy'\]"),
    ("vip5-train", T + "--image-encoder rn50", r"image_encoder: domain 'toy' of .* has no 'rn50' features; it has \['vitb32'\]"),
    ("vip5-train", "--dataset missing_folder --model t5-small",
     r"--dataset: 'missing_folder' is not a local folder \(no .*/missing_folder\) and, as a Hub dataset id, it is not in "
     r"the Hub cache .* \(HF_HUB_OFFLINE=1\); pass a local folder instead: --dataset path/to/missing_folder"),
    ("vip5-train", "--dataset {dataset} --domain toy --processor t5-small",
     r"--processor: 't5-small' is not a local folder .* as a Hub model id, it is not in the Hub cache .*; pass a local "
     r"folder instead: --processor path/to/t5-small, a folder with a saved processor or tokenizer"),
    ("vip5-train", T + "--model {tmp}/folder", r"--model: .*/folder is not a folder with config.json"),
    ("vip5-train", "--dataset {dataset} --domain toy --processor {tmp}/notes.txt", r"--processor: .*notes.txt is a file"),
    ("vip5-train", T + "--push-to-hub 'not an id!'", r"--push-to-hub: 'not an id!' is not a Hub repo id"),
    # vip5-train: the output folder
    ("vip5-train", T + "--resume-from {tmp}/folder", r"resume_from: .*/folder is not a checkpoint folder"),
    ("vip5-train", T + "--output-dir {tmp}/notes.txt", r"output_dir: .*notes.txt is a file"),
    ("vip5-train", T + "--output-dir {tmp}/folder", r"output_dir: .*/folder is not empty \(notes.txt\); choose a new "
                                                     r"folder, or --overwrite"),
    ("vip5-train", T + "--output-dir {tmp}/run", r"output_dir: .*/run holds a run \(checkpoint-00000004\); continue it "
                                                  r"with --resume-from latest, or start afresh with --overwrite"),
    ("vip5-train", T + "--output-dir {tmp}/run --overwrite --resume-from latest", r"give one of them"),
    ("vip5-train", T + "--output-dir {tmp}/folder --resume-from latest", r"holds no complete checkpoint to continue"),
    ("vip5-train", "--dataset x --per-device-batch-size many", None),
    ("vip5-train", "--dataset x --learnig-rate 0.1", None),
    # vip5-evaluate
    ("vip5-evaluate", "--model {tmp}/gone/model --dataset {dataset} --domain toy", r"--model: no folder .*/gone/model"),
    ("vip5-evaluate", "--model {tmp}/folder --dataset {dataset} --domain toy",
     r"--model: .*/folder is not a model folder with config.json or an adapter folder with adapter_config.json"),
    ("vip5-evaluate", E + "--templates C-7", r"templates: cannot evaluate \{'C-7'"),
    ("vip5-evaluate", E + "--generate foo=1", r"generate: \['foo'\] are not generation settings"),
    ("vip5-evaluate", E + "--batch-size 0", r"batch_size: must be at least 1, got 0"),
    ("vip5-evaluate", E + "--max-examples -1", r"max_examples: must be 0 \(all\) or positive, got -1"),
    ("vip5-evaluate", E + "--model-card {tmp}/README.md", r"model_card: give --model-id"),
    ("vip5-evaluate", E + "--output {tmp}/folder", r"--output: .*/folder is a folder; give a file name"),
    ("vip5-evaluate", E + "--predictions {tmp}/notes.txt/p.jsonl", r"--predictions: .*notes.txt is a file, so"),
    ("vip5-evaluate", "--model {tmp}/model --dataset {dataset} --domain beauty", r"domain: .* has no domain 'beauty'"),
    ("vip5-evaluate", "--model t5-small --dataset {dataset} --domain toy",
     r"--model: 't5-small' is not a local folder .* not in the Hub cache .*; pass a local folder instead: --model "
     r"path/to/t5-small, a model folder with config.json or an adapter folder"),
    ("vip5-evaluate", "--model {tmp}/adapter --dataset {dataset} --domain toy",
     r"--base-model \(recorded in .*adapter_config.json\): no folder /gone/base"),
    ("vip5-evaluate", E + "--split train", None),
    ("vip5-evaluate", E + "--generate novalue", None),
    # vip5-convert: checkpoints and output folders
    ("vip5-convert", "vip5 {tmp}/missing.pth {tmp}/out", r".*/missing.pth: no such file$"),
    ("vip5-convert", "vip5 {tmp}/folder {tmp}/out", r".*/folder: is a folder; give the .pth file"),
    ("vip5-convert", "vip5 {tmp}/notes.txt {tmp}/out", r".*notes.txt: cannot be read as a PyTorch checkpoint"),
    ("vip5-convert", "vip5 {tmp}/list.pth {tmp}/out", r".*list.pth: expected a state dict .*got list"),
    ("vip5-convert", "p5 {tmp}/no_t5.pth {tmp}/out", r".*no_t5.pth: cannot read the T5 geometry, missing keys"),
    ("vip5-convert", "p5 {golden} {tmp}/out", r"has VIP5 adapter keys, so it is not a P5 checkpoint"),
    ("vip5-convert", "vip5 {golden} {tmp}/folder", r".*/folder: exists and is not an earlier `vip5-convert vip5` output"),
    ("vip5-convert", "vip5 {golden} {tmp}/notes.txt", r".*notes.txt: is a file; give a folder to create"),
    ("vip5-convert", "p5 {golden} {tmp}/out --num-image-tokens 0", r"--num-image-tokens: must be at least 1, got 0"),
    ("vip5-convert", "p5 {golden} {tmp}/out --image-feature-type xyz", None),
    # vip5-card
    ("vip5-card", "{tmp}/results.json {tmp}/README.md --model-id me/m", r".*/results.json: no such results file"),
    ("vip5-card", "{tmp}/folder {tmp}/README.md --model-id me/m", r".*/folder: is a folder; give the results JSON"),
    ("vip5-card", "{tmp}/bad.json {tmp}/README.md --model-id me/m", r".*bad.json: line 1, column \d+: invalid JSON"),
    ("vip5-card", "{tmp}/bad.json {tmp}/folder --model-id me/m", r"output: .*/folder is a folder"),
    ("vip5-card", "{tmp}/bad.json {tmp}/README.md --model-id 'not an id!'", r"--model-id: 'not an id!' is not a Hub"),
    ("vip5-card", "{tmp}/bad.json {tmp}/README.md", None),
    # vip5-data (the boundary it shares)
    ("vip5-data", "stats {tmp}/folder", r"not a VIP5 dataset folder"),
    ("vip5-data", "build --source p5 --input x --domain toys --output o --encoders vit", None),
]
