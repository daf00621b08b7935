"""A media file's header and its decoded frames, the same for DICOM and MP4/AVI.

Ingestion reads the header first (QC, view, windows need no pixels), then decodes only the
frames the windows use; both go through here, so the batch, the records and the benchmarks
share one description of a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from echofm.ingest.discover import DiscoveredFile
from echofm.io.clip import Clip

if TYPE_CHECKING:
    from echofm.io.deid import Pseudonymizer


@dataclass(frozen=True)
class FileHeader:
    """What a file's header says, the same for DICOM and video.

    height/width in source pixels, fps in frames/s, heart_rate_bpm when the header records one;
    meta/pseudonyms as in `Clip` (allow-listed, never PHI).
    """

    source_format: str
    n_frames: int
    fps: float
    fps_source: str
    height: int
    width: int
    heart_rate_bpm: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    pseudonyms: dict[str, str] = field(default_factory=dict)


def read_header(item: DiscoveredFile, pseudonymizer: Pseudonymizer | None) -> FileHeader:
    """Header of a discovered media file without decoding pixels (raises the readers' errors)."""
    if item.source_format == "dicom":
        from echofm.io.dicom import scan_dicom

        dicom = scan_dicom(item.path, pseudonymizer=pseudonymizer)
        return FileHeader(
            source_format="dicom",
            n_frames=dicom.n_frames,
            fps=dicom.fps,
            fps_source=dicom.fps_source,
            height=dicom.rows,
            width=dicom.columns,
            heart_rate_bpm=dicom.heart_rate_bpm,
            meta=dict(dicom.meta),
            pseudonyms=dict(dicom.pseudonyms),
        )
    from echofm.io.video import probe_video

    video = probe_video(item.path)
    return FileHeader(
        source_format=item.source_format,
        n_frames=video.n_frames,
        fps=video.fps,
        fps_source=video.fps_source,
        height=video.height,
        width=video.width,
        meta={"container": video.container, "lossy": True},
    )


def decode_frames(item: DiscoveredFile, indices: np.ndarray, *, min_side: int | None = None) -> Clip:
    """Decode only the source frames `indices` (sorted, unique) of a media file (pseudonyms come
    from `read_header`, not from here). `min_side`: see `read_dicom` (JPEG DICOM frames may come
    back downscaled in the DCT domain, longer side still >= min_side)."""
    if item.source_format == "dicom":
        from echofm.io.dicom import read_dicom

        return read_dicom(item.path, indices.tolist(), min_side=min_side)
    from echofm.io.video import read_video

    return read_video(item.path, indices.tolist())
