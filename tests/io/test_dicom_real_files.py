"""Real ultrasound DICOMs that nobody here made: the vendor files shipped inside pydicom.

All of these are in the pydicom wheel itself (pydicom/data/test_files), so they are available
offline; `get_testdata_file` would return None for a file that must be downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut

from echofm.io import read_dicom, scan_dicom


def _shipped(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not shipped with the installed pydicom"
    return Path(path)


def test_sonosite_cardiac_cine_30_frames_at_30_fps_without_colour_cast() -> None:
    path = _shipped("examples_ybr_color.dcm")  # SonoSite, JPEG Baseline, YBR_FULL_422
    header = scan_dicom(path)
    assert header.meta["manufacturer"] == "SonoSite"
    assert header.photometric == "YBR_FULL_422"
    clip = read_dicom(path)
    assert clip.frames.shape == (30, 240, 320, 3)
    assert clip.fps == pytest.approx(30.0, abs=0.01) and clip.fps_source == "FrameTime"
    assert len(clip.regions) >= 1
    # A grey B-mode image: channels must agree on average. A double YBR->RGB conversion shifts
    # G by tens of levels (the classic green cast).
    means = clip.frames.reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert np.abs(means[1] - means[[0, 2]].mean()) < 1.0, means
    bright = clip.frames.max(axis=-1) > 60
    per_pixel = np.abs(clip.frames[bright].astype(int)[:, 1] - clip.frames[bright].astype(int)[:, [0, 2]].mean(axis=1))
    assert per_pixel.mean() < 4.0


def test_sonosite_frame_subset_matches_full_decode() -> None:
    path = _shipped("examples_ybr_color.dcm")
    full = read_dicom(path)
    subset = read_dicom(path, frames=[0, 5, 9])
    assert subset.frame_indices.tolist() == [0, 5, 9]
    assert np.array_equal(subset.frames, full.frames[[0, 5, 9]])


def test_philips_palette_colour_matches_the_lut() -> None:
    path = _shipped("examples_palette.dcm")  # Philips CX50, PALETTE COLOR, 16-bit LUT entries
    clip = read_dicom(path)
    assert clip.frames.shape == (1, 350, 800, 3)
    ds = dcmread(path)
    reference = apply_color_lut(ds.pixel_array, ds)  # 16-bit RGB
    assert np.array_equal(clip.frames[0], (reference >> 8).astype(np.uint8))
    # The Philips map tints grey towards blue: a colour image, not a copied grey channel.
    means = clip.frames.reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert means[2] > means[1] > means[0]


def test_ge_jpeg2000_matches_the_same_image_stored_as_rgb() -> None:
    # GE LOGIQ 700: the same image as JPEG 2000 (YBR_RCT, 640 x 480) and as native RGB (320 x 240).
    j2k = read_dicom(_shipped("examples_jpeg2k.dcm"))
    rgb = read_dicom(_shipped("examples_rgb_color.dcm"))
    assert j2k.frames.shape == (1, 480, 640, 3)
    halved = j2k.frames[0].reshape(240, 2, 320, 2, 3).astype(np.float64).mean(axis=(1, 3))
    difference = np.abs(halved - rgb.frames[0].astype(np.float64))
    assert difference.mean() < 6.0
    # Per-channel means agree: no channel swapped or tinted.
    assert np.abs(halved.reshape(-1, 3).mean(0) - rgb.frames[0].reshape(-1, 3).mean(0)).max() < 2.0


def test_ge_big_endian_rgb() -> None:
    clip = read_dicom(_shipped("ExplVR_BigEnd.dcm"))
    reference = dcmread(_shipped("ExplVR_BigEnd.dcm")).pixel_array
    assert np.array_equal(clip.frames[0], reference)


def test_jpeg_lossless_process_14_decodes_exactly_through_gdcm(tmp_path: Path) -> None:
    # A real JPEG Lossless SV1 stream (written by GDCM), relabelled as ultrasound; the same image
    # is shipped RLE-compressed, so the decode must match it pixel for pixel.
    ds = dcmread(_shipped("SC_rgb_jpeg_gdcm.dcm"))
    ds.Modality = "US"
    path = tmp_path / "lossless.dcm"
    ds.save_as(path)
    assert scan_dicom(path).transfer_syntax_name.startswith("JPEG Lossless")
    clip = read_dicom(path)
    reference = dcmread(_shipped("SC_rgb_rle.dcm")).pixel_array
    assert clip.frames.shape == (1, 100, 100, 3)
    assert np.array_equal(clip.frames[0], reference)


def test_gdcm_decodes_only_what_nothing_else_does() -> None:
    from pydicom import uid

    from echofm.io.pixel_decoders import decoding_plugin, installed_plugins

    assert "gdcm" in installed_plugins(uid.JPEGBaseline8Bit)
    # Installed, GDCM would be pydicom's first choice for all of these; the table keeps each on
    # the decoder it was validated with.
    assert decoding_plugin(uid.JPEGBaseline8Bit, 8) == "pillow"
    assert decoding_plugin(uid.JPEG2000Lossless, 8) == "pylibjpeg"
    assert decoding_plugin(uid.JPEGLSLossless, 8) == "pyjpegls"
    assert decoding_plugin(uid.RLELossless, 8) == "pylibjpeg"
    assert decoding_plugin(uid.JPEGLosslessSV1, 8) == "gdcm"
    assert decoding_plugin(uid.JPEGExtended12Bit, 12) is None
    assert decoding_plugin(uid.ExplicitVRLittleEndian, 16) == ""
