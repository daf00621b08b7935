"""Small ultrasound-like cines written as DICOM and MP4, for ingestion tests.

A fan of moving speckle with a burned-in text block outside it, and PHI planted in the header.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PHI_NAME = "Zyxwv^Quentin"
PHI_ID = "MRN-99887766"
H, W = 120, 160


def fan_mask() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy > 10) & (np.abs(xx - W / 2) < (yy - 10) * 0.8) & (yy < H - 5)


def fan_cine(n_frames: int, *, seed: int = 0, frozen: bool = False) -> np.ndarray:
    """Grey speckle moving inside a fan, a static burned-in label outside it: uint8 [T, H, W]."""
    rng = np.random.default_rng(seed)
    fan = fan_mask()
    base = rng.integers(30, 220, (H, W), dtype=np.uint8)
    frames = np.empty((n_frames, H, W), np.uint8)
    for t in range(n_frames):
        speckle = base if frozen else np.roll(base, 2 * t, axis=1) // 2 + rng.integers(0, 100, (H, W), dtype=np.uint8)
        frames[t] = np.where(fan, speckle, 0)
    frames[:, 2:10, 2:40] = 255  # burned-in text block, outside the fan
    return frames


def write_dicom(
    path: Path,
    frames: np.ndarray,
    *,
    modality: str = "US",
    frame_time_ms: float = 33.3,
    body_part: str | None = None,
    patient_name: str = PHI_NAME,
    truncate: bool = False,
) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1" if modality == "US" else "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = PHI_ID
    if body_part:
        ds.BodyPartExamined = body_part
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.FrameTime = frame_time_ms
    data = frames.tobytes()
    ds.PixelData = data[: len(data) // 3] if truncate else data
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_mp4(path: Path, frames: np.ndarray, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path
