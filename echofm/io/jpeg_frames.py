"""JPEG frames of encapsulated DICOM pixel data, decoded by libjpeg-turbo straight to grey or RGB.

pydicom decodes a JPEG Baseline YBR frame to raw YCbCr and converts it to RGB in numpy, which is
two thirds of its decode time; grey echo (almost every B-mode cine) then needs only the luma.
Here each kept frame's bytes are read from the file at the offsets of the encapsulated items and
handed to libjpeg-turbo (through OpenCV's `imdecode`, which every ingestion worker loads anyway),
which writes the output colour model itself:

- grey (MONOCHROME1/2, or YBR content whose sampled frames have neutral chroma): Y only, the
  colour planes are never converted. Grey vs colour is decided once per cine, from a few of the
  wanted frames decoded at 1/4 scale in the DCT domain, with the same channel tolerance that
  turns balanced colour frames grey after decoding (`GREY_TOLERANCE`). For neutral chroma the
  result equals pydicom's RGB channels exactly (R = G = B = Y), so the ingested clips are
  bit-identical to those of the pydicom path.
- colour (YBR with colour in it): RGB by libjpeg's own YCbCr conversion (fixed point, +-1 level
  from pydicom's floating-point formula).

Only JPEG Baseline and 8-bit JPEG Extended frames with YBR_FULL, YBR_FULL_422 or MONOCHROME
photometric interpretations, one frame per fragment or a basic offset table, take this path;
everything else (RGB-labelled JPEG, whose components pydicom takes as stored, other syntaxes,
fragment layouts that need a JPEG parser) returns None and is decoded by pydicom.

`min_side` asks for DCT-domain downscaling (1/2, 1/4, 1/8 while the longer side stays >=
`min_side` pixels): decoding at half scale costs about half. It changes the pixels (see
docs/benchmarks.md, `--fast-decode`), so ingestion uses it only when asked.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO, Protocol

import cv2
import numpy as np
from pydicom import uid

from echofm.io.errors import CorruptPixelData
from echofm.io.grey import GREY_TOLERANCE, channel_spread

if TYPE_CHECKING:
    from pathlib import Path

# Syntaxes whose frames libjpeg-turbo decodes here (JPEG Extended only with 8-bit samples).
FAST_SYNTAXES: frozenset[str] = frozenset({uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit})
GREY_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2"})
YBR_PHOTOMETRIC = frozenset({"YBR_FULL", "YBR_FULL_422"})
COLOUR_SAMPLE_FRAMES = 3  # frames of a cine the grey/colour decision looks at
COLOUR_SAMPLE_SCALE = 4  # ... decoded at this DCT-domain reduction
_SCALES = (8, 4, 2)
_NO_EXIF = cv2.IMREAD_IGNORE_ORIENTATION  # DICOM frames carry no orientation to apply
_GREY_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
# IMREAD_REDUCED_COLOR_n is IMREAD_COLOR (1) plus a reduction bit; with IMREAD_COLOR_RGB in place
# of IMREAD_COLOR libjpeg-turbo writes RGB itself.
_RGB_FLAGS = {scale: (flag & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB for scale, flag in {
    1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8,
}.items()}
_ITEM_TAG = 0xFFFEE000
_SEQUENCE_END_TAG = 0xFFFEE0DD

# (offset, length) in the file of each fragment of one frame.
FrameFragments = tuple[tuple[int, int], ...]


class PixelLayout(Protocol):
    """What this module reads of a DICOM header (`echofm.io.dicom.DicomHeader` has it all; a
    protocol rather than that class so the DICOM reader can import this module, not the reverse).
    pixel_offset: byte offset of the Pixel Data value in the file (None: not readable in place)."""

    transfer_syntax: str
    photometric: str
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    rows: int
    columns: int
    n_frames: int
    pixel_offset: int | None


def handles(header: PixelLayout) -> bool:
    """True when this module decodes the frames of `header`'s file (see the module docstring)."""
    return (
        header.transfer_syntax in FAST_SYNTAXES
        and header.bits_allocated == 8
        and header.bits_stored == 8
        and not header.signed
        and header.pixel_offset is not None
        and (header.photometric in GREY_PHOTOMETRIC or (header.photometric in YBR_PHOTOMETRIC and header.samples_per_pixel == 3))
    )


