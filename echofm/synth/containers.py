"""Writers for the synthetic archive: ultrasound DICOM in every transfer syntax and photometric
interpretation the readers support, and MP4/AVI through OpenCV.

Each container variant is one way real archives store a cine. The DICOM files are US Multi-frame
Image Storage with the tags a reader depends on (frame timing in varying tags, heart rate,
SequenceOfUltrasoundRegions, view codes) and the PHI a de-identifier must drop.

Encoders: JPEG Baseline frames are encoded with Pillow (4:2:2 chroma subsampling, YBR_FULL_422)
and encapsulated; JPEG-LS (pyjpegls/CharLS), JPEG 2000 (pylibjpeg-openjpeg) and RLE
(pylibjpeg-rle) go through `Dataset.compress`. Explicit VR Big Endian is written by pydicom 3
itself; the 8-bit pixel data is OB, which has no byte order, so it is stored as is.
Bytes are deterministic for given inputs: UIDs are derived from the archive seed, no timestamps
come from the clock, and the OpenCV encoders (mpeg4, MJPEG) produce identical files on one machine.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from echofm.errors import SynthError

US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Tags FrameIncrementPointer may point at.
TAG_FRAME_TIME = 0x00181063
TAG_FRAME_TIME_VECTOR = 0x00181065

# How the reader is expected to find the frame rate: highest-priority tag present wins.
FPS_TAG_PRIORITY: tuple[str, ...] = ("FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate")


class ContainerError(SynthError, RuntimeError):
    """A writer could not produce its file (an encoder or OpenCV backend is missing)."""


@dataclass(frozen=True, kw_only=True)
class ContainerVariant:
    """One storage form: container, transfer syntax, photometric interpretation, planar configuration."""

    name: str
    container: str  # "dicom" | "mp4" | "avi"
    transfer_syntax: str = ""
    photometric: str = ""
    planar: int = 0

    def __post_init__(self) -> None:
        if self.container not in ("dicom", "mp4", "avi"):
            raise ValueError(f"unknown container {self.container!r}")
        if self.container == "dicom" and not (self.transfer_syntax and self.photometric):
            raise ValueError(f"DICOM variant {self.name} needs a transfer syntax and a photometric interpretation")
        if self.planar not in (0, 1):
            raise ValueError(f"planar configuration must be 0 or 1, got {self.planar}")

    @property
    def colour(self) -> bool:
        """True when the pixels are rendered with colour overlays (three samples per pixel)."""
        return self.container != "dicom" or self.photometric not in ("MONOCHROME1", "MONOCHROME2")

    @property
    def extension(self) -> str:
        return {"dicom": ".dcm", "mp4": ".mp4", "avi": ".avi"}[self.container]


# The order is the coverage order: the first len(VARIANTS) clips of an archive use each once.
VARIANTS: tuple[ContainerVariant, ...] = (
    ContainerVariant(
        name="explicit_le_mono2",
        container="dicom",
        transfer_syntax=dcm_uid.ExplicitVRLittleEndian,
        photometric="MONOCHROME2",
    ),
    ContainerVariant(
        name="jpeg_baseline_ybr422",
        container="dicom",
        transfer_syntax=dcm_uid.JPEGBaseline8Bit,
        photometric="YBR_FULL_422",
    ),
    ContainerVariant(
        name="mp4",
        container="mp4",
    ),
    ContainerVariant(
        name="implicit_le_mono1",
        container="dicom",
        transfer_syntax=dcm_uid.ImplicitVRLittleEndian,
        photometric="MONOCHROME1",
    ),
    ContainerVariant(
        name="rle_rgb",
        container="dicom",
        transfer_syntax=dcm_uid.RLELossless,
        photometric="RGB",
    ),
    ContainerVariant(
        name="avi",
        container="avi",
    ),
    ContainerVariant(
        name="explicit_le_rgb_planar0",
        container="dicom",
        transfer_syntax=dcm_uid.ExplicitVRLittleEndian,
        photometric="RGB",
    ),
    ContainerVariant(
        name="jpegls_mono2",
        container="dicom",
        transfer_syntax=dcm_uid.JPEGLSLossless,
        photometric="MONOCHROME2",
    ),
    ContainerVariant(
        name="explicit_be_rgb_planar1",
        container="dicom",
        transfer_syntax=dcm_uid.ExplicitVRBigEndian,
        photometric="RGB",
        planar=1,
    ),
    ContainerVariant(
        name="explicit_le_ybr_full",
        container="dicom",
        transfer_syntax=dcm_uid.ExplicitVRLittleEndian,
        photometric="YBR_FULL",
    ),
    ContainerVariant(
        name="j2k_mono2",
        container="dicom",
        transfer_syntax=dcm_uid.JPEG2000Lossless,
        photometric="MONOCHROME2",
    ),
    ContainerVariant(
        name="explicit_le_palette",
        container="dicom",
        transfer_syntax=dcm_uid.ExplicitVRLittleEndian,
        photometric="PALETTE COLOR",
    ),
)
VARIANT_BY_NAME: dict[str, ContainerVariant] = {v.name: v for v in VARIANTS}

# After one full cycle, clips follow this weighted pattern: JPEG Baseline DICOM and MP4/AVI exports
# are what archives mostly hold; uncompressed colour and JPEG 2000 are rare (and the largest or
# slowest to write).
WEIGHTED_PATTERN: tuple[str, ...] = (
    "jpeg_baseline_ybr422", "mp4", "explicit_le_mono2", "jpeg_baseline_ybr422", "avi",
    "jpegls_mono2", "jpeg_baseline_ybr422", "mp4", "implicit_le_mono1", "rle_rgb",
    "jpeg_baseline_ybr422", "explicit_le_rgb_planar0", "avi", "mp4", "explicit_le_mono2",
    "jpeg_baseline_ybr422", "explicit_be_rgb_planar1", "explicit_le_ybr_full", "explicit_le_palette", "j2k_mono2",
)


def variant_for_clip(index: int) -> ContainerVariant:
    """The container variant of clip `index` (0-based): every variant once in the first cycle, then weighted."""
    if index < len(VARIANTS):
        return VARIANTS[index]
    return VARIANT_BY_NAME[WEIGHTED_PATTERN[(index - len(VARIANTS)) % len(WEIGHTED_PATTERN)]]


@dataclass(frozen=True, kw_only=True)
class RegionSpec:
    """One SequenceOfUltrasoundRegions item, pixel bounds inclusive, deltas in cm per pixel."""

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int = 1  # 1 = 2D tissue, 4 = waveform (ECG)
    data_type: int = 1  # 1 = tissue, 9 = ECG trace
    delta_x: float = 0.0
    delta_y: float = 0.0
    units: int = 3  # 3 = cm
    reference_x: int = 0
    reference_y: int = 0


@dataclass(frozen=True, kw_only=True)
class UltrasoundHeader:
    """Header content of one ultrasound DICOM file (PHI included on purpose)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str
    study_time: str
    accession: str
    study_description: str
    institution: str
    operator: str
    referring: str
    manufacturer: str
    model: str
    series_number: int
    instance_number: int
    fps: float
    fps_tags: tuple[str, ...]
    series_description: str | None = None
    view_code: tuple[str, str, str] | None = None  # (code value, scheme, meaning)
    heart_rate_bpm: int | None = None
    regions: tuple[RegionSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        unknown = set(self.fps_tags) - set(FPS_TAG_PRIORITY)
        if unknown:
            raise ValueError(f"unknown frame-rate tags {sorted(unknown)}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    @property
    def expected_fps_source(self) -> str:
        """The tag a reader following FPS_TAG_PRIORITY uses, or "default" when none is written."""
        for tag in FPS_TAG_PRIORITY:
            if tag in self.fps_tags:
                return tag
        return "default"


def _region_item(r: RegionSpec) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = r.spatial_format
    item.RegionDataType = r.data_type
    item.RegionFlags = 0
    item.RegionLocationMinX0 = r.x0
    item.RegionLocationMinY0 = r.y0
    item.RegionLocationMaxX1 = r.x1
    item.RegionLocationMaxY1 = r.y1
    item.PhysicalUnitsXDirection = r.units
    item.PhysicalUnitsYDirection = r.units
    item.PhysicalDeltaX = r.delta_x
    item.PhysicalDeltaY = r.delta_y
    item.ReferencePixelX0 = r.reference_x
    item.ReferencePixelY0 = r.reference_y
    return item


def _fmt_ds(value: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text[:16]


def build_us_dataset(header: UltrasoundHeader, n_frames: int, sop_class: str = US_MULTIFRAME_STORAGE) -> Dataset:
    """The header of an ultrasound image (no pixel module yet); `n_frames` > 1 adds the multi-frame tags."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = header.sop_uid
    meta.ImplementationVersionName = "ECHOFM_SYNTH"
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "0001"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = header.sop_uid
    ds.StudyDate = header.study_date
    ds.SeriesDate = header.study_date
    ds.ContentDate = header.study_date
    ds.StudyTime = header.study_time
    ds.ContentTime = header.study_time
    ds.AccessionNumber = header.accession
    ds.Modality = "US"
    ds.Manufacturer = header.manufacturer
    ds.InstitutionName = header.institution
    ds.ReferringPhysicianName = header.referring
    ds.StudyDescription = header.study_description
    if header.series_description is not None:
        ds.SeriesDescription = header.series_description
    ds.OperatorsName = header.operator
    ds.ManufacturerModelName = header.model
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.birth_date
    ds.PatientSex = header.sex
    ds.BodyPartExamined = "HEART"
    if header.heart_rate_bpm is not None:
        ds.HeartRate = header.heart_rate_bpm
    frame_ms = 1000.0 / header.fps
    if n_frames > 1:
        if "FrameTime" in header.fps_tags:
            ds.FrameTime = _fmt_ds(frame_ms)
        if "FrameTimeVector" in header.fps_tags:
            ds.FrameTimeVector = ["0"] + [_fmt_ds(frame_ms)] * (n_frames - 1)
        if "CineRate" in header.fps_tags:
            ds.CineRate = int(round(header.fps))
        if "RecommendedDisplayFrameRate" in header.fps_tags:
            ds.RecommendedDisplayFrameRate = int(round(header.fps))
    ds.StudyInstanceUID = header.study_uid
    ds.SeriesInstanceUID = header.series_uid
    ds.StudyID = header.accession[-4:]
    ds.SeriesNumber = header.series_number
    ds.InstanceNumber = header.instance_number
    if header.view_code is not None:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = header.view_code
        ds.ViewCodeSequence = Sequence([code])
    if header.regions:
        ds.SequenceOfUltrasoundRegions = Sequence([_region_item(r) for r in header.regions])
    if n_frames > 1:
        ds.NumberOfFrames = n_frames
        if "FrameTime" in header.fps_tags:
            ds.FrameIncrementPointer = TAG_FRAME_TIME
        elif "FrameTimeVector" in header.fps_tags:
            ds.FrameIncrementPointer = TAG_FRAME_TIME_VECTOR
    return ds


# PALETTE COLOR: indices 0..223 are a grey ramp, 224..255 hold the overlay colours.
_GREY_LEVELS = 224


def _palette_colours() -> np.ndarray:
    """uint8 `[32, 3]`: the colour entries of the palette (ECG green, cursor yellow, a red-blue ramp)."""
    ramp = np.linspace(0.0, 1.0, 30)[:, None]
    bar = np.concatenate([255 * (1 - ramp), 40 * np.ones_like(ramp), 255 * ramp], axis=1)
    return np.concatenate([[[40, 220, 60], [250, 220, 40]], bar]).round().astype(np.uint8)


def palette_lut() -> np.ndarray:
    """uint16 `[256, 3]`: the 16-bit RGB lookup table of the PALETTE COLOR files."""
    grey = np.repeat(np.linspace(0, 255, _GREY_LEVELS).round()[:, None], 3, axis=1)
    lut8 = np.concatenate([grey, _palette_colours()]).astype(np.uint16)
    return lut8 * 257


def rgb_to_palette(rgb: np.ndarray) -> np.ndarray:
    """uint8 `[T, H, W]` palette indices for uint8 `[T, H, W, 3]` RGB: grey to the ramp, colour to the nearest entry."""
    index = np.empty(rgb.shape[:3], dtype=np.uint8)
    colours = _palette_colours().astype(np.int32)
    for t, frame in enumerate(rgb):
        r, g, b = cv2.split(frame)
        # Grey pixels have R == G == B; the overlays are the only coloured ones, and they are few.
        spread = cv2.add(cv2.absdiff(r, g), cv2.absdiff(g, b))
        cv2.convertScaleAbs(g, dst=index[t], alpha=(_GREY_LEVELS - 1) / 255.0)
        ys, xs = np.nonzero(spread > 24)
        if len(ys):
            px = frame[ys, xs].astype(np.int32)
            nearest = ((px[:, None, :] - colours[None]) ** 2).sum(-1).argmin(1)
            index[t, ys, xs] = (_GREY_LEVELS + nearest).astype(np.uint8)
    return index


def rgb_to_ybr_full(rgb: np.ndarray) -> np.ndarray:
    """uint8 `[T, H, W, 3]` YBR_FULL (Y, Cb, Cr; the JPEG/JFIF full-range equations DICOM uses) from RGB."""
    out = np.empty_like(rgb)
    for t, frame in enumerate(rgb):
        ycrcb = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)
        out[t] = ycrcb[..., (0, 2, 1)]
    return out


def _encode_jpeg_frames(rgb: np.ndarray, quality: int) -> list[bytes]:
    frames = []
    for frame in rgb:
        buf = io.BytesIO()
        # subsampling=1 is 4:2:2; Pillow writes YCbCr (JFIF), hence YBR_FULL_422 in the header.
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=1)
        frames.append(buf.getvalue())
    return frames


def _set_pixel_module(ds: Dataset, n_frames: int, height: int, width: int, samples: int, photometric: str, planar: int) -> None:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = planar
    ds.Rows = height
    ds.Columns = width
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if n_frames > 1:
        ds.NumberOfFrames = n_frames


def write_dicom(
    path: Path,
    frames: np.ndarray,
    variant: ContainerVariant,
    header: UltrasoundHeader,
    sop_class: str = US_MULTIFRAME_STORAGE,
) -> None:
    """Write `frames` (uint8 `[T, H, W]` grey, or `[T, H, W, 3]` RGB for colour variants) as `variant`.

    T == 1 with `sop_class=US_IMAGE_STORAGE` writes a single-frame ultrasound image.
    """
    if variant.container != "dicom":
        raise ValueError(f"{variant.name} is not a DICOM variant")
    if frames.dtype != np.uint8 or frames.ndim != (4 if variant.colour else 3):
        raise ValueError(f"{variant.name} needs uint8 frames with ndim {4 if variant.colour else 3}, got {frames.dtype} {frames.shape}")
    n, h, w = frames.shape[:3]
    ds = build_us_dataset(header, n, sop_class)
    ts = dcm_uid.UID(variant.transfer_syntax)
    photometric = variant.photometric
    samples = 3 if variant.colour and photometric != "PALETTE COLOR" else 1
    _set_pixel_module(ds, n, h, w, samples, photometric, variant.planar)
    arr = frames if n > 1 else frames[0]
    if ts in (dcm_uid.JPEGLSLossless, dcm_uid.JPEG2000Lossless, dcm_uid.RLELossless):
        plugin = "pylibjpeg" if ts in (dcm_uid.JPEG2000Lossless, dcm_uid.RLELossless) else ""
        try:
            ds.compress(ts, arr, encoding_plugin=plugin, generate_instance_uid=False)
        except (RuntimeError, ValueError) as exc:
            raise ContainerError(f"cannot encode {path} as {ts.name}: {exc}") from exc
    elif ts == dcm_uid.JPEGBaseline8Bit:
        ds.file_meta.TransferSyntaxUID = ts
        ds.PixelData = encapsulate(_encode_jpeg_frames(frames, quality=92))
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        ds.file_meta.TransferSyntaxUID = ts
        if photometric == "MONOCHROME1":
            pixels = 255 - frames  # MONOCHROME1 stores the inverse: 0 is white
        elif photometric == "YBR_FULL":
            pixels = rgb_to_ybr_full(frames)
        elif photometric == "PALETTE COLOR":
            pixels = rgb_to_palette(frames)
            _set_palette(ds)
        else:
            pixels = frames
        if samples == 3 and variant.planar == 1:
            pixels = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))  # RRR..GGG..BBB per frame
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds["PixelData"].VR = "OB" if ts == dcm_uid.ExplicitVRBigEndian else "OW"
    ds.save_as(path, enforce_file_format=True)


def _set_palette(ds: Dataset) -> None:
    lut = palette_lut()
    for name, column in (("Red", 0), ("Green", 1), ("Blue", 2)):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{name}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"{name}PaletteColorLookupTableData", lut[:, column].astype("<u2").tobytes())


def write_video(path: Path, frames: np.ndarray, fps: float, container: str) -> None:
    """Write uint8 `[T, H, W, 3]` RGB (or `[T, H, W]` grey) frames as MP4 ('mp4v') or AVI ('MJPG')."""
    fourcc = {"mp4": "mp4v", "avi": "MJPG"}.get(container)
    if fourcc is None:
        raise ValueError(f"unknown video container {container!r}")
    n, h, w = frames.shape[:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h), True)
    if not writer.isOpened():
        raise ContainerError(f"OpenCV cannot open a {fourcc} writer for {path}")
    try:
        for frame in frames:
            bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            writer.write(bgr)
    finally:
        writer.release()
