"""MP4 through PyAV, decoded back with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from simfarm.render.video import Mp4Writer, encode_mp4, frame_rate, write_mp4


def _decode(source) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    with av.open(source) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        info = (stream.codec_context.name, stream.codec_context.pix_fmt, stream.average_rate,
                stream.codec_context.width, stream.codec_context.height)
    return frames, info


def _gradient_frames(n: int, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([(x * 4 + 9 * k) % 256, (y * 4) % 256, np.full_like(x, 128)], -1)
                     for k in range(n)]).astype(np.uint8)


def test_write_mp4_decodes_to_every_frame(tmp_path):
    frames = _gradient_frames(25, 64, 96)
    path = write_mp4(frames, tmp_path / "nested" / "v.mp4", fps=25)
    decoded, (codec, pix_fmt, rate, width, height) = _decode(str(path))
    assert len(decoded) == 25  # the encoder was flushed: no lost tail
    assert (codec, pix_fmt, rate, width, height) == ("h264", "yuv420p", 25, 96, 64)
    error = np.abs(np.stack(decoded).astype(int) - frames.astype(int)).mean()
    assert error < 6  # lossy, but the picture is the picture


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = _gradient_frames(3, 51, 75)
    decoded, info = _decode(io.BytesIO(encode_mp4(frames, fps=10)))
    assert info[3:] == (76, 52)
    assert decoded[0].shape == (52, 76, 3)


@pytest.mark.parametrize("fps, expected", [(30, Fraction(30)), (Fraction(30000, 1001), Fraction(30000, 1001)),
                                           (12.5, Fraction(25, 2))])
def test_integer_fraction_and_float_rates(fps, expected):
    frames = _gradient_frames(4, 32, 32)
    decoded, info = _decode(io.BytesIO(encode_mp4(iter(frames), fps=fps)))  # a generator works too
    assert len(decoded) == 4
    assert Fraction(info[2]) == expected


def test_same_frames_same_bytes_even_between_other_work():
    # x264's MB-tree made encodes differ after other native code had run in
    # the process; interleave matplotlib rendering to catch a regression.
    from simfarm.render.curves import render_curves, training_curves
    from simfarm.render.samples import sample_iterations, sample_trace

    frames = sample_trace(0, n_frames=16, height=120, width=160).frames
    first = encode_mp4(frames, 30)
    for _ in range(6):
        render_curves(training_curves(sample_iterations(1, 8)))
        assert encode_mp4(frames, 30) == first


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="without frames"):
        encode_mp4([], fps=10)
    with pytest.raises(ValueError, match="first frame's size"):
        encode_mp4([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], fps=10)
    with pytest.raises(ValueError, match="shape"):
        with Mp4Writer(io.BytesIO(), fps=10) as video:
            video.write(np.zeros((2, 8, 8, 3), np.uint8))
    for bad in (0, -5, True, "fast"):
        with pytest.raises(ValueError, match="fps"):
            frame_rate(bad)
    with pytest.raises(ValueError, match="crf"):
        Mp4Writer(tmp_path / "x.mp4", fps=10, crf=99)
