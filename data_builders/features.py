"""The on-disk layout of per-item image features, shared by the P5/VIP5 release and by `extract-features`:
`<features_root>/<encoder>_features/<domain>/<asin>.npy`, one float vector per item. An item without a file has no
usable image; the build gives it a zero row and `has_image = False` (or stops, with `missing="error"`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import DataFormatError

# VIP5's feature names -> (open_clip model name, feature width). The widths are modeling_vip5's IMAGE_FEATURE_DIMS
# (a test checks they agree, and agree with open_clip); they are repeated here because importing modeling_vip5 loads
# torch and transformers, which would double the time and memory of a build.
ENCODERS = {
    "rn50": ("RN50", 1024),
    "rn101": ("RN101", 512),
    "vitb32": ("ViT-B-32", 512),
    "vitb16": ("ViT-B-16", 512),
    "vitl14": ("ViT-L-14", 768),
}
MISSING_POLICIES = ("zero", "error")
# present in a feature folder while `extract-features` is filling it; a build refuses such a folder
INCOMPLETE_MARKER = "EXTRACTION_INCOMPLETE"


def features_root_of(input_dir: str | Path, features_root: str | Path | None = None) -> Path:
    """The feature root to use: the given one, else `<input>/features`."""
    return Path(features_root) if features_root is not None else Path(input_dir) / "features"


def feature_dir(features_root: str | Path, encoder: str, domain: str) -> Path:
    """Folder holding the `<asin>.npy` files of one encoder and domain."""
    check_encoder(encoder)
    return Path(features_root) / f"{encoder}_features" / domain


def check_encoder(encoder: str) -> int:
    """The feature width of `encoder`, or a clear error for an unknown name."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown image encoder {encoder!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[encoder][1]


def save_feature(path: Path, vector: np.ndarray) -> None:
    """Write one item's feature atomically (a crash never leaves a truncated `.npy` that a rerun would trust)."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, np.asarray(vector, dtype=np.float32))


def read_feature_dir(
    directory: str | Path, asins: Sequence[str], encoder: str, missing: str = "zero"
) -> tuple[np.ndarray, np.ndarray]:
    """`([len(asins) + 1, dim] float32, [len(asins) + 1] bool)`: row `i + 1` is the feature of `asins[i]`, row 0 is
    zeros (item ids are 1-based), and the mask says which rows came from a file."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing-feature policy must be one of {MISSING_POLICIES}, got {missing!r}")
    directory = Path(directory)
    dim = check_encoder(encoder)
    if not directory.is_dir():
        raise DataFormatError(directory, f"no {encoder} feature folder (expected <asin>.npy files here)")
    if (directory / INCOMPLETE_MARKER).exists():
        raise DataFormatError(directory, "feature extraction was interrupted; rerun `vip5-data extract-features`")
    present = {p.stem for p in directory.glob("*.npy")}
    matrix = np.zeros((len(asins) + 1, dim), dtype=np.float32)
    has = np.zeros(len(asins) + 1, dtype=bool)
    known_headers: dict[bytes, np.dtype] = {}  # .npy header -> dtype, so repeated headers skip numpy's parser
    for row, asin in enumerate(asins, start=1):
        if asin not in present:
            continue
        path = directory / f"{asin}.npy"
        raw = path.read_bytes()
        vector = _from_known_header(raw, known_headers, dim)
        if vector is None:
            try:
                vector = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise DataFormatError(path, f"unreadable feature file ({err})") from err
            if vector.size != dim or not np.issubdtype(vector.dtype, np.floating):
                raise DataFormatError(
                    path, f"expected {dim} floats for {encoder}, got shape {vector.shape} {vector.dtype}"
                )
            known_headers[raw[: len(raw) - vector.nbytes]] = vector.dtype
        matrix[row] = vector.reshape(dim)
        has[row] = True
    if missing == "error" and not has[1:].all():
        absent = [asins[i] for i in np.flatnonzero(~has[1:])[:5]]
        raise DataFormatError(directory, f"{int((~has[1:]).sum())} items have no {encoder} feature, e.g. {absent}")
    return matrix, has


def _from_known_header(raw: bytes, known_headers: dict[bytes, np.dtype], dim: int) -> np.ndarray | None:
    """The vector of a `.npy` file whose header was already validated on an earlier file, else None."""
    for header, dtype in known_headers.items():
        if len(raw) == len(header) + dim * dtype.itemsize and raw.startswith(header):
            return np.frombuffer(raw, dtype=dtype, offset=len(header))
    return None
