"""Echo archive I/O: DICOM and video readers, the clip object, de-identification."""

from __future__ import annotations

import importlib
from typing import Any

# Where each public name lives. Resolved on first use, so importing a light submodule
# (`echofm.io.views`, `echofm.io.errors`) does not load pydicom and OpenCV.
_EXPORTS: dict[str, str] = {
    "Clip": "clip",
    "UltrasoundRegion": "clip",
    "Pseudonymizer": "deid",
    "keyed_digest": "deid",
    "load_secret": "deid",
    "source_id": "deid",
    "technical_metadata": "deid",
    "DicomHeader": "dicom",
    "dicom_is_supported": "dicom",
    "read_dicom": "dicom",
    "scan_dicom": "dicom",
    "CorruptPixelData": "errors",
    "EchoIOError": "errors",
    "FrameOutOfRange": "errors",
    "NoPixelData": "errors",
    "NotDicom": "errors",
    "NotUltrasound": "errors",
    "TooFewFrames": "errors",
    "UnreadableVideo": "errors",
    "UnsupportedTransferSyntax": "errors",
    "VideoHeader": "video",
    "probe_video": "video",
    "read_video": "video",
}

__all__ = [
    "Clip",
    "CorruptPixelData",
    "DicomHeader",
    "EchoIOError",
    "FrameOutOfRange",
    "NoPixelData",
    "NotDicom",
    "NotUltrasound",
    "Pseudonymizer",
    "TooFewFrames",
    "UltrasoundRegion",
    "UnreadableVideo",
    "UnsupportedTransferSyntax",
    "VideoHeader",
    "dicom_is_supported",
    "keyed_digest",
    "load_secret",
    "probe_video",
    "read_dicom",
    "read_video",
    "scan_dicom",
    "source_id",
    "technical_metadata",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"echofm.io.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'echofm.io' has no attribute {name!r}")
