"""Small, deterministic ultrasound DICOM files for the reader tests.

Every colour clip shows the same pattern: four flat quadrants (red, green, blue, grey) and a top
band whose level encodes the frame index, so a test can check colours and which frame came back.
Encoders: pydicom (native, RLE), pyjpegls (JPEG-LS), pylibjpeg-openjpeg (JPEG 2000), Pillow
(JPEG baseline, encapsulated by hand because pydicom has no baseline encoder).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space

RED, GREEN, BLUE, GREY = (200, 40, 40), (40, 190, 50), (30, 50, 210), (128, 128, 128)
BAND_ROWS = 8  # top rows: level 20 * frame index
H, W = 48, 64

PHI = {
    "PatientName": "Doe^Johnathan",
    "PatientID": "PID-987654",
    "PatientBirthDate": "19450317",
    "AccessionNumber": "ACC55555",
    "InstitutionName": "St Elsewhere Hospital",
    "OperatorsName": "Operator^Olga",
    "ReferringPhysicianName": "Referrer^Rupert",
    "StudyDescription": "Echo for Johnathan Doe",
    "SeriesDescription": "Johnathan A4C view",
    "StudyID": "STUDY4242",
}


def colour_frames(n_frames: int) -> np.ndarray:
    """uint8 `[T, 48, 64, 3]`: quadrants red / green / blue / grey, band level 20 * t."""
    frames = np.empty((n_frames, H, W, 3), np.uint8)
    half_h, half_w = H // 2, W // 2
    for t in range(n_frames):
        f = frames[t]
        f[:half_h, :half_w] = RED
        f[:half_h, half_w:] = GREEN
        f[half_h:, :half_w] = BLUE
        f[half_h:, half_w:] = GREY
        f[:BAND_ROWS] = 20 * t % 256
    return frames


def grey_frames(n_frames: int) -> np.ndarray:
    """uint8 `[T, 48, 64]`: left half 60, right half 180, band level 20 * t."""
    frames = np.empty((n_frames, H, W), np.uint8)
    frames[:, :, : W // 2] = 60
    frames[:, :, W // 2 :] = 180
    for t in range(n_frames):
        frames[t, :BAND_ROWS] = 20 * t % 256
    return frames


def base_dataset(*, modality: str = "US", phi: bool = True) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = "1.2.840.10008.5.1.4.1.1.3.1" if modality == "US" else "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.Modality = modality
    ds.Manufacturer = "EchoFM Test Systems"
    ds.ManufacturerModelName = "Factory 1"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if phi:
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
    return ds


def set_pixels(
    ds: Dataset,
    frames: np.ndarray,
    *,
    photometric: str,
    bits_stored: int = 8,
    planar_configuration: int = 0,
    signed: bool = False,
) -> Dataset:
    """Store `frames` (`[T, H, W]` or `[T, H, W, 3]`) natively with the given image pixel module."""
    n, rows, cols = frames.shape[:3]
    samples = 1 if frames.ndim == 3 else 3
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.NumberOfFrames = n
    bits_allocated = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if samples == 3:
        ds.PlanarConfiguration = planar_configuration
        if planar_configuration == 1:
            frames = frames.transpose(0, 3, 1, 2)
    data = np.ascontiguousarray(frames)
    if bits_allocated == 16:
        big = ds.file_meta.get("TransferSyntaxUID") == uid.ExplicitVRBigEndian
        data = data.astype((">" if big else "<") + ("i2" if signed else "u2"))
    ds.PixelData = data.tobytes()
    ds["PixelData"].VR = "OW" if bits_allocated == 16 else "OB"
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: str) -> Path:
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def native_file(
    path: Path,
    frames: np.ndarray,
    *,
    photometric: str,
    transfer_syntax: str = uid.ExplicitVRLittleEndian,
    **pixel_kwargs: object,
) -> Path:
    ds = base_dataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.FrameTime = 1000.0 / 25
    set_pixels(ds, frames, photometric=photometric, **pixel_kwargs)  # type: ignore[arg-type]
    return save(ds, path, transfer_syntax)


def compressed_file(
    path: Path, frames: np.ndarray, *, photometric: str, transfer_syntax: str, **encode_kwargs: object
) -> Path:
    """Compress with pydicom's own encoders (RLE, JPEG-LS, JPEG 2000)."""
    ds = base_dataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.FrameTime = 1000.0 / 25
    set_pixels(ds, frames, photometric=photometric)
    ds.compress(transfer_syntax, **encode_kwargs)
    ds.save_as(path, enforce_file_format=True)
    return path


