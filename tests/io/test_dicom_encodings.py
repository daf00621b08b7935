"""Every transfer syntax and photometric interpretation the reader supports, on generated files
with a known pattern: the decoded colours and the frame order must come back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import uid

from echofm.io import FrameOutOfRange, read_dicom, scan_dicom
from tests.factories import dicom as F

N_FRAMES = 10
# Sample points well inside each flat quadrant (rows, cols of the 48 x 64 pattern).
QUADRANTS = {"red": (12, 10), "green": (12, 50), "blue": (38, 10), "grey": (38, 50)}
EXPECTED = {"red": F.RED, "green": F.GREEN, "blue": F.BLUE, "grey": F.GREY}

Maker = Callable[[Path], Path]


def _native(transfer_syntax: str = uid.ExplicitVRLittleEndian, **kwargs: object) -> Maker:
    return lambda p: F.native_file(
        p, F.colour_frames(N_FRAMES), photometric="RGB", transfer_syntax=transfer_syntax, **kwargs
    )


def _compressed(
    transfer_syntax: str, frames: Callable[[int], np.ndarray] = F.colour_frames, **kwargs: object
) -> Maker:
    photometric = "RGB" if frames is F.colour_frames else "MONOCHROME2"
    return lambda p: F.compressed_file(
        p, frames(N_FRAMES), photometric=photometric, transfer_syntax=transfer_syntax, **kwargs
    )


COLOUR_CASES: dict[str, tuple[Maker, int]] = {
    # name: (writer, tolerance in grey levels)
    "explicit_le_rgb": (_native(), 0),
    "implicit_le_rgb": (_native(uid.ImplicitVRLittleEndian), 0),
    "explicit_be_rgb": (_native(uid.ExplicitVRBigEndian), 0),
    "deflated_le_rgb": (_native(uid.DeflatedExplicitVRLittleEndian), 0),
    "rgb_planar_1": (_native(planar_configuration=1), 0),
    "ybr_full_native": (lambda p: F.ybr_full_file(p, F.colour_frames(N_FRAMES)), 2),
    "ybr_full_422_native": (lambda p: F.ybr_full_422_native_file(p, F.colour_frames(N_FRAMES)), 2),
    "jpeg_baseline_ybr_full_422": (lambda p: F.jpeg_baseline_file(p, F.colour_frames(N_FRAMES)), 4),
    "jpeg_baseline_no_offset_table": (lambda p: F.jpeg_baseline_file(p, F.colour_frames(N_FRAMES), has_bot=False), 4),
    "jpeg_baseline_3_fragments_per_frame": (
        lambda p: F.jpeg_baseline_file(p, F.colour_frames(N_FRAMES), fragments_per_frame=3),
        4,
    ),
    "rle_rgb": (_compressed(uid.RLELossless), 0),
    "jpeg_ls_lossless_rgb": (_compressed(uid.JPEGLSLossless), 0),
    "jpeg_ls_near_lossless_rgb": (_compressed(uid.JPEGLSNearLossless, jls_error=3), 3),
    "jpeg2000_lossless_rct": (_compressed(uid.JPEG2000Lossless), 0),
    "jpeg2000_lossy_ict": (_compressed(uid.JPEG2000, j2k_cr=[10]), 4),
}


def _band_levels(frames: np.ndarray) -> list[int]:
    """The frame-index band level (20 * source index) of each returned frame."""
    return [int(v) for v in frames[:, 2, 30:34, 0].mean(axis=-1).round()]


@pytest.mark.parametrize("name", list(COLOUR_CASES))
def test_colour_encodings_decode_to_the_written_rgb(tmp_path: Path, name: str) -> None:
    # Converting YBR->RGB twice turns the red quadrant green (200,40,40 -> 77,255,44); leaving YBR
    # unconverted turns it blue (88,101,208): the quadrant checks catch both.
    make, tolerance = COLOUR_CASES[name]
    path = make(tmp_path / f"{name}.dcm")
    clip = read_dicom(path)
    assert clip.frames.shape == (N_FRAMES, F.H, F.W, 3)
    assert clip.frames.dtype == np.uint8
    for quadrant, (row, col) in QUADRANTS.items():
        got = clip.frames[:, row, col].astype(int)
        want = np.array(EXPECTED[quadrant])
        assert np.abs(got - want).max() <= tolerance, f"{name} {quadrant}: {got[0]} != {want}"
    levels = _band_levels(clip.frames)
    assert all(abs(level - 20 * t) <= tolerance for t, level in enumerate(levels)), levels
    assert clip.fps == pytest.approx(25.0) and clip.fps_source == "FrameTime"


@pytest.mark.parametrize(
    "name",
    [
        "explicit_le_rgb",
        "explicit_be_rgb",
        "deflated_le_rgb",
        "ybr_full_422_native",
        "jpeg_baseline_ybr_full_422",
        "jpeg_baseline_no_offset_table",
        "jpeg_baseline_3_fragments_per_frame",
        "rle_rgb",
        "jpeg_ls_lossless_rgb",
        "jpeg2000_lossless_rct",
    ],
)
def test_frame_subset_returns_exactly_those_frames(tmp_path: Path, name: str) -> None:
    make, tolerance = COLOUR_CASES[name]
    path = make(tmp_path / f"{name}.dcm")
    clip = read_dicom(path, frames=[0, 5, 9])
    assert clip.frames.shape[0] == 3
    assert clip.frame_indices.tolist() == [0, 5, 9]
    assert clip.n_frames_source == N_FRAMES
    assert all(abs(a - b) <= tolerance for a, b in zip(_band_levels(clip.frames), [0, 100, 180], strict=True))
    # Any order, duplicates allowed: the clip follows the request.
    again = read_dicom(path, frames=[9, 0, 9])
    assert again.frame_indices.tolist() == [9, 0, 9]
    assert np.array_equal(again.frames[0], again.frames[2])
    assert np.array_equal(again.frames[0], clip.frames[2])
    assert clip.timestamps_ms.tolist() == pytest.approx([0.0, 200.0, 360.0])


def test_frame_index_out_of_range_is_a_caller_error(tmp_path: Path) -> None:
    path = F.native_file(tmp_path / "a.dcm", F.colour_frames(3), photometric="RGB")
    with pytest.raises(FrameOutOfRange, match="outside") as info:
        read_dicom(path, frames=[0, 3])
    # The message names no file (PACS paths carry identity); `.path` has it for the caller.
    assert info.value.path == path and str(tmp_path) not in str(info.value)


GREY_CASES: dict[str, tuple[Maker, Callable[[np.ndarray], np.ndarray], int]] = {
    # name: (writer, expected uint8 from the written 8-bit pattern, tolerance)
    "monochrome2": (lambda p: F.native_file(p, F.grey_frames(N_FRAMES), photometric="MONOCHROME2"), lambda g: g, 0),
    "monochrome1_inverted": (
        lambda p: F.native_file(p, F.grey_frames(N_FRAMES), photometric="MONOCHROME1"),
        lambda g: 255 - g,
        0,
    ),
    # 12 bits stored in 16, big endian: scaled by 255 / 4095, so 16 * v maps to v within 1.
    "monochrome2_12bit_big_endian": (
        lambda p: F.native_file(
            p,
            F.grey_frames(N_FRAMES).astype(np.uint16) * 16,
            photometric="MONOCHROME2",
            bits_stored=12,
            transfer_syntax=uid.ExplicitVRBigEndian,
        ),
        lambda g: g,
        1,
    ),
    "monochrome2_jpeg_baseline": (lambda p: F.jpeg_baseline_file(p, F.grey_frames(N_FRAMES)), lambda g: g, 3),
    "monochrome2_rle": (_compressed(uid.RLELossless, F.grey_frames), lambda g: g, 0),
    "monochrome2_jpeg_ls": (_compressed(uid.JPEGLSLossless, F.grey_frames), lambda g: g, 0),
    "monochrome2_jpeg2000": (_compressed(uid.JPEG2000Lossless, F.grey_frames), lambda g: g, 0),
}


@pytest.mark.parametrize("name", list(GREY_CASES))
def test_grey_encodings_decode_to_one_channel(tmp_path: Path, name: str) -> None:
    make, expected, tolerance = GREY_CASES[name]
    clip = read_dicom(make(tmp_path / f"{name}.dcm"))
    assert clip.frames.shape == (N_FRAMES, F.H, F.W, 1)
    want = expected(F.grey_frames(N_FRAMES)).astype(int)
    assert np.abs(clip.frames[..., 0].astype(int) - want).max() <= tolerance


@pytest.mark.parametrize("scale", [257, 1])
def test_palette_colour_goes_through_the_lut(tmp_path: Path, scale: int) -> None:
    indices = F.grey_frames(N_FRAMES)  # 60 (orange ramp) on the left, 180 (cyan ramp) on the right
    clip = read_dicom(F.palette_file(tmp_path / "palette.dcm", indices, scale=scale))
    assert clip.frames.shape == (N_FRAMES, F.H, F.W, 3)
    red, green, blue = F.palette_tables()
    assert clip.frames[0, 30, 10].tolist() == [red[60] // 257, green[60] // 257, blue[60] // 257] == [120, 60, 0]
    assert clip.frames[0, 30, 50].tolist() == [0, 104, 104]


def test_scan_reads_header_without_pixels(tmp_path: Path) -> None:
    path = F.jpeg_baseline_file(tmp_path / "jpeg.dcm", F.colour_frames(N_FRAMES))
    header = scan_dicom(path)
    assert (header.rows, header.columns, header.n_frames) == (F.H, F.W, N_FRAMES)
    assert header.transfer_syntax == uid.JPEGBaseline8Bit
    assert header.photometric == "YBR_FULL_422" and header.channels == 3
    assert header.fps == pytest.approx(25.0) and header.fps_source == "FrameTime"
    assert header.meta["container"] == "dicom" and header.meta["modality"] == "US"
    assert header.pseudonyms == {}
