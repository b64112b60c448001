"""Item photos for feature extraction: from a local folder keyed by ASIN (`<asin>.jpg`, `.png`, ...) or downloaded
from the items' `imUrl` with retries into a cache, so a rerun never downloads a photo twice."""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
_PERMANENT_HTTP = range(400, 500)  # client errors will not heal on retry (except 408 and 429)


@dataclass
class ImageResult:
    image: Image.Image | None
    problem: str | None = None  # why there is no usable image


@dataclass
class ImageFetcher:
    """Finds an item's photo: first in `image_dir`, then (if allowed) at its URL, through `cache_dir`."""

    image_dir: Path | None = None
    cache_dir: Path | None = None
    download: bool = True
    retries: int = 3
    backoff_seconds: float = 1.0
    timeout_seconds: float = 30.0

    def fetch(self, asin: str, url: str | None) -> ImageResult:
        """The item's photo as RGB, or why there is none (never raises for a bad or missing photo)."""
        if self.image_dir is not None:
            for suffix in IMAGE_SUFFIXES:
                path = self.image_dir / f"{asin}{suffix}"
                if path.is_file():
                    return _open(path)
        if url is None:
            return ImageResult(None, "no image file and no image URL")
        if not self.download:
            return ImageResult(None, "not in the image folder (downloads disabled)")
        if self.cache_dir is None:
            raise ValueError("downloading images needs a cache_dir")
        cached = self.cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + _suffix(url))
        if not cached.is_file():
            problem = self._download(url, cached)
            if problem is not None:
                return ImageResult(None, problem)
        return _open(cached)

    def _download(self, url: str, target: Path) -> str | None:
        """Download `url` to `target` atomically; returns the problem if every attempt failed."""
        problem = "not attempted"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_seconds) as response:
                    payload = response.read()
            except urllib.error.HTTPError as err:
                problem = f"HTTP {err.code} for {url}"
                if err.code in _PERMANENT_HTTP and err.code not in (408, 429):
                    return problem
                continue
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                problem = f"download failed for {url}: {err}"
                continue
            except ValueError as err:  # not a URL urllib can open
                return f"invalid image URL {url!r}: {err}"
            with atomic_path(target) as tmp:
                tmp.write_bytes(payload)
            return None
        return f"{problem} (after {self.retries + 1} attempts)"


def _suffix(url: str) -> str:
    suffix = PurePosixPath(urlparse(url).path).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES else ".img"


def _open(path: Path) -> ImageResult:
    try:
        with Image.open(path) as image:
            return ImageResult(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        return ImageResult(None, f"unreadable image {path.name}: {err}")