def jpeg_baseline_file(
    path: Path, frames: np.ndarray, *, quality: int = 95, has_bot: bool = True, fragments_per_frame: int = 1
) -> Path:
    """JPEG Baseline: colour as YBR_FULL_422 (Pillow YCbCr, 4:2:2 subsampling), grey MONOCHROME2.
    Optionally without a Basic Offset Table and with each frame split over several fragments."""
    colour = frames.ndim == 4
    fragments = []
    for frame in frames:
        buf = io.BytesIO()
        image = Image.fromarray(frame, "RGB" if colour else "L")
        # subsampling=1 is 4:2:2: chroma halved horizontally only, matching YBR_FULL_422.
        image.save(buf, format="JPEG", quality=quality, subsampling=1 if colour else 0)
        fragments.append(buf.getvalue())
    ds = base_dataset()
    ds.FrameTime = 1000.0 / 25
    n, rows, cols = frames.shape[:3]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "YBR_FULL_422" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate(fragments, fragments_per_frame=fragments_per_frame, has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return save(ds, path, uid.JPEGBaseline8Bit)


def ybr_full_file(path: Path, frames: np.ndarray) -> Path:
    """Native YBR_FULL: the reader must convert to RGB exactly once."""
    ybr = convert_color_space(frames, "RGB", "YBR_FULL")
    return native_file(path, ybr, photometric="YBR_FULL")


def ybr_full_422_native_file(path: Path, frames: np.ndarray) -> Path:
    """Native YBR_FULL_422: per pair of pixels Y1 Y2 Cb Cr (PS3.3 C.7.6.3.1.2)."""
    ybr = convert_color_space(frames, "RGB", "YBR_FULL").astype(np.uint16)
    n, rows, cols, _ = ybr.shape
    y = ybr[..., 0].reshape(n, rows, cols // 2, 2)
    cb = ybr[..., 1].reshape(n, rows, cols // 2, 2).mean(-1).round()
    cr = ybr[..., 2].reshape(n, rows, cols // 2, 2).mean(-1).round()
    packed = np.stack([y[..., 0], y[..., 1], cb, cr], axis=-1).astype(np.uint8)
    ds = base_dataset()
    ds.FrameTime = 40.0
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = packed.tobytes()
    ds["PixelData"].VR = "OB"
    return save(ds, path, uid.ExplicitVRLittleEndian)


# Palette: index i < 128 is a ramp from black to orange, index >= 128 a ramp to cyan.
def palette_tables(scale: int = 257) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16-bit LUT entries: 8-bit value * 257 (spanning 0..65535, the usual encoding) or, with
    scale=1, 8-bit values in 16-bit entries (a vendor quirk)."""
    i = np.arange(256)
    red = np.where(i < 128, i * 2, 0)
    green = np.where(i < 128, i, (i - 128) * 2)
    blue = np.where(i < 128, 0, (i - 128) * 2)
    return tuple((np.clip(c, 0, 255) * scale).astype("<u2") for c in (red, green, blue))  # type: ignore[return-value]


def palette_file(path: Path, indices: np.ndarray, *, scale: int = 257) -> Path:
    ds = base_dataset()
    ds.FrameTime = 40.0
    set_pixels(ds, indices, photometric="PALETTE COLOR")
    for colour, table in zip(("Red", "Green", "Blue"), palette_tables(scale), strict=True):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.tobytes())
    return save(ds, path, uid.ExplicitVRLittleEndian)
