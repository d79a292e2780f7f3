"""Text for animation frames: lines rasterised once, then blended with numpy.

In frames that change their text every time (the evolution GIF's policy
tree, titles, percentages), matplotlib's per-artist text machinery is most
of the drawing time. Lines of text repeat a lot from frame to frame
(``yes``/``no``, split conditions, ``a: 26%``), so each distinct
``(text, size, weight)`` is rasterised once with the same FreeType font
matplotlib uses (its ``FT2Font``) into a coverage mask, and every frame
only blends cached masks into its pixels (integer arithmetic, so the
result is deterministic).

Positions are in image pixels (origin top-left, y down).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import get_hinting_flag
from matplotlib.colors import to_rgb
from matplotlib.font_manager import FontProperties, findfont, get_font

__all__ = ["Line", "Sprite", "TextBlock", "TextSprites"]


@dataclass(frozen=True)
class Sprite:
    """One rasterised line: coverage ``mask`` (uint8, h x w) and the row of its baseline."""

    mask: np.ndarray
    baseline: int

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.mask.shape[1])


@dataclass(frozen=True)
class Line:
    """A line to draw: text, size in points, weight, colour."""

    text: str
    size: float = 8.0
    weight: str = "normal"
    color: str = "#111827"


@dataclass(frozen=True)
class TextBlock:
    """Lines stacked and aligned, ready to blend.

    Attributes:
        width: Block width in pixels.
        height: Block height in pixels.
        items: ``(sprite, x offset, y offset of the mask's top, rgb)`` per line.
    """

    width: int
    height: int
    items: tuple[tuple[Sprite, int, int, tuple[int, int, int]], ...]


class TextSprites:
    """Cache of rasterised lines for one dpi.

    Args:
        dpi: Resolution the sizes in points are rasterised at.
        family: Font family (a bundled font keeps output machine-independent).
    """

    def __init__(self, dpi: float, family: str = "DejaVu Sans") -> None:
        self.dpi = float(dpi)
        self.family = family
        self._cache: dict[tuple[str, float, str], Sprite] = {}
        self._fonts: dict[str, str] = {}

    def sprite(self, text: str, size: float, weight: str = "normal") -> Sprite:
        """The cached :class:`Sprite` of one line of *text*."""
        key = (text, float(size), weight)
        found = self._cache.get(key)
        if found is not None:
            return found
        path = self._fonts.get(weight)
        if path is None:
            path = self._fonts[weight] = findfont(FontProperties(family=self.family, weight=weight))
        font = get_font(path)
        font.clear()
        font.set_size(float(size), self.dpi)
        font.set_text(text, 0.0, flags=get_hinting_flag())
        font.draw_glyphs_to_bitmap(antialiased=True)
        mask = np.array(font.get_image(), dtype=np.uint8)  # a copy: the font's buffer is reused
        # The bitmap's last rows hold the descent; the baseline sits just above them.
        descent = int(round(font.get_descent() / 64.0))
        found = Sprite(mask=mask, baseline=max(mask.shape[0] - descent - 1, 0))
        self._cache[key] = found
        return found

    def block(self, lines: Sequence[Line], *, align: str = "center", linespacing: float = 1.25) -> TextBlock:
        """Stack *lines* (each aligned left/center/right within the block)."""
        items = []
        sprites = [self.sprite(line.text, line.size, line.weight) for line in lines]
        width = max((s.width for s in sprites), default=0)
        baseline = 0.0
        height = 0
        for line, sprite in zip(lines, sprites, strict=True):
            em = line.size * self.dpi / 72.0
            baseline += em * (0.8 if not items else linespacing)
            dx = {"left": 0, "center": (width - sprite.width) // 2, "right": width - sprite.width}[align]
            top = int(round(baseline)) - sprite.baseline
            rgb = tuple(int(round(c * 255)) for c in to_rgb(line.color))
            items.append((sprite, dx, top, rgb))
            height = max(height, top + sprite.mask.shape[0])
        return TextBlock(width=width, height=height, items=tuple(items))

    @staticmethod
    def place(block: TextBlock, x: float, y: float, ha: str = "center", va: str = "center") -> tuple[int, int]:
        """Top-left pixel of *block* anchored at ``(x, y)`` by *ha* / *va*."""
        left = {"left": x, "center": x - block.width / 2, "right": x - block.width}[ha]
        top = {"top": y, "center": y - block.height / 2, "bottom": y - block.height}[va]
        return int(round(left)), int(round(top))

    @staticmethod
    def blend(frame: np.ndarray, block: TextBlock, left: int, top: int) -> None:
        """Blend *block* into ``frame`` (``uint8 (H, W, 3)``, modified in place) at ``(left, top)``."""
        height, width = frame.shape[:2]
        for sprite, dx, dy, rgb in block.items:
            x0, y0 = left + dx, top + dy
            h, w = sprite.mask.shape
            # Clip to the frame.
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + w, width), min(y0 + h, height)
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            mask = sprite.mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0].astype(np.uint16)[..., None]
            region = frame[cy0:cy1, cx0:cx1].astype(np.uint16)
            color = np.asarray(rgb, dtype=np.uint16)
            frame[cy0:cy1, cx0:cx1] = ((region * (255 - mask) + color * mask + 127) // 255).astype(np.uint8)
