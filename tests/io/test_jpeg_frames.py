"""JPEG DICOM frames decoded by libjpeg-turbo straight to grey or RGB, against pydicom's decode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.encaps import encapsulate

from echofm.io import CorruptPixelData, read_dicom, scan_dicom
from echofm.io import jpeg_frames
from tests.factories import dicom as F


@pytest.fixture
def pydicom_path(monkeypatch: pytest.MonkeyPatch):
    """Decode with pydicom alone (the reader before this module existed), inside the block."""

    class _Switch:
        def __enter__(self) -> None:
            monkeypatch.setattr(jpeg_frames, "FAST_SYNTAXES", frozenset())

        def __exit__(self, *exc: object) -> None:
            monkeypatch.undo()

    return _Switch()


def _speckle(n_frames: int, rows: int = 120, cols: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 40.0, (rows, cols + n_frames))
    return np.stack([np.clip(base[:, t : t + cols], 0, 255) for t in range(n_frames)]).astype(np.uint8)


def _ybr_jpeg(path: Path, frames_rgb: np.ndarray, *, syntax: str = uid.JPEGBaseline8Bit) -> Path:
    """Colour frames as JPEG YBR_FULL_422 (what scanners write for grey echo too)."""
    F.jpeg_baseline_file(path, frames_rgb, quality=90)
    if syntax != uid.JPEGBaseline8Bit:
        # A baseline stream is valid 8-bit JPEG Extended (a subset of Process 2).
        from pydicom import dcmread

        ds = dcmread(path)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    return path


def _grey_as_ybr(frames: np.ndarray) -> np.ndarray:
    return np.repeat(frames[..., None], 3, axis=3)


@pytest.mark.parametrize("syntax", [uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit])
def test_grey_ybr_jpeg_gives_pydicoms_pixels_as_one_channel(tmp_path: Path, pydicom_path, syntax: str) -> None:
    path = _ybr_jpeg(tmp_path / "grey.dcm", _grey_as_ybr(_speckle(6)), syntax=syntax)
    assert jpeg_frames.handles(scan_dicom(path))
    fast = read_dicom(path, [0, 2, 5])
    with pydicom_path:
        reference = read_dicom(path, [0, 2, 5])
    assert reference.frames.shape == (3, 120, 160, 3)
    assert fast.frames.shape == (3, 120, 160, 1)
    # Neutral chroma: pydicom's R = G = B, and libjpeg's Y equals them bit for bit.
    assert np.array_equal(reference.frames[..., 0], reference.frames[..., 2])
    assert np.array_equal(fast.frames[..., 0], reference.frames[..., 0])


def test_monochrome_jpeg_equals_pydicom(tmp_path: Path, pydicom_path) -> None:
    path = F.jpeg_baseline_file(tmp_path / "mono2.dcm", _speckle(5))
    assert jpeg_frames.handles(scan_dicom(path))
    fast = read_dicom(path)
    with pydicom_path:
        reference = read_dicom(path)
    assert fast.frames.shape == reference.frames.shape == (5, 120, 160, 1)
    assert np.array_equal(fast.frames, reference.frames)


def test_monochrome1_jpeg_is_inverted_like_pydicom(tmp_path: Path, pydicom_path) -> None:
    from pydicom import dcmread

    path = F.jpeg_baseline_file(tmp_path / "mono1.dcm", _speckle(3))
    ds = dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path, enforce_file_format=True)
    fast = read_dicom(path)
    with pydicom_path:
        reference = read_dicom(path)
    assert np.array_equal(fast.frames, reference.frames)


def test_colour_jpeg_is_rgb_within_one_level_of_pydicom(tmp_path: Path, pydicom_path) -> None:
    path = F.jpeg_baseline_file(tmp_path / "colour.dcm", F.colour_frames(4))
    fast = read_dicom(path)
    with pydicom_path:
        reference = read_dicom(path)
    assert fast.frames.shape == reference.frames.shape == (4, *reference.frames.shape[1:3], 3)
    assert np.abs(fast.frames.astype(int) - reference.frames).max() <= 1


def test_a_colour_blob_in_grey_echo_keeps_the_cine_colour(tmp_path: Path) -> None:
    frames = _grey_as_ybr(_speckle(4))
    frames[:, 40:80, 60:100] = (200, 40, 40)  # a colour-flow jet, in every frame
    clip = read_dicom(_ybr_jpeg(tmp_path / "doppler.dcm", frames))
    assert clip.frames.shape[-1] == 3
    assert clip.frames[0, 60, 80, 0] > clip.frames[0, 60, 80, 1] + 100


def test_content_is_grey_decides_on_the_sampled_frames() -> None:
    def encoded(rgb: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buffer, "JPEG", quality=90)
        return np.frombuffer(buffer.getvalue(), np.uint8)

    grey = _grey_as_ybr(_speckle(1))[0]
    colour = grey.copy()
    colour[20:60, 20:60] = (30, 50, 210)
    assert jpeg_frames.content_is_grey([encoded(grey), encoded(grey)])
    assert not jpeg_frames.content_is_grey([encoded(grey), encoded(colour)])
    assert not jpeg_frames.content_is_grey([np.frombuffer(b"\xff\xd8 not a jpeg", np.uint8)])


@pytest.mark.parametrize(("has_bot", "fragments_per_frame"), [(True, 1), (False, 1), (True, 3)])
def test_fragment_layouts_give_the_same_frames(tmp_path: Path, pydicom_path, has_bot: bool, fragments_per_frame: int) -> None:
    path = F.jpeg_baseline_file(
        tmp_path / "layout.dcm", _speckle(4), has_bot=has_bot, fragments_per_frame=fragments_per_frame
    )
    fast = read_dicom(path, [3, 1])
    with pydicom_path:
        reference = read_dicom(path, [3, 1])
    assert np.array_equal(fast.frames, reference.frames)


def test_fragments_without_an_offset_table_are_left_to_pydicom(tmp_path: Path) -> None:
    path = F.jpeg_baseline_file(tmp_path / "split.dcm", _speckle(4), has_bot=False, fragments_per_frame=2)
    header = scan_dicom(path)
    with open(path, "rb") as fh:
        assert jpeg_frames.frame_table(fh, header.pixel_offset, header.n_frames) is None
    assert read_dicom(path).frames.shape == (4, 120, 160, 1)


def _with_region(path: Path) -> Path:
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = dcmread(path)
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 10, 21
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 391, 299
    region.RegionSpatialFormat, region.RegionDataType = 1, 1
    region.PhysicalDeltaX = 0.05
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.save_as(path, enforce_file_format=True)
    return path


def test_fast_decode_downscales_in_the_dct_domain_and_scales_regions(tmp_path: Path) -> None:
    import cv2

    path = _with_region(F.jpeg_baseline_file(tmp_path / "big.dcm", _speckle(2, rows=300, cols=400)))
    assert jpeg_frames.downscale_factor(300, 400, 224) == 1  # 200 < 224 at half scale
    assert jpeg_frames.downscale_factor(300, 400, 150) == 2
    assert jpeg_frames.downscale_factor(300, 400, 50) == 8
    assert jpeg_frames.downscale_factor(300, 400, None) == 1
    full = read_dicom(path)
    half = read_dicom(path, min_side=150)
    assert half.frames.shape == (2, 150, 200, 1)
    area = cv2.resize(full.frames[0, :, :, 0], (200, 150), interpolation=cv2.INTER_AREA)
    assert np.abs(area.astype(int) - half.frames[0, :, :, 0]).mean() < 3.0
    (region,) = half.regions
    assert (region.x0, region.y0, region.x1, region.y1) == (5, 10, 195, 149)
    assert region.physical_delta_x == pytest.approx(0.1) and region.physical_delta_y is None
    assert full.regions[0].x1 == 391


def _encoded_grey(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame, "L").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_frame_that_does_not_decode_is_corrupt_pixel_data(tmp_path: Path) -> None:
    from pydicom import dcmread

    frames = _speckle(3)
    path = F.jpeg_baseline_file(tmp_path / "cut.dcm", frames)
    ds = dcmread(path)
    cut = _encoded_grey(frames[1])
    ds.PixelData = encapsulate([_encoded_grey(frames[0]), cut[: len(cut) // 2], _encoded_grey(frames[2])])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    assert read_dicom(path, [0, 2]).frames.shape == (2, 120, 160, 1)
    with pytest.raises(CorruptPixelData, match="frame 1") as info:
        read_dicom(path, [1])
    assert info.value.path == path


def test_a_frame_of_another_size_than_the_header_is_corrupt(tmp_path: Path) -> None:
    from pydicom import dcmread

    path = F.jpeg_baseline_file(tmp_path / "size.dcm", _speckle(2))
    ds = dcmread(path)
    ds.Rows = 100
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CorruptPixelData, match="header says"):
        read_dicom(path)
