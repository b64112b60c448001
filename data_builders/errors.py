"""The one error type for bad input files, so every message names the file (and line or field) at fault."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """An input file is malformed or disagrees with another input file."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        location = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{location}: {message}")
