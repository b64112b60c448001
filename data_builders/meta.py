"""Amazon 2014 item metadata (`meta_<Category>.json.gz`, P5's `meta.json.gz`): title and image URL per ASIN."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import DataFormatError
from .records import decode, iter_raw_lines, parse_record

# Metadata files hold every item of a category (hundreds of thousands); only lines whose ASIN is wanted get parsed.
_ASIN_RE = re.compile(rb"""["']asin["']\s*:\s*["']([^"']+)["']""")


@dataclass
class ItemMeta:
    title: str | None
    image_url: str | None


def read_item_meta(path: str | Path, asins: Iterable[str]) -> dict[str, ItemMeta]:
    """Title and `imUrl` of the wanted ASINs (missing or empty fields become None)."""
    path = Path(path)
    wanted = set(asins)
    found: dict[str, ItemMeta] = {}
    for line_no, raw in iter_raw_lines(path):
        if not raw.strip():
            continue
        match = _ASIN_RE.search(raw)
        if match is None:
            raise DataFormatError(path, "record without an 'asin' field", line_no)
        if match.group(1).decode("utf-8", "replace") not in wanted:
            continue
        record = parse_record(path, line_no, decode(path, line_no, raw))
        asin = record.get("asin")
        if asin not in wanted:  # the regex matched a nested 'asin' key; the record's own ASIN decides
            continue
        title, url = record.get("title"), record.get("imUrl")
        found[asin] = ItemMeta(
            title=title.strip() or None if isinstance(title, str) else None,
            image_url=url.strip() or None if isinstance(url, str) else None,
        )
    return found
