"""What a command checks before anything slow or remote: its local inputs, its output folder, then the Hub.

A name on a command line is a local folder when it exists (then it must hold what the option needs); otherwise it must
be a Hub id, looked up once with a short timeout. Offline (`HF_HUB_OFFLINE=1`) a Hub id must already be in the Hub
cache. Either way a failure takes seconds and says where it looked and how to pass a local folder instead.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data_builders.stats import MANIFEST

HUB_PROBE_TIMEOUT = 5.0  # seconds for the one look-up of a Hub id (the libraries' own downloads retry for ~25 s)
# kind -> (files of which a local folder must hold one, what such a folder is)
KINDS = {
    "dataset": ((MANIFEST,), "a folder built by `vip5-data build`"),
    "model": (("config.json",), "a folder with config.json, as save_pretrained writes it"),
    "model or adapter": (("config.json", "adapter_config.json", "adapter/adapter_config.json"),
                         "a model folder with config.json or an adapter folder with adapter_config.json"),
    "processor": (("processor_config.json", "tokenizer_config.json", "tokenizer.json", "spiece.model"),
                  "a folder with a saved processor or tokenizer"),
}
# What vip5-train writes into its output_dir besides the checkpoints (`--overwrite` deletes these and no others).
RUN_OUTPUTS = ("adapter", "model", "base-model", "logs", "hub", "train_config.json", "training_curve.png")
# Written last, so incomplete when a run fails: removed even when the run leaves resumable checkpoints.
FINAL_OUTPUTS = ("adapter", "model", "hub")


@dataclass(frozen=True)
class Source:
    """One input named on the command line: the option that named it, the name, and what it must be."""

    option: str
    name: str
    kind: str
    note: str = ""  # where the name came from, when not from the option itself


def check_sources(sources: Iterable[Source]) -> None:
    """All local folders first (cheap), then the Hub ids that are not local folders."""
    remote = [source for source in sources if source.name and not is_local(source)]
    for source in remote:
        check_hub(source)


def is_local(source: Source) -> bool:
    """True for a local folder holding what `source.kind` needs; False for a name that can only be a Hub id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(source.name).expanduser()
    expected, description = KINDS[source.kind]
    if path.is_dir():
        if not any((path / name).is_file() for name in expected):
            raise ValueError(f"{source.option}{source.note}: {path} is not {description} (it has none of "
                             f"{', '.join(expected)})")
        return True
    if path.exists():
        raise ValueError(f"{source.option}{source.note}: {path} is a file; expected {description} or a Hub id")
    try:
        validate_repo_id(source.name)
    except HFValidationError:
        raise ValueError(f"{source.option}{source.note}: no folder {path.absolute()} (and {source.name!r} cannot be "
                         "a Hub id)") from None
    return False


def check_hub(source: Source) -> None:
    """The Hub id exists (online: one request of at most HUB_PROBE_TIMEOUT s) or is in the Hub cache (offline)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    repo_type = "dataset" if source.kind == "dataset" else "model"
    where = (f"{source.option}{source.note}: {source.name!r} is not a local folder (no {Path(source.name).absolute()}) "
             f"and, as a Hub {repo_type} id,")
    how = f"pass a local folder instead: {source.option} path/to/{Path(source.name).name}, {KINDS[source.kind][1]}"
    if constants.is_offline_mode():
        snapshots = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=source.name, repo_type=repo_type)
        if any((snapshots / "snapshots").glob("*")):
            return
        raise ValueError(f"{where} it is not in the Hub cache ({constants.HF_HUB_CACHE}) and the Hub is off "
                         f"(HF_HUB_OFFLINE=1); {how}")
    try:
        HfApi().repo_info(source.name, repo_type=repo_type, timeout=HUB_PROBE_TIMEOUT)
    except GatedRepoError:
        raise ValueError(f"{where} it is gated: accept its terms on the Hub and log in (`hf auth login`); {how}") \
            from None
    except RepositoryNotFoundError:
        raise ValueError(f"{where} it is not on the Hub (or private: log in with `hf auth login`); {how}") from None
    except Exception as error:  # no network, DNS, proxy, timeout, server error: the Hub could not be asked
        raise ValueError(f"{where} the Hub could not be reached ({type(error).__name__}: {error}); {how}, or set "
                         "HF_HUB_OFFLINE=1 to use a copy in the Hub cache") from None


def check_repo_id(option: str, name: str) -> None:
    """A Hub id to create or write to (checked for form only; nothing is asked of the Hub)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as error:
        raise ValueError(f"{option}: {name!r} is not a Hub repo id ({error})") from None


def check_dataset_contents(folder: str, domain: str, encoder: str | None = None) -> None:
    """A local dataset folder has the domain (and the image encoder's features) that a run asks for."""
    path = Path(folder)
    if not (path / MANIFEST).is_file():
        return  # a Hub id: checked when loaded
    try:
        domains = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["domains"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path / MANIFEST}: not a readable build manifest ({error})") from None
    if domain not in domains:
        raise ValueError(f"domain: {folder} has no domain {domain!r}; built domains: {sorted(domains)}")
    encoders = domains[domain].get("encoders", [])
    if encoder is not None and encoder not in encoders:
        raise ValueError(f"image_encoder: domain {domain!r} of {folder} has no {encoder!r} features; it has "
                         f"{sorted(encoders)}")


