"""Reader for the P5/VIP5 preprocessed layout of one domain (spec §3.1–3.2). Every file is optional except that
most configs need `sequential_data.txt`; the reader loads what is present, checks the files against each other, and
notes what it skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .domain import DomainData, Interactions
from .errors import DataFormatError
from .explanations import records_to_table
from .meta import read_item_meta
from .records import fingerprint, iter_lines
from .safe_pickle import load_pickle

SEQUENTIAL, DATAMAPS, NEGATIVES = "sequential_data.txt", "datamaps.json", "negative_samples.txt"
EXP_SPLITS, USER_NAMES, META, ITEM_IMAGES = "exp_splits.pkl", "user_id2name.pkl", "meta.json.gz", "item2img_dict.pkl"
P5_FILES = (SEQUENTIAL, DATAMAPS, NEGATIVES, EXP_SPLITS, USER_NAMES, META, ITEM_IMAGES)
EXP_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def _int_tokens(path: Path, line_no: int, text: str) -> list[int]:
    tokens = text.split()
    try:
        return [int(token) for token in tokens]
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise DataFormatError(path, f"non-integer id {bad!r}", line_no) from None


def read_sequences(path: str | Path) -> tuple[Interactions, list[int]]:
    """`sequential_data.txt` (LF or CRLF): line u holds user u + 1 and at least 3 item ids (leave-one-out needs a
    training item, a validation item and a test item). Also returns the line number of every user."""
    path = Path(path)
    sequences: list[list[int]] = []
    line_of_user: list[int] = []
    for line_no, text in iter_lines(path):
        if not text.strip():
            continue
        ids = _int_tokens(path, line_no, text)
        user = ids[0]
        if user <= len(sequences) and user >= 1:
            raise DataFormatError(path, f"duplicate user {user} (first on line {line_of_user[user - 1]})", line_no)
        if user != len(sequences) + 1:
            raise DataFormatError(path, f"user {user} out of order: expected user {len(sequences) + 1}", line_no)
        if len(ids) < 4:
            raise DataFormatError(
                path, f"user {user} has {len(ids) - 1} items; leave-one-out needs at least 3", line_no
            )
        if min(ids[1:]) < 1:
            raise DataFormatError(path, f"item ids must be >= 1, got {min(ids[1:])}", line_no)
        sequences.append(ids[1:])
        line_of_user.append(line_no)
    if not sequences:
        raise DataFormatError(path, "no user lines")
    return Interactions.from_lists(sequences), line_of_user


def _id_map(path: Path, maps: dict[str, Any], name: str) -> dict[str, str]:
    value = maps.get(name)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DataFormatError(path, f"field {name!r} must map strings to strings")
    return value


def read_datamaps(
    path: str | Path, interactions: Interactions | None, line_of_user: list[int], sequences_path: Path
) -> tuple[list[str], list[str]]:
    """Raw reviewerIDs and ASINs in id order, after checking `datamaps.json` against itself and the sequences."""
    path = Path(path)
    try:
        maps = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(path, f"invalid JSON ({err})") from err
    if not isinstance(maps, dict):
        raise DataFormatError(path, "expected a JSON object")
    raw_ids = []
    for kind, forward, backward in (("user", "user2id", "id2user"), ("item", "item2id", "id2item")):
        to_id, to_raw = _id_map(path, maps, forward), _id_map(path, maps, backward)
        count = len(to_raw)
        expected = {str(i) for i in range(1, count + 1)}
        if set(to_raw) != expected:
            odd = sorted(set(to_raw) ^ expected, key=lambda k: (len(k), k))[:3]
            raise DataFormatError(path, f"{backward} keys must be the ids 1..{count}; unexpected or missing: {odd}")
        for key, raw in to_raw.items():
            if to_id.get(raw) != key:
                raise DataFormatError(path, f"{forward} and {backward} disagree for {kind} {key} ({raw!r})")
        if len(to_id) != count:
            raise DataFormatError(path, f"{forward} has {len(to_id)} entries but {backward} has {count}")
        raw_ids.append([to_raw[str(i)] for i in range(1, count + 1)])
    users, items = raw_ids
    if interactions is not None:
        if interactions.num_users != len(users):
            raise DataFormatError(
                path, f"{len(users)} users in id2user but {interactions.num_users} user lines in {sequences_path.name}"
            )
        over = np.flatnonzero(interactions.items > len(items))
        if len(over):
            user = int(np.searchsorted(interactions.offsets, over[0], side="right")) - 1
            item = int(interactions.items[over[0]])
            raise DataFormatError(
                sequences_path, f"item {item} is not in {path.name} id2item ({len(items)} items)", line_of_user[user]
            )
        seen = np.zeros(len(items) + 1, dtype=bool)
        seen[interactions.items] = True
        unseen = np.flatnonzero(~seen[1:]) + 1
        if len(unseen):
            item = int(unseen[0])
            raise DataFormatError(
                path,
                f"item {item} ({items[item - 1]!r}) never occurs in {sequences_path.name} ({len(unseen)} such items)",
            )
    return users, items


def read_negatives(path: str | Path, interactions: Interactions, num_items: int) -> np.ndarray:
    """`negative_samples.txt`: line u = user u + 1 and its fixed negatives (same count on every line), none of which
    the user interacted with."""
    path = Path(path)
    rows: list[list[int]] = []
    for line_no, text in iter_lines(path):
        if not text.strip():
            continue
        ids = _int_tokens(path, line_no, text)
        user = ids[0]
        if user != len(rows) + 1:
            raise DataFormatError(path, f"user {user} out of order: expected user {len(rows) + 1}", line_no)
        if user > interactions.num_users:
            raise DataFormatError(path, f"user {user} has no line in {SEQUENTIAL}", line_no)
        negatives = ids[1:]
        if rows and len(negatives) != len(rows[0]):
            raise DataFormatError(path, f"{len(negatives)} negatives, but the first line has {len(rows[0])}", line_no)
        if not negatives or min(negatives) < 1 or max(negatives) > num_items:
            raise DataFormatError(path, f"negative item ids must be in 1..{num_items}", line_no)
        history = interactions.items[interactions.offsets[user - 1] : interactions.offsets[user]]
        clash = np.intersect1d(negatives, history)
        if len(clash):
            raise DataFormatError(path, f"negative item {int(clash[0])} is in user {user}'s sequence", line_no)
        rows.append(negatives)
    if len(rows) != interactions.num_users:
        raise DataFormatError(path, f"{len(rows)} user lines, but {SEQUENTIAL} has {interactions.num_users} users")
    return np.asarray(rows, dtype=np.int32)


def read_user_names(path: str | Path, num_users: int) -> list[str | None]:
    """`user_id2name.pkl`: user id string -> reviewerName (P5 already falls back to the reviewerID)."""
    path = Path(path)
    names = load_pickle(path)
    if not isinstance(names, dict):
        raise DataFormatError(path, f"expected a dict, got {type(names).__name__}")
    out: list[str | None] = [None] * num_users
    for key, name in names.items():
        if not (isinstance(key, str) and key.isdigit() and 1 <= int(key) <= num_users):
            raise DataFormatError(path, f"key {key!r} is not a user id in 1..{num_users}")
        if not isinstance(name, str):
            raise DataFormatError(path, f"name of user {key} must be a string, got {type(name).__name__}")
        out[int(key) - 1] = name
    return out


def read_exp_splits(path: str | Path, users: list[str], items: list[str]) -> dict[str, Any]:
    """`exp_splits.pkl`: {'train', 'val', 'test'} -> review records with an explanation sentence and feature word."""
    path = Path(path)
    splits = load_pickle(path)
    if not isinstance(splits, dict) or not set(EXP_SPLIT_NAMES) <= set(splits):
        raise DataFormatError(path, f"expected a dict with keys {sorted(EXP_SPLIT_NAMES)}")
    user2id = {raw: i for i, raw in enumerate(users, start=1)}
    item2id = {asin: i for i, asin in enumerate(items, start=1)}
    tables = {}
    for key, split in EXP_SPLIT_NAMES.items():
        records = splits[key]
        if not isinstance(records, list):
            raise DataFormatError(path, f"split {key!r} must be a list, got {type(records).__name__}")
        table = records_to_table(path, key, records, user2id, item2id)
        if table.column("explanation").null_count:
            raise DataFormatError(path, f"split {key!r} has records without an 'explanation'")
        tables[split] = table
    return tables


def read_item_images(path: str | Path) -> dict[str, str]:
    """`item2img_dict.pkl` (ASIN -> image reference; its format is unpublished): the entries that are URLs."""
    path = Path(path)
    mapping = load_pickle(path)
    if not isinstance(mapping, dict):
        raise DataFormatError(path, f"expected a dict, got {type(mapping).__name__}")
    return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, str) and "://" in v}


def read_p5_domain(input_dir: str | Path, domain: str) -> DomainData:
    """Load every P5/VIP5 file present in `input_dir` (paper item indexing)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: input folder not found")
    present = {name: root / name for name in P5_FILES if (root / name).is_file()}
    if SEQUENTIAL not in present and DATAMAPS not in present:
        raise FileNotFoundError(f"{root}: neither {SEQUENTIAL} nor {DATAMAPS} found; nothing to build")
    notes = [f"{name} absent" for name in P5_FILES if name not in present]

    interactions, line_of_user = (None, [])
    if SEQUENTIAL in present:
        interactions, line_of_user = read_sequences(present[SEQUENTIAL])
    users = items = None
    if DATAMAPS in present:
        users, items = read_datamaps(present[DATAMAPS], interactions, line_of_user, root / SEQUENTIAL)
        num_items = len(items)
    else:
        num_items = int(interactions.items.max())
    data = DomainData(
        domain=domain,
        source="p5",
        num_items=num_items,
        interactions=interactions,
        user_raw_ids=users,
        item_asins=items,
        provenance={name: fingerprint(path) for name, path in present.items()},
        notes=notes,
    )
    if NEGATIVES in present and interactions is not None:
        data.negatives = read_negatives(present[NEGATIVES], interactions, num_items)
        data.negatives_origin = f"{NEGATIVES} (P5's fixed negatives)"
    num_users = interactions.num_users if interactions is not None else len(users)
    if USER_NAMES in present:
        data.user_names = read_user_names(present[USER_NAMES], num_users)
    if items is None:
        data.notes += [
            f"{name} not used: it needs {DATAMAPS}" for name in (EXP_SPLITS, META, ITEM_IMAGES) if name in present
        ]
        return data
    if EXP_SPLITS in present:
        data.explanations = read_exp_splits(present[EXP_SPLITS], users, items)
        data.explanation_origin = f"{EXP_SPLITS} (P5's explanation sentences and feature words)"
    meta = read_item_meta(present[META], items) if META in present else {}
    images = read_item_images(present[ITEM_IMAGES]) if ITEM_IMAGES in present else {}
    if META in present:
        data.item_titles = [meta[a].title if a in meta else None for a in items]
    if meta or images:
        data.item_image_urls = [
            (meta[a].image_url if a in meta and meta[a].image_url else None) or images.get(a) for a in items
        ]
    return data
