"""The embedded default of the main job: a real sample of Amazon Beauty in P5 format, shipped with the package."""

from pathlib import Path

BEAUTY_SAMPLE = Path(__file__).with_name("beauty2000")

__all__ = ["BEAUTY_SAMPLE"]
