"""Upload a built dataset folder to the Hugging Face Hub as a dataset repo (one `upload_folder` call)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from .atomic import TMP_PREFIX
from .stats import read_manifest
from .writer import README


def push_dataset(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Create the dataset repo if needed and upload the folder (staging leftovers excluded). Returns the commit URL."""
    folder = Path(folder)
    manifest = read_manifest(folder)  # refuse folders that are not complete builds
    if not (folder / README).is_file():
        raise FileNotFoundError(f"{folder / README}: missing dataset card; rebuild the folder")
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    message = commit_message or f"Upload VIP5 datasets: {', '.join(sorted(manifest['domains']))}"
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="dataset",
        revision=revision,
        commit_message=message,
        ignore_patterns=[f"{TMP_PREFIX}*", f"**/{TMP_PREFIX}*"],
    )
    return commit.commit_url
