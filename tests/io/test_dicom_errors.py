"""Each failure a real archive contains raises its own exception, naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from echofm.io import (
    CorruptPixelData,
    EchoIOError,
    NoPixelData,
    NotDicom,
    NotUltrasound,
    TooFewFrames,
    UnsupportedTransferSyntax,
    dicom_is_supported,
    read_dicom,
    scan_dicom,
)
from tests.factories import dicom as F


def _raises_both(path: Path, error: type[EchoIOError], reason: str) -> None:
    """scan_dicom and read_dicom both raise `error`, which carries `path` and `reason`; its
    message gives the reason but never the path (a PACS export names files after patients)."""
    for call in (scan_dicom, read_dicom):
        with pytest.raises(error) as info:
            call(path)
        assert info.value.path == path
        assert info.value.reason == reason
        assert f"[{reason}]" in str(info.value)
        assert path.name not in str(info.value) and str(path.parent) not in str(info.value)


def test_zero_byte_file_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.touch()
    _raises_both(path, NotDicom, "not_dicom")


def test_text_file_named_dcm_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("Patient seen on Tuesday.\nEcho looked fine, follow up in 6 months.\n" * 20)
    _raises_both(path, NotDicom, "not_dicom")


def test_dicom_without_preamble_is_still_read(tmp_path: Path) -> None:
    # Bare datasets (no 128-byte preamble, no 'DICM') exist in old archives.
    ds = F.base_dataset()
    F.set_pixels(ds, F.grey_frames(2), photometric="MONOCHROME2")
    path = tmp_path / "bare.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    clip = read_dicom(path)
    assert clip.frames.shape == (2, F.H, F.W, 1)
    assert np.array_equal(clip.frames[..., 0], F.grey_frames(2))


def test_ct_is_not_ultrasound(tmp_path: Path) -> None:
    ds = F.base_dataset(modality="CT")
    F.set_pixels(ds, F.grey_frames(1), photometric="MONOCHROME2")
    _raises_both(F.save(ds, tmp_path / "ct.dcm", uid.ExplicitVRLittleEndian), NotUltrasound, "not_ultrasound")
    real_ct = Path(get_testdata_file("CT_small.dcm", download=False))
    _raises_both(real_ct, NotUltrasound, "not_ultrasound")


def test_ultrasound_without_pixel_data(tmp_path: Path) -> None:
    ds = F.base_dataset()
    path = F.save(ds, tmp_path / "nopixels.dcm", uid.ExplicitVRLittleEndian)
    _raises_both(path, NoPixelData, "no_pixel_data")


def test_truncated_native_pixel_data(tmp_path: Path) -> None:
    path = F.native_file(tmp_path / "full.dcm", F.colour_frames(4), photometric="RGB")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 5000])
    _raises_both(truncated, CorruptPixelData, "corrupt_pixel_data")


def test_truncated_encapsulated_pixel_data(tmp_path: Path) -> None:
    path = F.jpeg_baseline_file(tmp_path / "full.dcm", F.colour_frames(6))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    scan_dicom(truncated)  # the header is intact; only decoding can tell
    with pytest.raises(CorruptPixelData) as info:
        read_dicom(truncated)
    assert info.value.path == truncated


def test_undecodable_fragment(tmp_path: Path) -> None:
    path = F.jpeg_baseline_file(tmp_path / "good.dcm", F.colour_frames(3))
    from pydicom import dcmread

    ds = dcmread(path)
    garbage = np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([b"\xff\xd8" + garbage, b"\xff\xd8" + garbage, b"\xff\xd8" + garbage])
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    with pytest.raises(CorruptPixelData) as info:
        read_dicom(bad)
    assert info.value.path == bad


def test_single_frame_with_min_frames(tmp_path: Path) -> None:
    path = F.native_file(tmp_path / "still.dcm", F.grey_frames(1), photometric="MONOCHROME2")
    assert read_dicom(path).n_frames == 1
    with pytest.raises(TooFewFrames) as info:
        read_dicom(path, min_frames=2)
    assert info.value.path == path and info.value.reason == "too_few_frames"


def _encapsulated_with_syntax(path: Path, transfer_syntax: str) -> Path:
    ds = F.base_dataset()
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = 8, 8, 1, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    # Write with explicit little endian encoding whatever the (possibly unknown) syntax says.
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return path


def test_unknown_transfer_syntax(tmp_path: Path) -> None:
    path = _encapsulated_with_syntax(tmp_path / "private.dcm", "1.2.826.0.1.3680043.8.498.99.1")
    _raises_both(path, UnsupportedTransferSyntax, "unsupported_transfer_syntax")


def test_transfer_syntax_without_installed_decoder(tmp_path: Path) -> None:
    # MPEG-2 video in DICOM: pydicom has no decoder for it at all.
    assert not dicom_is_supported(uid.MPEG2MPML)
    path = _encapsulated_with_syntax(tmp_path / "mpeg2.dcm", uid.MPEG2MPML)
    _raises_both(path, UnsupportedTransferSyntax, "unsupported_transfer_syntax")


def test_supported_syntaxes() -> None:
    for syntax in (
        uid.ImplicitVRLittleEndian,
        uid.ExplicitVRLittleEndian,
        uid.ExplicitVRBigEndian,
        uid.JPEGBaseline8Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
        uid.RLELossless,
    ):
        assert dicom_is_supported(syntax), syntax.name


def test_scanned_header_is_supported(tmp_path: Path) -> None:
    header = scan_dicom(F.jpeg_baseline_file(tmp_path / "a.dcm", F.colour_frames(2)))
    assert dicom_is_supported(header)


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_malformed_number_of_frames_is_corrupt_pixel_data(tmp_path: Path) -> None:
    path = F.native_file(tmp_path / "frames.dcm", F.grey_frames(11), photometric="MONOCHROME2")
    raw = path.read_bytes()
    # NumberOfFrames (0028,0008) IS "11" -> "1A", a value a broken exporter wrote.
    marker = b"\x28\x00\x08\x00IS\x02\x0011"
    assert raw.count(marker) == 1
    path.write_bytes(raw.replace(marker, marker[:-2] + b"1A"))
    _raises_both(path, CorruptPixelData, "corrupt_pixel_data")


def test_12_bit_jpeg_extended_is_refused_at_scan_time(tmp_path: Path) -> None:
    # No installed plugin decodes 12-bit JPEG Extended (Pillow's and GDCM's libjpeg are 8-bit):
    # refused by the header scan, not as a corrupt frame after the batch planned to decode it.
    from pydicom import dcmread

    ds = dcmread(get_testdata_file("JPGExtended.dcm"))  # NM, 12-bit MONOCHROME2
    ds.Modality = "US"
    path = tmp_path / "extended12.dcm"
    ds.save_as(path)
    _raises_both(path, UnsupportedTransferSyntax, "unsupported_transfer_syntax")
    assert dicom_is_supported(uid.JPEGExtended12Bit)  # 8-bit JPEG Extended is decoded
    with pytest.raises(UnsupportedTransferSyntax, match="12-bit samples"):
        scan_dicom(path)
