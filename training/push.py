"""Publishing a training run on the Hub: the folder is assembled locally first, then uploaded in one call.

Layout of the repository:
- base model trained from t5-small or a fresh config (its frozen, randomly initialised whole-word and category tables are
  part of the model, so the adapter alone cannot reproduce it): the base model at the root and the adapter in
  `adapter/`, whose `base_model_name_or_path` is the repository itself;
- base model already on the Hub: the adapter at the root, pointing at that base model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from huggingface_hub import HfApi

from model_cards.model_card import build_model_card
from training.results import DatasetInfo, EvaluationResults, ModelInfo, package_version, read_results, utc_timestamp


def assemble_repository(output: Path, adapter: Path, base_model: str, repo_id: str, train_config: dict) -> Path:
    """Build `output/hub/` ready for `upload_folder`; returns its path."""
    staging = output / "hub"
    shutil.rmtree(staging, ignore_errors=True)
    local_base = Path(base_model).is_dir()
    if local_base:
        shutil.copytree(base_model, staging)
        shutil.copytree(adapter, staging / "adapter")
        adapter_folder, base_id = staging / "adapter", repo_id
    else:
        shutil.copytree(adapter, staging)
        adapter_folder, base_id = staging, base_model
    config_path = adapter_folder / "adapter_config.json"
    if config_path.exists():  # PEFT records the local training path; the published adapter must name a Hub id
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = base_id
        config_path.write_text(json.dumps(adapter_config, indent=2))
    (adapter_folder / "README.md").unlink(missing_ok=True)  # PEFT's placeholder card; ours goes at the root
    results_path = output / "evaluation.json"
    if results_path.exists():
        results = read_results(results_path)
    else:
        results = EvaluationResults(
            package_version=package_version(), created_at=utc_timestamp(),
            model=ModelInfo(name_or_path=repo_id, base_model=train_config.get("model") or None),
            dataset=DatasetInfo(name=train_config["dataset"], domain=train_config["domain"], config=None,
                                fingerprint="not evaluated"),
            configuration={}, results=[], training_configuration=train_config,
        )
    build_model_card(results, repo_id).save(staging / "README.md")
    return staging


def push_to_hub(folder: Path, repo_id: str, commit_message: str = "VIP5 training run") -> None:
    """Create the repository if needed and upload the assembled folder."""
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
