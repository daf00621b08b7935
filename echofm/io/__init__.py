"""Echo archive I/O: DICOM and video readers, the clip object, de-identification."""

from echofm.io.clip import Clip, UltrasoundRegion
from echofm.io.deid import Pseudonymizer, load_or_create_secret, technical_metadata
from echofm.io.dicom import DicomHeader, dicom_is_supported, read_dicom, scan_dicom
from echofm.io.errors import (
    CorruptPixelData,
    EchoIOError,
    NoPixelData,
    NotDicom,
    NotUltrasound,
    TooFewFrames,
    UnreadableVideo,
    UnsupportedTransferSyntax,
)
from echofm.io.video import VideoHeader, probe_video, read_video

__all__ = [
    "Clip",
    "CorruptPixelData",
    "DicomHeader",
    "EchoIOError",
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
    "load_or_create_secret",
    "probe_video",
    "read_dicom",
    "read_video",
    "scan_dicom",
    "technical_metadata",
]
