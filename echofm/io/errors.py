"""Why a file could not be read: one exception class per failure a user acts on differently.

Every error carries the file it concerns (`.path`) and a stable snake_case `reason`, which is
what the ingestion manifest records for a failed file. The message itself is the detail and the
reason, never the path: PACS exports name folders and files after the patient, and an error
message travels to logs, stderr and the Prefect database (`echofm.boundary`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from echofm.errors import EchoFMError


class EchoIOError(EchoFMError):
    """Base class: a file that cannot become a clip."""

    reason: ClassVar[str] = "io_error"

    def __init__(self, path: str | Path | None, detail: str) -> None:
        self.path = Path(path) if path is not None else None
        self.detail = detail
        super().__init__(f"{detail} [{self.reason}]")


class NotDicom(EchoIOError):
    """The file is neither a DICOM file with a preamble nor a parseable DICOM header."""

    reason = "not_dicom"


class NotUltrasound(EchoIOError):
    """A valid DICOM whose modality / SOP class is not ultrasound (CT, MR, a report...)."""

    reason = "not_ultrasound"


class UnsupportedTransferSyntax(EchoIOError):
    """Pixel data compressed with a transfer syntax no installed decoder handles."""

    reason = "unsupported_transfer_syntax"


class NoPixelData(EchoIOError):
    """A DICOM without a Pixel Data element (a structured report, a presentation state...)."""

    reason = "no_pixel_data"


class CorruptPixelData(EchoIOError):
    """Pixel data shorter than the header promises, or a compressed frame that fails to decode."""

    reason = "corrupt_pixel_data"


class TooFewFrames(EchoIOError):
    """Fewer frames than the caller needs (a single still image where a cine is expected)."""

    reason = "too_few_frames"


class FrameOutOfRange(EchoIOError):
    """Frame indices asked for that the file does not have (negative, or past its last frame)."""

    reason = "frame_out_of_range"


class UnreadableVideo(EchoIOError):
    """An MP4/AVI container OpenCV cannot open or decode."""

    reason = "unreadable_video"


class UnreadableVolume(EchoIOError):
    """A NIfTI or MetaImage (MHD/RAW) file whose header or voxel data cannot be read as a 2D+t image."""

    reason = "unreadable_volume"


class UnreadableImage(EchoIOError):
    """A still image (PNG) that cannot be decoded."""

    reason = "unreadable_image"
