"""Videos of the agent: frames to a GIF or an MP4 file (imageio), or to GIF bytes.

Frames are uint8 ``[H, W, 3]``; small ones (MinAtar's 10 x 10 board) are enlarged by
whole pixels until the longer side is at least :data:`MIN_SIDE`, and an odd side is
padded by one black row or column (H.264 needs even sides).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from impala_frodo.config.checks import ConfigError

#: Video formats, by file suffix.
VIDEO_FORMATS = (".gif", ".mp4")
#: The longer side of a frame is enlarged to at least this many pixels.
MIN_SIDE = 240


def video_format(path: str | Path) -> str:
    """``.gif`` or ``.mp4``, from the suffix; :class:`ConfigError` for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise ConfigError(
            f"cannot write a video to {str(path)!r}: name it .gif or .mp4 (the format)"
        )
    return suffix


def prepare_frames(frames: Sequence[np.ndarray]) -> np.ndarray:
    """``[N, H, W, 3]`` uint8: the frames enlarged to :data:`MIN_SIDE` and padded to even."""
    if not frames:
        raise ValueError("a video needs at least one frame")
    video = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    scale = max(1, -(-MIN_SIDE // max(video.shape[1:3])))
    if scale > 1:
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if pad_h or pad_w:
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    return video


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int) -> Path:
    """Write ``frames`` to ``path`` as a looping GIF or an H.264 MP4 (by the suffix)."""
    import imageio.v3 as iio

    path = Path(path)
    kind = video_format(path)
    video = prepare_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".gif":
        iio.imwrite(path, video, extension=".gif", duration=1000 / fps, loop=0)
    else:
        iio.imwrite(path, video, extension=".mp4", plugin="FFMPEG", fps=fps, macro_block_size=2)
    return path


def gif_bytes(frames: Sequence[np.ndarray], fps: int) -> tuple[bytes, tuple[int, int]]:
    """A looping GIF of ``frames`` in memory, and its ``(height, width)``."""
    import imageio.v3 as iio

    video = prepare_frames(frames)
    buffer = io.BytesIO()
    iio.imwrite(buffer, video, extension=".gif", duration=1000 / fps, loop=0)
    return buffer.getvalue(), (int(video.shape[1]), int(video.shape[2]))