def downscale_factor(rows: int, columns: int, min_side: int | None) -> int:
    """The largest DCT-domain reduction (1, 2, 4 or 8) that keeps the longer side >= `min_side`."""
    if min_side is None:
        return 1
    longer = max(rows, columns)
    return next((scale for scale in _SCALES if -(-longer // scale) >= min_side), 1)


def frame_table(fh: BinaryIO, pixel_offset: int, n_frames: int) -> list[FrameFragments] | None:
    """Where each frame's bytes lie: one tuple of (offset, length) fragments per frame.

    Reads only the item headers (8 bytes each, seeking over the data). None when the layout
    cannot be split into frames without parsing JPEG markers: more fragments than frames and no
    basic offset table (pydicom handles those).
    Raises `ValueError` for items that do not form valid encapsulated pixel data.
    """
    fh.seek(pixel_offset)
    tag, length = _item_header(fh)
    if tag != _ITEM_TAG:
        raise ValueError("encapsulated pixel data does not start with the basic offset table item")
    offsets = struct.unpack(f"<{length // 4}L", fh.read(length - length % 4)) if length else ()
    first_item = fh.tell()
    fragments: list[tuple[int, int, int]] = []  # (offset from the first item, data offset, length)
    while True:
        position = fh.tell()
        header = fh.read(8)
        if len(header) < 8:
            break  # no sequence delimiter: a truncated file ends the items
        tag, length = struct.unpack("<LL", header)
        tag = (tag & 0xFFFF) << 16 | tag >> 16  # group first: the tag is two little-endian uint16
        if tag == _SEQUENCE_END_TAG:
            break
        if tag != _ITEM_TAG or length == 0xFFFFFFFF:
            raise ValueError("a pixel data fragment is not a defined-length item")
        fragments.append((position - first_item, fh.tell(), length))
        fh.seek(length, 1)
    if len(fragments) == n_frames:
        return [((data, length),) for _, data, length in fragments]
    if len(offsets) == n_frames and n_frames > 0:
        bounds = [*offsets, float("inf")]
        return [
            tuple((data, length) for relative, data, length in fragments if bounds[i] <= relative < bounds[i + 1])
            for i in range(n_frames)
        ]
    if n_frames == 1 and fragments:
        return [tuple((data, length) for _, data, length in fragments)]
    return None


def _item_header(fh: BinaryIO) -> tuple[int, int]:
    raw = fh.read(8)
    if len(raw) < 8:
        raise ValueError("encapsulated pixel data ends inside an item header")
    tag, length = struct.unpack("<LL", raw)
    return (tag & 0xFFFF) << 16 | tag >> 16, length


def _frame_bytes(fh: BinaryIO, fragments: FrameFragments) -> np.ndarray:
    parts = []
    for offset, length in fragments:
        fh.seek(offset)
        parts.append(fh.read(length))
    return np.frombuffer(parts[0] if len(parts) == 1 else b"".join(parts), dtype=np.uint8)


def content_is_grey(encoded: Sequence[np.ndarray]) -> bool:
    """True when every sampled frame (JPEG bytes), decoded to RGB at 1/`COLOUR_SAMPLE_SCALE`
    scale, has all channels within `GREY_TOLERANCE` of each other. A frame that does not decode
    counts as colour, so the full decode reports it."""
    for data in encoded:
        rgb = cv2.imdecode(data, _RGB_FLAGS[COLOUR_SAMPLE_SCALE] | _NO_EXIF)
        if rgb is None:
            return False
        if channel_spread(rgb) > GREY_TOLERANCE:
            return False
    return True


def _sample(indices: Sequence[int]) -> list[int]:
    """Up to `COLOUR_SAMPLE_FRAMES` positions spread over `indices` (first, middle, last)."""
    count = min(len(indices), COLOUR_SAMPLE_FRAMES)
    return sorted({round(k * (len(indices) - 1) / max(count - 1, 1)) for k in range(count)})


def decode_jpeg_frames(
    fh: BinaryIO, path: Path, header: PixelLayout, indices: Sequence[int], *, min_side: int | None = None
) -> np.ndarray | None:
    """Decode frames `indices` (sorted, unique) of a file `handles` accepts: uint8 `[K, H', W', C]`
    with C = 1 for grey content, 3 (RGB) for colour; H', W' = rows, columns / the
    `downscale_factor` for `min_side` (rounded up). None when the fragment layout needs pydicom.

    Raises `CorruptPixelData` for items that do not parse, a frame that does not decode, or a
    frame whose size differs from the header's.
    """
    assert header.pixel_offset is not None
    try:
        table = frame_table(fh, header.pixel_offset, header.n_frames)
    except (ValueError, struct.error) as exc:
        raise CorruptPixelData(path, f"encapsulated pixel data does not parse ({exc})") from exc
    if table is None:
        return None
    if any(not table[i] for i in indices):
        raise CorruptPixelData(path, "a frame has no fragment in the encapsulated pixel data")
    scale = downscale_factor(header.rows, header.columns, min_side)
    size = (-(-header.rows // scale), -(-header.columns // scale))
    encoded = [_frame_bytes(fh, table[i]) for i in indices]
    grey = header.photometric in GREY_PHOTOMETRIC or content_is_grey([encoded[k] for k in _sample(indices)])
    flags = (_GREY_FLAGS if grey else _RGB_FLAGS)[scale] | _NO_EXIF
    out = np.empty((len(indices), *size, 1 if grey else 3), dtype=np.uint8)
    for k, data in enumerate(encoded):
        frame = cv2.imdecode(data, flags)
        if frame is None:
            raise CorruptPixelData(path, f"JPEG frame {indices[k]} does not decode")
        if frame.shape[:2] != size:
            raise CorruptPixelData(path, f"JPEG frame {indices[k]} is {frame.shape[1]} x {frame.shape[0]}, the header says {size[1]} x {size[0]}")
        out[k] = frame.reshape(out.shape[1:])
    if header.photometric == "MONOCHROME1":
        np.subtract(255, out, out=out)  # 0 is white in MONOCHROME1
    return out
