"""When colour frames are grey, and their one grey channel.

Grey echo is mostly stored as colour: YBR JPEG in DICOM, yuv420p in MP4. Its channels then agree
to within a few levels (chroma subsampling and rounding); colour Doppler or coloured annotations
differ by tens. Every reader and the batch decide with the same tolerance, on uint8 data in C
(OpenCV on 2-D channel views): numpy reductions over a length-3 last axis are ~20x slower, and
float intermediates cost more than the decoding. (Planar YUV video is decided on its chroma
planes instead, with this tolerance on the spread the conversion would give: `echofm.io.video`.)
"""

from __future__ import annotations

import cv2
import numpy as np

GREY_TOLERANCE = 6  # grey levels: channels agreeing within this are one grey channel


def _planes(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The R, G, B planes of uint8 `[..., H, W, 3]` as 2-D `[... * H, W]` arrays (views when
    `frames` is contiguous), which OpenCV takes as single-channel images of any size."""
    width = frames.shape[-2]
    red, green, blue = (frames[..., c].reshape(-1, width) for c in range(3))
    return red, green, blue


def channel_spread(frames: np.ndarray) -> int:
    """The largest |R - G| or |G - B| over uint8 frames `[..., H, W, 3]`, in grey levels."""
    red, green, blue = _planes(frames)
    return max(int(cv2.absdiff(red, green).max()), int(cv2.absdiff(green, blue).max()))


def channel_mean(frames: np.ndarray) -> np.ndarray:
    """The rounded mean of the channels of uint8 `[..., H, W, 3]` as uint8 `[..., H, W, 1]`:
    (R + G + B + 1) // 3, which is also round((R + G + B) / 3) since a third never ends in .5.

    Per frame in OpenCV: split into contiguous planes, a uint16 sum, then one scaled conversion
    back to uint8 (exact for every sum 0..765, checked in the tests).
    """
    height, width = frames.shape[-3:-1]
    planes = frames.reshape(-1, height, width, 3)
    out = np.empty((len(planes), height, width), np.uint8)
    total = np.empty((height, width), np.uint16)
    for frame, target in zip(planes, out):
        red, green, blue = cv2.split(frame)
        cv2.add(red, green, dst=total, dtype=cv2.CV_16U)
        cv2.add(total, blue, dst=total, dtype=cv2.CV_16U)
        cv2.convertScaleAbs(total, dst=target, alpha=1.0 / 3.0)
    return out.reshape(*frames.shape[:-1], 1)


def is_grey(frames: np.ndarray) -> bool:
    """True for one-channel frames, or three-channel frames within `GREY_TOLERANCE`."""
    return frames.shape[-1] == 1 or channel_spread(frames) <= GREY_TOLERANCE
