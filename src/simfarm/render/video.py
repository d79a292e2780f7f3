"""H.264 MP4 through PyAV: a streaming writer and one-call helpers.

libx264 in ``yuv420p`` plays everywhere (browsers included) but needs even
width and height; odd frames are padded by repeating their last column /
row, never scaled. The rate may be an int, a float or a
:class:`fractions.Fraction` (29.97 fps is ``Fraction(30000, 1001)``); it is
the stream's time base, so every frame lands on an exact timestamp.
Closing the writer flushes the encoder's delayed frames -- an MP4 that was
not flushed silently loses its last frames. Output is byte-identical for
equal frames (x264's MB-tree is off: with it, repeated encodes in one
process were seen to differ).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["Mp4Writer", "encode_mp4", "frame_rate", "write_mp4"]

#: Constant-rate-factor of libx264 (lower is better quality; 18 is visually lossless).
DEFAULT_CRF = 20
#: x264 speed/size trade-off.
DEFAULT_PRESET = "veryfast"


def frame_rate(fps: int | float | Fraction) -> Fraction:
    """*fps* as an exact :class:`~fractions.Fraction` (floats limited to denominators <= 1001).

    Raises:
        ValueError: When *fps* is not a positive finite number.
    """
    if isinstance(fps, bool):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    try:
        rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"fps must be a positive number, got {fps!r}") from None
    if rate <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return rate


def _even_pad(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


class Mp4Writer:
    """Write frames one at a time to an H.264 MP4 (libx264, yuv420p).

    Use as a context manager; the first frame fixes the size::

        with Mp4Writer("out.mp4", fps=30) as video:
            for frame in frames:
                video.write(frame)

    Args:
        target: A path (parent folders are created) or a seekable binary file.
        fps: Frame rate (int, float or Fraction).
        crf: libx264 constant rate factor (0-51).
        preset: libx264 preset (``ultrafast`` ... ``veryslow``).

    Raises:
        ValueError: For a bad fps, crf, or a frame of the wrong shape/size.
    """

    def __init__(self, target: str | Path | IO[bytes], fps: int | float | Fraction, *,
                 crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET) -> None:
        import av  # PyAV is imported only when a video is made

        if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer from 0 to 51, got {crf!r}")
        self.rate = frame_rate(fps)
        if isinstance(target, str | Path):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            target = str(target)
        self._av = av
        self._container = av.open(target, mode="w", format="mp4")
        self._crf = crf
        self._preset = preset
        self._stream: Any = None
        self._size: tuple[int, int] | None = None  # (height, width) as given
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``uint8 (H, W, 3)`` frame (RGBA and grey are accepted).

        Raises:
            ValueError: When the frame's shape differs from the first frame's.
        """
        array = np.asarray(frame)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"a video frame must have shape (H, W, 3), got {array.shape}")
        array = array[..., :3]
        if array.dtype != np.uint8:
            array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
        if self._size is None:
            self._open_stream(array.shape[0], array.shape[1])
        elif array.shape[:2] != self._size:
            raise ValueError(
                f"frame {self.frames_written} is {array.shape[1]}x{array.shape[0]} but the video is "
                f"{self._size[1]}x{self._size[0]}: every frame must have the first frame's size"
            )
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(_even_pad(array)), format="rgb24")
        video_frame.pts = self.frames_written
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def _open_stream(self, height: int, width: int) -> None:
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / self.rate
        # MB-tree rate control made x264 output differ from run to run in
        # the same process (after other native code had run); without it the
        # same frames always give the same bytes, at a small cost in size.
        stream.options = {"crf": str(self._crf), "preset": self._preset, "x264-params": "mbtree=0"}
        self._stream = stream
        self._size = (height, width)

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent).

        Raises:
            ValueError: When no frame was written (an empty MP4 is not playable).
        """
        if self._container is None:
            return
        try:
            if self._stream is None:
                raise ValueError("cannot write an MP4 without frames")
            for packet in self._stream.encode(None):  # drain delayed frames
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        elif self._container is not None:
            self._container.close()
            self._container = None


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: int | float | Fraction, *,
              crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET) -> Path:
    """Encode *frames* to an H.264 MP4 at *path*.

    Args:
        frames: ``uint8 (H, W, 3)`` frames (an array ``(T, H, W, 3)``, a list
            or a generator), all the same size. Odd sizes are padded to even.
        path: Destination ``.mp4`` (parent folders are created).
        fps: Frame rate: int, float or :class:`~fractions.Fraction`.
        crf: libx264 quality (lower is better).
        preset: libx264 speed preset.

    Returns:
        *path* as a :class:`~pathlib.Path`.

    Raises:
        ValueError: No frames, mismatched sizes, or a bad fps/crf.
    """
    out = Path(path)
    with Mp4Writer(out, fps, crf=crf, preset=preset) as video:
        for frame in frames:
            video.write(frame)
    return out


def encode_mp4(frames: Iterable[np.ndarray], fps: int | float | Fraction, *,
               crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET) -> bytes:
    """Like :func:`write_mp4` but returns the file's bytes."""
    buf = io.BytesIO()
    with Mp4Writer(buf, fps, crf=crf, preset=preset) as video:
        for frame in frames:
            video.write(frame)
    return buf.getvalue()
