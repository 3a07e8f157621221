"""A deterministic synthetic product-image catalog: colour × shape × pattern × printed word.

Every item is a small picture (PIL, no files needed) with a title and facets, so tests, the
demo and ``osreco eval --tasks image`` can prove image search without any downloaded model
or data. Some (colour, shape, pattern) combinations are held out: ``train_items`` never shows
them, and the evaluation asks for exactly those.

Example:
    >>> items = shop_items()
    >>> len(items), items[0].title
    (384, 'Red plain circle tee by Nova')
    >>> render(items[0]).size
    (64, 64)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 165, 60), "blue": (40, 80, 225), "yellow": (240, 205, 30),
    "purple": (135, 55, 180), "orange": (245, 135, 25), "black": (25, 25, 25), "pink": (245, 120, 175)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
PATTERNS = ("plain", "striped", "dotted", "checked")
WORDS = ("nova", "luma")
CATEGORIES = ("tee", "mug", "poster")
SIZE = 64


@dataclass(frozen=True)
class ShopItem:
    """One synthetic product: its attributes, title and whether its combination is held out."""

    item_id: str
    colour: str
    shape: str
    pattern: str
    word: str
    category: str
    held_out: bool

    @property
    def title(self) -> str:
        """e.g. ``Red striped circle tee by Nova``."""
        return f"{self.colour.capitalize()} {self.pattern} {self.shape} {self.category} by {self.word.capitalize()}"

    @property
    def combo(self) -> tuple[str, str, str]:
        """(colour, shape, pattern)."""
        return self.colour, self.shape, self.pattern

    def row(self, image: str | None = None) -> dict[str, Any]:
        """The catalog row (``image`` is the picture's path or URL when written to disk)."""
        row: dict[str, Any] = {"item_id": self.item_id, "title": self.title,
                               "text": f"A {self.colour} {self.shape} printed {self.pattern} on a {self.category}.",
                               "color": self.colour, "shape": self.shape, "pattern": self.pattern,
                               "brand": self.word, "category": self.category, "price": 10 + len(self.title) % 30}
        if image is not None:
            row["image"] = image
        return row


def is_held_out(ci: int, si: int, pi: int) -> bool:
    """The fixed rule choosing held-out combinations (about one in seven; every colour, shape
    and pattern still appears in training)."""
    return (ci + 2 * si + 3 * pi) % 7 == 0


def shop_items() -> list[ShopItem]:
    """Returns: every item (8 colours × 6 shapes × 4 patterns × 2 words = 384), in a fixed order."""
    items = []
    for ci, colour in enumerate(COLOURS):
        for si, shape in enumerate(SHAPES):
            for pi, pattern in enumerate(PATTERNS):
                for wi, word in enumerate(WORDS):
                    items.append(ShopItem(f"img-{ci}{si}{pi}{wi}", colour, shape, pattern, word,
                                          CATEGORIES[(ci + si + wi) % len(CATEGORIES)], is_held_out(ci, si, pi)))
    return items


def train_items() -> list[ShopItem]:
    """Returns: the items whose combination is not held out."""
    return [i for i in shop_items() if not i.held_out]


def _shape_mask(shape: str, box: tuple[int, int, int, int], size: int) -> Any:
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        d.ellipse(box, fill=255)
    elif shape == "square":
        d.rectangle(box, fill=255)
    elif shape == "triangle":
        d.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=255)
    elif shape == "diamond":
        d.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=255)
    elif shape == "cross":
        t = r / 2.6
        d.rectangle((cx - t, y0, cx + t, y1), fill=255)
        d.rectangle((x0, cy - t, x1, cy + t), fill=255)
    elif shape == "ring":
        d.ellipse(box, fill=255)
        d.ellipse((cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5), fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _pattern(pattern: str, rgb: tuple[int, int, int], size: int, phase: int) -> Any:
    from PIL import Image

    base = np.zeros((size, size, 3), dtype=np.uint8)
    base[:] = rgb
    yy, xx = np.mgrid[0:size, 0:size]
    light = np.array([255, 255, 255], dtype=np.uint8)
    if pattern == "striped":
        base[((yy + phase) // 4) % 2 == 0] = light
    elif pattern == "dotted":
        base[(((yy + phase) % 8 - 3) ** 2 + ((xx + phase) % 8 - 3) ** 2) <= 3] = light
    elif pattern == "checked":
        base[(((yy + phase) // 6) + ((xx + phase) // 6)) % 2 == 0] = light
    return Image.fromarray(base)


def render(item: ShopItem, seed: int = 0, size: int = SIZE) -> Any:
    """Draw an item as a product photo; ``seed`` moves, scales and lights it differently.

    Args:
        item: the product.
        seed: 0 is the catalog photo; other seeds are other photos of the same product.
        size: picture side in pixels.
    Returns:
        An RGB ``PIL.Image.Image``.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(int(hashlib.sha256(f"{item.item_id}:{seed}".encode()).hexdigest()[:8], 16))
    shade = int(rng.integers(225, 250))
    canvas = Image.new("RGB", (size, size), (shade, shade, shade))
    half = size * float(rng.uniform(0.28, 0.36))
    cx, cy = size / 2 + rng.uniform(-5, 5), size * 0.44 + rng.uniform(-4, 4)
    box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
    fill = _pattern(item.pattern, COLOURS[item.colour], size, int(rng.integers(0, 8)))
    canvas.paste(fill, (0, 0), _shape_mask(item.shape, box, size))
    ImageDraw.Draw(canvas).text((size * 0.3, size * 0.84), item.word.upper(), fill=(60, 60, 60))
    noise = rng.integers(-6, 7, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(canvas, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def write_shop(out_dir: str | Path, items: list[ShopItem] | None = None) -> Path:
    """Write the pictures (PNG) and a JSONL catalog whose ``image`` column names them.

    Args:
        out_dir: folder to create (``images/`` and ``catalog.jsonl`` inside).
        items: the items (default: every item).
    Returns:
        The catalog path.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for item in items if items is not None else shop_items():
        path = out / "images" / f"{item.item_id}.png"
        if not path.is_file():
            render(item).save(path)
        lines.append(json.dumps(item.row(str(path))))
    catalog = out / "catalog.jsonl"
    catalog.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return catalog
