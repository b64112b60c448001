"""Item pictures from a folder of `<asin>.<png|jpg|jpeg|webp>` files; a neutral tile for items without one."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
SYNTHETIC_MARKER = "SYNTHETIC"  # a file of this name in the folder says its pictures are synthetic (vip5-demo writes it)
TILE_SIZE = 224


@lru_cache(maxsize=1)
def placeholder() -> Image.Image:
    """A light grey tile saying there is no picture, so a missing file never looks like a product."""
    tile = Image.new("RGB", (TILE_SIZE, TILE_SIZE), (226, 226, 222))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((8, 8, TILE_SIZE - 9, TILE_SIZE - 9), outline=(180, 180, 175), width=2)
    draw.text((TILE_SIZE // 2, TILE_SIZE // 2), "no image", fill=(110, 110, 105), anchor="mm", font_size=24)
    return tile


class ItemImages:
    """The pictures of one catalogue; `synthetic` when the flag is given or the folder carries the marker file."""

    def __init__(self, folder: Path | None = None, synthetic: bool = False) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {}
        if folder is not None:
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: no such images folder")
            self.files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in EXTENSIONS}
        self.synthetic = synthetic or (folder is not None and (folder / SYNTHETIC_MARKER).exists())

    def image(self, asin: str | None) -> str | Image.Image:
        """The file's path (Gradio serves it from the allowed folder) or the placeholder tile."""
        path = self.files.get(asin or "")
        return str(path) if path is not None else placeholder()
