"""Batched raster drawing on the device: masks over a pixel grid, then a palette.

Frames are drawn as *label images*: each pixel holds a small integer (0 =
background, 1, 2, ... = layers painted later on top), then one gather through
a palette turns labels into RGB. Every helper works on whole batches of
frames at once -- shapes broadcast over a leading frame dimension -- so
drawing 500 frames costs a few dozen tensor operations, not 500 Python
iterations.

Coordinates: world units are mapped to pixels by the caller; helpers take
pixel-space coordinates with ``x`` to the right and ``y`` *down* (row index).
"""

from __future__ import annotations

import torch

__all__ = ["PixelGrid", "disc_mask", "paint", "palette_image", "segment_distance"]


class PixelGrid:
    """Pixel-centre coordinates of an ``height x width`` image.

    Attributes:
        xs: ``(1, 1, width)`` column centres (``0.5, 1.5, ...``).
        ys: ``(1, height, 1)`` row centres.
    """

    def __init__(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> None:
        self.height = int(height)
        self.width = int(width)
        self.xs = (torch.arange(self.width, device=device, dtype=dtype) + 0.5).view(1, 1, -1)
        self.ys = (torch.arange(self.height, device=device, dtype=dtype) + 0.5).view(1, -1, 1)

    def crop(self, rows: slice, cols: slice) -> PixelGrid:
        """The grid of a sub-rectangle, in the full image's coordinates (views, no copy).

        Args:
            rows, cols: Plain ``start:stop`` slices within the image.
        """
        out = object.__new__(PixelGrid)
        out.xs, out.ys = self.xs[..., cols], self.ys[:, rows]
        out.height, out.width = out.ys.shape[1], out.xs.shape[2]
        return out


def disc_mask(grid: PixelGrid, cx: torch.Tensor, cy: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """``bool (k, H, W)``: pixels within ``radius`` of the centres ``(cx, cy)`` (each ``(k,)``)."""
    dx = grid.xs - cx.view(-1, 1, 1)
    dy = grid.ys - cy.view(-1, 1, 1)
    r = radius if isinstance(radius, float | int) else radius.view(-1, 1, 1)
    return dx * dx + dy * dy <= r * r


def segment_distance(
    px: torch.Tensor, py: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor, by: torch.Tensor
) -> torch.Tensor:
    """Distance from points ``(px, py)`` to segments ``a-b``, all broadcast together.

    Zero-length segments give the distance to their single point.
    """
    ex, ey = bx - ax, by - ay
    length_sq = (ex * ex + ey * ey).clamp_min(1e-12)
    t = (((px - ax) * ex + (py - ay) * ey) / length_sq).clamp(0.0, 1.0)
    dx = px - (ax + t * ex)
    dy = py - (ay + t * ey)
    return torch.sqrt(dx * dx + dy * dy)


def paint(labels: torch.Tensor, mask: torch.Tensor, label: int) -> torch.Tensor:
    """``labels`` with ``label`` written where ``mask`` holds (broadcast), as a new tensor."""
    return labels.masked_fill(mask, label)


def palette_image(labels: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """``uint8 (..., 3)``: the palette row of every label (``palette`` is ``(L, 3)`` uint8)."""
    # An embedding lookup is several times faster than advanced indexing here.
    return torch.nn.functional.embedding(labels.long(), palette)