def check_output_file(option: str, name: str) -> None:
    """A file a command writes (atomically): not an existing folder, and its parent not a file."""
    path = Path(name)
    if path.is_dir():
        raise ValueError(f"{option}: {path} is a folder; give a file name")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{option}: {parent} is a file, so {path} cannot be created")


def complete_checkpoints(output: Path) -> list[Path]:
    """Checkpoints a run can resume from: renamed into place only once `trainer_state.json` was written."""
    return sorted(p for p in output.glob("checkpoint-*") if (p / "trainer_state.json").is_file())


def check_output_dir(output_dir: str, resume_from: str, overwrite: bool) -> None:
    """The output-folder policy of vip5-train (documented in its `--help`): new or empty, or a run to resume;
    `--overwrite` first deletes an earlier run's outputs (RUN_OUTPUTS and checkpoints) and nothing else."""
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output_dir: {output} is a file")
    if resume_from and resume_from != "latest" and not (Path(resume_from) / "trainer_state.json").is_file():
        raise ValueError(f"resume_from: {resume_from} is not a checkpoint folder (no trainer_state.json); give one "
                         f"of {output}/checkpoint-* or `latest`")
    if overwrite and resume_from:
        raise ValueError("--overwrite starts afresh and --resume-from continues: give one of them")
    entries = sorted(output.iterdir()) if output.is_dir() else []
    if not entries:
        return
    checkpoints = complete_checkpoints(output)
    if overwrite:
        for entry in entries:
            if entry.name in RUN_OUTPUTS or entry.name.startswith(("checkpoint-", ".checkpoint-")):
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    elif resume_from == "latest" and not checkpoints:
        raise ValueError(f"resume_from latest: {output} holds no complete checkpoint to continue; start afresh there "
                         "with --overwrite, or choose a new output_dir")
    elif not resume_from and checkpoints:
        raise ValueError(f"output_dir: {output} holds a run ({checkpoints[-1].name}); continue it with --resume-from "
                         "latest, or start afresh with --overwrite")
    elif not resume_from:
        names = ", ".join(entry.name for entry in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(f"output_dir: {output} is not empty ({names}); choose a new folder, or --overwrite to "
                         "replace an earlier run's outputs there")


def check_training_run(config, overwrite: bool = False, output_dir: bool = True) -> None:
    """Everything vip5-train can check before loading anything (the settings were checked when parsed): the output
    folder (`output_dir=False` skips it: only the main process of a distributed run judges and prepares it, before
    it writes there), the push target, the local dataset's domain and features, then the inputs that are Hub ids."""
    if output_dir:
        check_output_dir(config.output_dir, config.resume_from, overwrite)
    if config.push_to_hub:
        check_repo_id("--push-to-hub", config.push_to_hub)
    check_dataset_contents(config.dataset, config.domain, config.image_encoder)
    check_sources([Source("--dataset", config.dataset, "dataset"), Source("--model", config.model, "model"),
                   Source("--processor", config.processor, "processor")])


def check_evaluation_run(config) -> None:
    """Everything vip5-evaluate can check before loading the model: its settings, the files it writes, the card's Hub
    ids, the local dataset's domain and features, then the model, the adapter's base model, processor and dataset."""
    config.validate()
    for option, path in (("--output", config.output), ("--predictions", config.predictions),
                         ("--model-card", config.model_card)):
        if path:
            check_output_file(option, path)
    for option, name in (("--model-id", config.model_id), ("--dataset-id", config.dataset_id)):
        if name:
            check_repo_id(option, name)
    check_dataset_contents(config.dataset, config.domain, config.image_encoder)
    sources = [Source("--model", config.model, "model or adapter"), Source("--base-model", config.base_model, "model"),
               Source("--processor", config.processor, "processor"), Source("--dataset", config.dataset, "dataset")]
    check_sources(sources + ([] if config.base_model else recorded_base_model(config.model)))


def recorded_base_model(model: str) -> list[Source]:
    """The base model a local adapter folder records (PEFT's `base_model_name_or_path`), to check it early too."""
    for config_file in (Path(model) / "adapter_config.json", Path(model) / "adapter" / "adapter_config.json"):
        if config_file.is_file():
            try:
                base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path") or ""
            except (json.JSONDecodeError, AttributeError) as error:
                raise ValueError(f"{config_file}: not a readable adapter config ({error})") from None
            return [Source("--base-model", base, "model", f" (recorded in {config_file})")] if base else []
    return []


def kept_after_failure(output: Path):
    """For `removed_on_failure`: while a complete checkpoint exists, keep what resuming needs (everything but the
    final outputs being written and half-saved checkpoints); without one, nothing the run wrote is kept."""

    def keep(entry: Path) -> bool:
        return bool(complete_checkpoints(output)) and entry.name not in FINAL_OUTPUTS \
            and not entry.name.startswith(".checkpoint-")

    return keep
