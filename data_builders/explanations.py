"""Review records (P5's `exp_splits.pkl` entries, or raw Amazon reviews) as one Arrow table per split.

`user_desc` follows VIP5's prompts: `reviewerName`, else the raw `reviewerID`; `star_rating` is `int(overall)`.
`explanation` and `feature` are the sentence and aspect word of P5's Sentires-style extraction; raw reviews do not carry
them, so they are null there (the card says so) and `review_text` / `summary` hold what the review has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from .errors import DataFormatError

EXPLANATION_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("item_id", pa.int32()),
        ("reviewer_id", pa.string()),
        ("asin", pa.string()),
        ("user_desc", pa.string()),
        ("star_rating", pa.int8()),
        ("feature", pa.string()),
        ("summary", pa.string()),
        ("explanation", pa.string()),
        ("review_text", pa.string()),
        ("unix_review_time", pa.int64()),
    ]
)
_OPTIONAL_TEXT = {"feature": "feature", "summary": "summary", "explanation": "explanation", "review_text": "reviewText"}


def records_to_table(
    path: Path,
    split: str,
    records: Sequence[Mapping[str, Any]],
    user2id: Mapping[str, int],
    item2id: Mapping[str, int],
    line_numbers: Sequence[int] | None = None,
) -> pa.Table:
    """Validate and convert review dicts; errors name the file and the line (or `split[index]` for pickles)."""
    columns: dict[str, list[Any]] = {name: [] for name in EXPLANATION_SCHEMA.names}
    for index, record in enumerate(records):
        problem = _problem(record, user2id, item2id)
        if problem is not None:
            line = None if line_numbers is None else line_numbers[index]
            raise DataFormatError(path, (f"record {split}[{index}]: " if line is None else "") + problem, line)
        reviewer, name = record["reviewerID"], record.get("reviewerName")
        columns["user_id"].append(user2id[reviewer])
        columns["item_id"].append(item2id[record["asin"]])
        columns["reviewer_id"].append(reviewer)
        columns["asin"].append(record["asin"])
        columns["user_desc"].append(name if isinstance(name, str) and name else reviewer)
        columns["star_rating"].append(int(record["overall"]))
        for column, key in _OPTIONAL_TEXT.items():
            columns[column].append(record.get(key))
        columns["unix_review_time"].append(record.get("unixReviewTime"))
    return pa.table(columns, schema=EXPLANATION_SCHEMA)


def _problem(record: Any, user2id: Mapping[str, int], item2id: Mapping[str, int]) -> str | None:
    """What is wrong with one record, or None."""
    if not isinstance(record, Mapping):
        return f"expected a dict, got {type(record).__name__}"
    reviewer, asin, overall = record.get("reviewerID"), record.get("asin"), record.get("overall")
    if not isinstance(reviewer, str):
        return f"field 'reviewerID' must be a string, got {reviewer!r}"
    if not isinstance(asin, str):
        return f"field 'asin' must be a string, got {asin!r}"
    if isinstance(overall, bool) or not isinstance(overall, int | float) or not 1 <= overall <= 5:
        return f"field 'overall' must be a rating in [1, 5], got {overall!r}"
    if reviewer not in user2id:
        return f"reviewerID {reviewer!r} is not in datamaps.json user2id"
    if asin not in item2id:
        return f"asin {asin!r} is not in datamaps.json item2id"
    for key in _OPTIONAL_TEXT.values():
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            return f"field {key!r} must be a string, got {type(value).__name__}"
    timestamp = record.get("unixReviewTime")
    if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, int)):
        return f"field 'unixReviewTime' must be an integer, got {timestamp!r}"
    return None
