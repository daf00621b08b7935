"""DICOM ultrasound: a fast header scan and pixel decoding of only the frames asked for.

`scan_dicom` parses the header and stops before the pixel data, so discovery of a large archive
costs one small read per file. `read_dicom` decodes the wanted frames through
`pydicom.pixels.iter_pixels` from the open file: native (uncompressed) data is read frame by frame
at its offset, encapsulated data is decoded fragment by fragment, so a 300-frame cine costs the
frames kept, not the whole file. See docs/io.md for the syntaxes, photometric interpretations and
decoders supported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import iter_pixels

from echofm.io.clip import Clip, UltrasoundRegion
from echofm.io.deid import MODALITIES, PHOTOMETRIC_TERMS, Pseudonymizer, controlled, known_uid, technical_metadata
from echofm.io.errors import (
    CorruptPixelData,
    FrameOutOfRange,
    NoPixelData,
    NotDicom,
    NotUltrasound,
    TooFewFrames,
    UnsupportedTransferSyntax,
)
from echofm.io.fps import frame_rate
from echofm.io.jpeg_frames import decode_jpeg_frames, downscale_factor
from echofm.io.jpeg_frames import handles as jpeg_fast_path_handles
from echofm.io.photometric import PALETTE, SUPPORTED, palette_lut, to_display
from echofm.io.pixel_decoders import decoding_plugin
from echofm.io.quiet import no_warnings

ULTRASOUND_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume Storage
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (retired)
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (retired)
    }
)
_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}


@dataclass(frozen=True)
class DicomHeader:
    """What `scan_dicom` learns without touching the pixel data.

    rows, columns in pixels; fps in frames/s (`fps_source` as in `Clip`); `meta` is the
    allow-listed technical metadata of `deid.technical_metadata` plus `container = "dicom"`;
    `pseudonyms` is empty unless a pseudonymizer was given. No field holds a patient-identifying
    value.
    """

    path: Path
    transfer_syntax: str
    transfer_syntax_name: str
    rows: int
    columns: int
    n_frames: int
    samples_per_pixel: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    signed: bool
    planar_configuration: int
    fps: float
    fps_source: str
    heart_rate_bpm: float | None
    regions: list[UltrasoundRegion] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    pseudonyms: dict[str, str] = field(default_factory=dict)
    pixel_offset: int | None = None  # byte offset of the Pixel Data value in the file (None: deflated)

    @property
    def channels(self) -> int:
        """Channels of the decoded clip: 1 for MONOCHROME1/2, 3 otherwise."""
        return 1 if self.photometric in ("MONOCHROME1", "MONOCHROME2") else 3


def dicom_is_supported(transfer_syntax: str | DicomHeader) -> bool:
    """True when an installed decoder handles this transfer syntax UID (any sample precision),
    or the transfer syntax at the precision of a scanned header."""
    if isinstance(transfer_syntax, DicomHeader):
        return decoding_plugin(transfer_syntax.transfer_syntax, transfer_syntax.bits_stored) is not None
    return decoding_plugin(transfer_syntax) is not None


def _open_dataset(fh: BinaryIO, path: Path) -> Dataset:
    """Parse the header up to the pixel data; NotDicom when the bytes are not a DICOM dataset."""
    try:
        return pydicom.dcmread(fh, stop_before_pixels=True)
    except InvalidDicomError:
        pass
    except Exception as exc:  # a DICM file whose header is damaged
        raise NotDicom(path, f"unparseable DICOM header ({type(exc).__name__})") from None
    # No 'DICM' preamble: old files and some PACS exports are bare datasets. Accept one only when
    # the forced parse yields the attributes every image object has, so a text file is rejected.
    fh.seek(0)
    try:
        ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
        plausible = bool(ds.get("SOPClassUID")) or ("Rows" in ds and "Columns" in ds)
    except Exception as exc:
        raise NotDicom(path, f"no DICOM preamble and no parseable header ({type(exc).__name__})") from None
    if not plausible:
        raise NotDicom(path, "no DICOM preamble and no recognisable DICOM header")
    return ds


def _transfer_syntax(ds: Dataset) -> uid.UID:
    file_meta = getattr(ds, "file_meta", None)
    ts = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if ts:
        return uid.UID(str(ts))
    # A bare dataset: its encoding was detected while parsing.
    implicit, little = ds.original_encoding
    if implicit:
        return uid.ImplicitVRLittleEndian
    return uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian


def _pixel_element_length(fh: BinaryIO, ds: Dataset) -> tuple[str, int, int, int | None] | None:
    """At the position `dcmread(stop_before_pixels=True)` leaves, read the pixel element's tag,
    value length (0xFFFFFFFF = undefined, i.e. encapsulated), the bytes left in the file after
    the element header and the file offset where its value starts. None when there is no pixel
    data.

    Uses the encoding the header was actually parsed with, which is known even when the transfer
    syntax UID is one pydicom does not recognise."""
    implicit, little = ds.original_encoding
    start = fh.tell()
    head = fh.read(12)
    if len(head) < 8:
        return None
    endian = "little" if little else "big"
    group = int.from_bytes(head[0:2], endian)
    element = int.from_bytes(head[2:4], endian)
    keyword = _PIXEL_TAGS.get((group << 16) | element)
    if keyword is None:
        return None
    size = os.fstat(fh.fileno()).st_size
    if implicit:
        return keyword, int.from_bytes(head[4:8], endian), size - (start + 8), start + 8
    # Explicit VR: OB/OW/OF/OD have 2 reserved bytes then a 4-byte length.
    if len(head) < 12:
        return None
    return keyword, int.from_bytes(head[8:12], endian), size - (start + 12), start + 12


def _deflated_pixel_element(fh: BinaryIO, path: Path) -> tuple[str, int, int, int | None] | None:
    """`_pixel_element_length` for a deflated dataset, which cannot be read at a file offset: the
    whole dataset is inflated (deflate is rare in ultrasound, and such files are small)."""
    fh.seek(0)
    try:
        full = pydicom.dcmread(fh)
    except Exception as exc:
        raise CorruptPixelData(path, f"deflated dataset does not inflate ({type(exc).__name__})") from None
    for keyword in _PIXEL_TAGS.values():
        if keyword in full:
            length = len(full[keyword].value or b"")
            return keyword, length, length, None
    return None


def _regions(ds: Dataset) -> list[UltrasoundRegion]:
    out: list[UltrasoundRegion] = []
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        try:
            out.append(
                UltrasoundRegion(
                    x0=int(item.RegionLocationMinX0),
                    y0=int(item.RegionLocationMinY0),
                    x1=int(item.RegionLocationMaxX1),
                    y1=int(item.RegionLocationMaxY1),
                    spatial_format=int(item.get("RegionSpatialFormat", 0) or 0),
                    data_type=int(item.get("RegionDataType", 0) or 0),
                    physical_delta_x=_float_or_none(item.get("PhysicalDeltaX")),
                    physical_delta_y=_float_or_none(item.get("PhysicalDeltaY")),
                    physical_units_x=_int_or_none(item.get("PhysicalUnitsXDirection")),
                    physical_units_y=_int_or_none(item.get("PhysicalUnitsYDirection")),
                )
            )
        except (AttributeError, TypeError, ValueError):
            # A region without its location cannot be used; the sector mask falls back to pixels.
            continue
    return out


def _float_or_none(value: object) -> float | None:
    try:
        return None if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _int_or_none(value: object) -> int | None:
    try:
        return None if value is None else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _is_ultrasound(ds: Dataset) -> bool:
    modality = str(ds.get("Modality", "")).strip().upper()
    return modality == "US" or str(ds.get("SOPClassUID", "")) in ULTRASOUND_SOP_CLASSES


def _scan(fh: BinaryIO, path: Path, pseudonymizer: Pseudonymizer | None) -> tuple[DicomHeader, Dataset]:
    ds = _open_dataset(fh, path)
    if not _is_ultrasound(ds):
        modality = controlled(str(ds.get("Modality", "")), MODALITIES) or "unknown"
        sop_class = known_uid(str(ds.get("SOPClassUID", ""))) if ds.get("SOPClassUID") else "unknown"
        raise NotUltrasound(path, f"modality {modality}, SOP class {sop_class}")
    ts = _transfer_syntax(ds)
    if ts == uid.DeflatedExplicitVRLittleEndian:
        pixel = _deflated_pixel_element(fh, path)
    else:
        pixel = _pixel_element_length(fh, ds)
    if pixel is None:
        raise NoPixelData(path, "no Pixel Data element")
    keyword, length, available, pixel_offset = pixel
    if keyword != "PixelData":
        raise UnsupportedTransferSyntax(path, f"{keyword} (floating-point pixels) is not an ultrasound image")
    if not dicom_is_supported(ts):
        raise UnsupportedTransferSyntax(path, f"transfer syntax {known_uid(str(ts))}: no installed decoder")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits_allocated = int(ds.BitsAllocated)
        bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
    except (AttributeError, TypeError, ValueError) as exc:
        raise CorruptPixelData(path, f"image pixel module incomplete ({type(exc).__name__})") from None
    if photometric not in SUPPORTED:
        raise UnsupportedTransferSyntax(path, f"photometric interpretation {controlled(photometric, PHOTOMETRIC_TERMS)} is not supported")
    if decoding_plugin(ts, bits_stored) is None:
        # e.g. 12-bit JPEG Extended where the only JPEG decoder is 8-bit libjpeg: refused here,
        # not as a corrupt frame at decode time.
        raise UnsupportedTransferSyntax(path, f"{ts.name} with {bits_stored}-bit samples: no installed decoder")
    n_frames = _number_of_frames(ds, path)
    if ts.is_encapsulated:
        if length != 0xFFFFFFFF:
            raise CorruptPixelData(path, f"{ts.name} pixel data must be encapsulated (undefined length)")
    else:
        # Native YBR_FULL_422 stores two samples per pixel (Y Y Cb Cr per pair of pixels).
        samples_stored = 2 if photometric == "YBR_FULL_422" and samples == 3 else samples
        expected = rows * columns * samples_stored * n_frames * bits_allocated // 8
        if length == 0xFFFFFFFF or length < expected or available < expected:
            raise CorruptPixelData(
                path, f"native pixel data holds {min(length, available)} bytes, {n_frames} frames need {expected}"
            )
    fps, fps_source = frame_rate(ds)
    meta = technical_metadata(ds)
    meta["container"] = "dicom"
    header = DicomHeader(
        path=path,
        transfer_syntax=str(ts),
        transfer_syntax_name=ts.name,
        rows=rows,
        columns=columns,
        n_frames=n_frames,
        samples_per_pixel=samples,
        photometric=photometric,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=int(ds.get("PixelRepresentation", 0) or 0) == 1,
        planar_configuration=int(ds.get("PlanarConfiguration", 0) or 0),
        fps=fps,
        fps_source=fps_source,
        heart_rate_bpm=meta.get("heart_rate_bpm"),
        regions=_regions(ds),
        meta=meta,
        pseudonyms=pseudonymizer.dataset_pseudonyms(ds) if pseudonymizer is not None else {},
        pixel_offset=pixel_offset,
    )
    return header, ds


def _number_of_frames(ds: Dataset, path: Path) -> int:
    """NumberOfFrames (1 when absent or empty); CorruptPixelData when it is not a positive integer
    (a malformed value such as "1A": its text is not quoted, header values may carry PHI)."""
    try:
        # pydicom parses the IS value on access, so a malformed one raises here.
        element = ds.get("NumberOfFrames")
        value = None if element is None or element == "" else int(element)
    except (TypeError, ValueError, OverflowError):
        raise CorruptPixelData(path, "NumberOfFrames is not an integer") from None
    if value is not None and value < 0:
        raise CorruptPixelData(path, "NumberOfFrames is negative")
    return int(value or 1)


def _open(path: Path) -> BinaryIO:
    try:
        fh = path.open("rb")
    except IsADirectoryError as exc:
        raise NotDicom(path, "is a directory") from exc
    if os.fstat(fh.fileno()).st_size == 0:
        fh.close()
        raise NotDicom(path, "empty file")
    return fh


def scan_dicom(path: str | Path, *, pseudonymizer: Pseudonymizer | None = None) -> DicomHeader:
    """Read a DICOM header without its pixel data.

    Raises NotDicom, NotUltrasound, NoPixelData, UnsupportedTransferSyntax (no installed decoder,
    or a photometric interpretation the reader does not handle) and CorruptPixelData (native pixel
    data shorter than rows x columns x samples x frames, detectable from the header alone).
    """
    path = Path(path)
    with no_warnings(), _open(path) as fh:
        header, _ = _scan(fh, path, pseudonymizer)
    return header


def _wanted(frames: Iterable[int] | None, n_frames: int, path: Path) -> list[int]:
    if frames is None:
        return list(range(n_frames))
    wanted = [int(i) for i in frames]
    bad = [i for i in wanted if not 0 <= i < n_frames]
    if bad:
        raise FrameOutOfRange(path, f"frame indices {bad[:5]} outside the {n_frames} frames of the file")
    return wanted


def read_dicom(
    path: str | Path,
    frames: Iterable[int] | None = None,
    *,
    pseudonymizer: Pseudonymizer | None = None,
    min_frames: int = 1,
    min_side: int | None = None,
) -> Clip:
    """Decode a DICOM ultrasound file to a `Clip` (uint8 `[T, H, W, C]`, RGB, C = 1 or 3).

    frames: source frame indices to decode, in the order wanted (None = all). Only these frames
    are read and decoded. JPEG Baseline / 8-bit Extended frames are decoded by libjpeg-turbo
    straight to grey or RGB (`echofm.io.jpeg_frames`), everything else through pydicom.
    min_side: allow those JPEG frames to be decoded downscaled in the DCT domain (by 2, 4 or 8)
    while their longer side stays >= min_side pixels; the clip's regions are then in the
    downscaled pixel grid. None (default): full resolution.
    Raises what `scan_dicom` raises, TooFewFrames when the file has fewer than `min_frames`
    frames, CorruptPixelData when a frame fails to decode, and ValueError for indices outside the
    file (a caller error).
    """
    path = Path(path)
    with no_warnings(), _open(path) as fh:
        header, ds = _scan(fh, path, pseudonymizer)
        if header.n_frames < min_frames:
            raise TooFewFrames(path, f"{header.n_frames} frame(s), at least {min_frames} needed")
        wanted = _wanted(frames, header.n_frames, path)
        unique = sorted(set(wanted))
        decoded, scale = _decode(fh, path, ds, header, unique, min_side)
    position = {index: k for k, index in enumerate(unique)}
    stack = decoded[[position[i] for i in wanted]] if wanted != unique else decoded
    return Clip(
        frames=stack,
        fps=header.fps,
        fps_source=header.fps_source,
        frame_indices=np.asarray(wanted, dtype=np.int64),
        n_frames_source=header.n_frames,
        meta=dict(header.meta),
        source=path,
        regions=_scaled_regions(header.regions, scale),
        pseudonyms=dict(header.pseudonyms),
    )


def _scaled_regions(regions: list[UltrasoundRegion], scale: int) -> list[UltrasoundRegion]:
    """Regions in the pixel grid of frames downscaled by `scale` (physical size per pixel grows)."""
    if scale == 1:
        return list(regions)

    def grown(delta: float | None) -> float | None:
        return None if delta is None else delta * scale

    return [
        replace(
            region,
            x0=region.x0 // scale,
            y0=region.y0 // scale,
            x1=region.x1 // scale,
            y1=region.y1 // scale,
            physical_delta_x=grown(region.physical_delta_x),
            physical_delta_y=grown(region.physical_delta_y),
        )
        for region in regions
    ]


def _decode(
    fh: BinaryIO, path: Path, ds: Dataset, header: DicomHeader, indices: list[int], min_side: int | None
) -> tuple[np.ndarray, int]:
    """Decode `indices` (sorted, unique) to uint8 `[len(indices), H, W, C]` and the factor the
    frames were downscaled by (1 unless the JPEG path honoured `min_side`)."""
    if indices and jpeg_fast_path_handles(header):
        frames = decode_jpeg_frames(fh, path, header, indices, min_side=min_side)
        if frames is not None:
            return frames, downscale_factor(header.rows, header.columns, min_side)
    return _decode_with_pydicom(fh, path, ds, header, indices), 1


def _decode_with_pydicom(fh: BinaryIO, path: Path, ds: Dataset, header: DicomHeader, indices: list[int]) -> np.ndarray:
    """Decode `indices` (sorted, unique) through pydicom to uint8 `[len(indices), H, W, C]`."""
    out = np.empty((len(indices), header.rows, header.columns, header.channels), dtype=np.uint8)
    if not indices:
        return out
    lut = palette_lut(ds) if header.photometric == PALETTE else None
    ts = uid.UID(header.transfer_syntax)
    fh.seek(0)
    src: BinaryIO | Dataset = fh
    options: dict[str, Any] = {"transfer_syntax_uid": ts, "decoding_plugin": decoding_plugin(ts, header.bits_stored) or ""}
    if ts == uid.DeflatedExplicitVRLittleEndian:
        # The deflated stream cannot be decoded at an offset: inflate the whole dataset first.
        src = pydicom.dcmread(fh)
        options = {}
    all_frames = indices == list(range(header.n_frames))
    count = 0
    try:
        frame_iter: Iterable[np.ndarray]
        if header.photometric == "YBR_FULL_422" and not ts.is_encapsulated:
            # pydicom 3.0 switches its decode runner to YBR_FULL after expanding the first native
            # 4:2:2 frame and then mis-sizes every later frame: decode one frame per runner.
            frame_iter = (next(iter_pixels(src, indices=[i], raw=False, **options)) for i in indices)
        else:
            frame_iter = iter_pixels(src, indices=None if all_frames else indices, raw=False, **options)
        for k, frame in enumerate(frame_iter):
            if k >= len(indices):
                break  # JPEG streams may hold more frames than NumberOfFrames says
            out[k] = to_display(
                frame, photometric=header.photometric, bits_stored=header.bits_stored, signed=header.signed, lut=lut
            )
            count = k + 1
    except MemoryError:
        raise
    except Exception as exc:  # decoder plugins raise anything from ValueError to RuntimeError
        raise CorruptPixelData(path, f"cannot decode {header.transfer_syntax_name} pixel data ({type(exc).__name__})") from None
    if count < len(indices):
        raise CorruptPixelData(path, f"pixel data holds {count} decodable frames, {header.n_frames} declared")
    return out
