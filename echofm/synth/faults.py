"""Broken and off-target files that real archives contain, for the `--faults` part of the archive.

Each writer produces one kind of file that ingestion must reject or fail cleanly on: a DICOM whose
pixel data is cut short, a zero-byte file, a CT image among the echoes, an MP4 whose header is
followed by garbage, a text export saved with a .dcm name, and an exact duplicate.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom import uid as dcm_uid

from echofm.synth.containers import CT_IMAGE_STORAGE, UltrasoundHeader, build_us_dataset

FAULT_KINDS: tuple[str, ...] = (
    "truncated",
    "empty",
    "not_ultrasound",
    "single_frame",
    "corrupt_video",
    "duplicate",
    "not_dicom",
    "frozen",
    "blank",
)


def truncate_file(path: Path, keep_fraction: float) -> int:
    """Cut `path` to `keep_fraction` of its size (the pixel data is at the end of a DICOM). Returns the new size."""
    if not 0.0 < keep_fraction < 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1), got {keep_fraction}")
    size = path.stat().st_size
    new_size = int(size * keep_fraction)
    with path.open("r+b") as f:
        f.truncate(new_size)
    return new_size


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_not_dicom(path: Path) -> None:
    """A text export with a .dcm name: no preamble, no DICM marker, no dataset."""
    path.write_text(
        "ECHO REPORT EXPORT\r\nThis file is a text export of a measurement worksheet, not an image.\r\n"
        "LVEF (biplane): see report\r\n",
        encoding="ascii",
    )


def write_ct(path: Path, header: UltrasoundHeader, rng: np.random.Generator, size: int = 256) -> None:
    """A single-slice CT image (int16 Hounsfield units with rescale) carrying the patient's PHI."""
    ds = build_us_dataset(header, 1, sop_class=CT_IMAGE_STORAGE)
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    hu = np.where(r < 0.45 * size, 40, -1000).astype(np.int16)  # soft tissue disc in air
    hu = hu + rng.normal(0, 12, size=hu.shape).astype(np.int16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.KVP = 120
    ds.file_meta.TransferSyntaxUID = dcm_uid.ExplicitVRLittleEndian
    ds.PixelData = hu.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_corrupt_video(path: Path, source: Path, rng: np.random.Generator, header_bytes: int = 2048) -> None:
    """The first `header_bytes` of a valid MP4 (ftyp and the start of mdat) followed by random bytes."""
    head = source.read_bytes()[:header_bytes]
    tail = rng.integers(0, 256, size=max(4096, header_bytes * 4), dtype=np.uint8).tobytes()
    path.write_bytes(head + tail)


def write_duplicate(path: Path, source: Path) -> None:
    """An exact copy of `source` under another name, as exports made twice produce."""
    shutil.copyfile(source, path)
