"""Matplotlib plumbing shared by every renderer: Agg figures, pixels, files.

Everything here works on :class:`matplotlib.figure.Figure` with an explicit
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, never on pyplot:
no global figure registry to leak into, no dependence on the session's
interactive backend, and the same pixels in a test, a render actor or a
notebook.

Determinism: :data:`RC` pins the font family and the SVG hash salt so the
same input gives the same bytes on every run (matplotlib otherwise stamps a
date into SVG metadata and salts element ids randomly).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "RC",
    "CELL_COLORS",
    "arm_colors",
    "cell_colors",
    "figure_bytes",
    "figure_rgb",
    "new_figure",
    "series_colors",
    "style",
]

#: rcParams applied while we draw: a bundled font (same glyphs on every
#: machine), a fixed SVG salt and no SVG date (byte-identical output).
RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "svg.hashsalt": "simfarm",
    "svg.fonttype": "path",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.8,
    "axes.edgecolor": "#9ca3af",
    "axes.titleweight": "bold",
    "axes.titlesize": 10.0,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}

#: Colours of experiment cells by policy kind (control grey, explore blue,
#: optimized amber); other kinds cycle through :data:`_EXTRA_COLORS`.
CELL_COLORS: dict[str, str] = {"baseline": "#9ca3af", "uniform": "#60a5fa", "tree": "#f59e0b"}
_EXTRA_COLORS = ("#a78bfa", "#34d399", "#f472b6", "#fb7185", "#22d3ee", "#a3e635")
# Colour-blind-safe qualitative palette (Okabe-Ito without black).
_SERIES = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#999999")


@contextmanager
def style() -> Iterator[None]:
    """Context in which matplotlib draws with :data:`RC` (restored on exit)."""
    with matplotlib.rc_context(RC):
        yield


def new_figure(width_in: float, height_in: float, dpi: float = 100.0) -> tuple[Figure, FigureCanvasAgg]:
    """A white figure of the given size with its own Agg canvas.

    Args:
        width_in: Width in inches (pixels = inches x dpi).
        height_in: Height in inches.
        dpi: Dots per inch.

    Returns:
        ``(figure, canvas)``; draw with ``canvas.draw()``.
    """
    fig = Figure(figsize=(float(width_in), float(height_in)), dpi=float(dpi))
    canvas = FigureCanvasAgg(fig)
    return fig, canvas


def figure_rgb(canvas: FigureCanvasAgg) -> np.ndarray:
    """The canvas's current pixels as a new ``uint8`` array ``(H, W, 3)``.

    The canvas must have been drawn (``canvas.draw()`` or blitting) first.
    """
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3])


def figure_bytes(fig: Figure, fmt: str, *, dpi: float | None = None) -> bytes:
    """Serialise *fig* as ``png`` or ``svg`` bytes, deterministically.

    Raises:
        ValueError: When *fmt* is neither ``png`` nor ``svg``.
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"figure format must be 'png' or 'svg', got {fmt!r}")
    buf = io.BytesIO()
    # Dates and software stamps would make reruns differ byte for byte.
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {"Software": None}
    with style():
        fig.savefig(buf, format=fmt, dpi=dpi or fig.dpi, metadata=metadata)
    return buf.getvalue()


def series_colors(n: int) -> list[str]:
    """*n* distinct line colours (cycling after eight)."""
    return [_SERIES[i % len(_SERIES)] for i in range(n)]


def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    """A stable colour per arm: the first arm (control) grey, the others from the series palette."""
    colors: dict[str, str] = {}
    palette = iter(series_colors(max(len(arms), 1) + 1))
    for i, arm in enumerate(arms):
        colors[arm] = "#9ca3af" if i == 0 else next(palette)
    return colors


def cell_colors(cells: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A colour per cell id, from ``(id, policy kind)`` pairs in first-seen order."""
    colors: dict[str, str] = {}
    extra = 0
    for cell_id, kind in cells:
        if cell_id in colors:
            continue
        if kind in CELL_COLORS and CELL_COLORS[kind] not in colors.values():
            colors[cell_id] = CELL_COLORS[kind]
        else:
            colors[cell_id] = _EXTRA_COLORS[extra % len(_EXTRA_COLORS)]
            extra += 1
    return colors
