"""One shared 256-colour palette for a whole animation, and the mapping to it.

GIF frames are palette images. Pillow's default turns each RGB frame into
its own adaptive palette (a median cut per frame), which is the slowest part
of saving a GIF and makes colours flicker between frames. Here the palette
is chosen once per animation:

- exact: when the frames use at most 256 distinct colours (rendered
  environments usually do), every colour keeps its value -- lossless;
- quantised: otherwise a median cut over a sample of frames gives 256
  colours, and every pixel maps to its nearest palette colour through a
  lookup table over 6-bit-per-channel colour bins (computed only for the
  bins that occur).

Both paths are vectorised numpy over all frames at once, and deterministic.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["Palettised", "palettise"]

_MAX_COLORS = 256
_SAMPLE_PIXELS = 1 << 18  # pixels fed to the median cut (a mosaic of frames)
_CHUNK_PIXELS = 1 << 20  # pixels per vectorised pass: temporaries stay cache-sized
_MISSING = 0xFFFF


class Palettised:
    """Frames as palette indices.

    Attributes:
        indices: ``uint8 (T, H, W)`` palette index per pixel.
        palette: ``uint8 (K, 3)`` colours, ``K <= 256``.
        exact: Whether every pixel kept its exact colour.
    """

    __slots__ = ("indices", "palette", "exact")

    def __init__(self, indices: np.ndarray, palette: np.ndarray, exact: bool) -> None:
        self.indices = indices
        self.palette = palette
        self.exact = exact

    def palette_bytes(self) -> bytes:
        """The palette as ``3 * K`` bytes (RGB triples).

        Kept at its real size rather than padded to 256 entries: a GIF
        colour table is stored with every delta frame, so a short palette
        keeps small animations small.
        """
        return self.palette.astype(np.uint8).tobytes()


def _pack(frames: np.ndarray) -> np.ndarray:
    """RGB ``uint8 (..., 3)`` -> ``uint32`` 0xRRGGBB, one per pixel."""
    return (
        (frames[..., 0].astype(np.uint32) << 16)
        | (frames[..., 1].astype(np.uint32) << 8)
        | frames[..., 2].astype(np.uint32)
    )


def _bins(frames: np.ndarray) -> np.ndarray:
    """RGB -> 6-bit-per-channel colour bin (0 .. 2**18 - 1), one per pixel."""
    return (
        ((frames[..., 0].astype(np.uint32) >> 2) << 12)
        | ((frames[..., 1].astype(np.uint32) >> 2) << 6)
        | (frames[..., 2].astype(np.uint32) >> 2)
    )


def _chunks(frames: np.ndarray) -> list[slice]:
    """Frame ranges of about :data:`_CHUNK_PIXELS` pixels: bounded temporaries."""
    per_frame = max(1, frames.shape[1] * frames.shape[2])
    step = max(1, _CHUNK_PIXELS // per_frame)
    return [slice(s, s + step) for s in range(0, frames.shape[0], step)]


def _sample(frames: np.ndarray) -> np.ndarray:
    """Up to about :data:`_SAMPLE_PIXELS` pixels ``(N, 3)`` spread over all frames."""
    flat = frames.reshape(-1, 3)
    step = max(1, len(flat) // _SAMPLE_PIXELS)
    return flat[::step]


def _exact(frames: np.ndarray) -> Palettised | None:
    """Lossless palette when the frames have <= 256 colours, else None."""
    colors = np.unique(_pack(_sample(frames)))
    if len(colors) > _MAX_COLORS:
        return None  # rich images bail out after looking at a sample only
    # Dense table colour -> index; _MISSING marks colours the sample lacked.
    lut = np.full(1 << 24, _MISSING, dtype=np.uint16)
    lut[colors] = np.arange(len(colors), dtype=np.uint16)
    out = np.empty(frames.shape[:3], dtype=np.uint8)
    for part in _chunks(frames):
        packed = _pack(frames[part])
        idx = lut[packed]
        missing = idx == _MISSING
        if missing.any():
            extra = np.unique(packed[missing])
            if len(colors) + len(extra) > _MAX_COLORS:
                return None
            lut[extra] = np.arange(len(colors), len(colors) + len(extra), dtype=np.uint16)
            colors = np.concatenate([colors, extra])
            idx = lut[packed]
        out[part] = idx
    palette = np.stack([(colors >> 16) & 255, (colors >> 8) & 255, colors & 255], axis=1).astype(np.uint8)
    return Palettised(out, palette, exact=True)


def _median_cut(frames: np.ndarray) -> np.ndarray:
    sample = _sample(frames)
    side = int(np.ceil(np.sqrt(len(sample))))
    mosaic = np.empty((side * side, 3), dtype=np.uint8)
    mosaic[: len(sample)] = sample
    mosaic[len(sample):] = sample[-1]  # padding repeats a real colour
    image = Image.fromarray(mosaic.reshape(side, side, 3))
    quantised = image.quantize(colors=_MAX_COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = np.asarray(quantised.getpalette()[: 3 * _MAX_COLORS], dtype=np.uint8).reshape(-1, 3)
    used = np.unique(np.asarray(quantised))
    return palette[used]


def _nearest(bins: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for the centre of each 6-bit bin.

    Integer arithmetic in doubled units (centre = 4 * bin + 1.5): exact, so
    ties break the same way on every machine. Written as three broadcast
    products rather than a matrix product, which would go to a BLAS that
    may spin up threads for this small job.
    """
    centres = np.stack([(bins >> 12) & 63, (bins >> 6) & 63, bins & 63], axis=1).astype(np.int32) * 8 + 3
    pal = palette.astype(np.int32) * 2
    pal_norm = (pal * pal).sum(axis=1)
    out = np.empty(len(bins), dtype=np.uint8)
    for start in range(0, len(bins), 8192):  # bounded memory: 8k x 256 distances at a time
        c = centres[start:start + 8192]
        # |c - p|^2 = |c|^2 - 2 c.p + |p|^2, and |c|^2 does not change the argmin.
        dot = c[:, 0:1] * pal[:, 0] + c[:, 1:2] * pal[:, 1] + c[:, 2:3] * pal[:, 2]
        out[start:start + 8192] = np.argmin(pal_norm[None, :] - 2 * dot, axis=1)
    return out


def _quantised(frames: np.ndarray) -> Palettised:
    palette = _median_cut(frames)
    # Bin -> palette index, filled in for the bins each chunk brings.
    lut = np.zeros(1 << 18, dtype=np.uint8)
    known = np.zeros(1 << 18, dtype=bool)
    out = np.empty(frames.shape[:3], dtype=np.uint8)
    for part in _chunks(frames):
        bins = _bins(frames[part])
        new = bins[~known[bins]]
        if new.size:
            new = np.unique(new)
            lut[new] = _nearest(new, palette)
            known[new] = True
        out[part] = lut[bins]
    return Palettised(out, palette, exact=False)


def palettise(frames: np.ndarray) -> Palettised:
    """Map RGB frames onto one shared palette (exact when possible).

    Args:
        frames: ``uint8 (T, H, W, 3)``.

    Returns:
        The :class:`Palettised` frames.

    Raises:
        ValueError: When *frames* is not a non-empty ``(T, H, W, 3)`` uint8 array.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ValueError(
            f"frames must be a non-empty uint8 array of shape (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    return _exact(frames) or _quantised(frames)
