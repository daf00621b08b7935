"""A media file's header and its decoded frames, the same for DICOM, MP4/AVI, NIfTI/MHD and PNG.

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
from echofm.io.still import STILL_FORMATS
from echofm.io.volume import VOLUME_FORMATS

if TYPE_CHECKING:
    from echofm.io.deid import Pseudonymizer


@dataclass(frozen=True)
class FileHeader:
    """What a file's header says, the same for DICOM and video.

    height/width in source pixels, fps in frames/s, heart_rate_bpm when the header records one;
    meta/pseudonyms as in `Clip` (allow-listed, never PHI). still: a single image (PNG), which
    ingestion repeats into a clip (`n_frames` is 1, `fps` nominal).
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
    still: bool = False


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
    if item.source_format in VOLUME_FORMATS:
        from echofm.io.volume import probe_volume

        volume = probe_volume(item.path, item.source_format)
        return FileHeader(source_format=item.source_format, n_frames=volume.n_frames, fps=volume.fps,
                          fps_source=volume.fps_source, height=volume.height, width=volume.width,
                          meta={"container": item.source_format})
    if item.source_format in STILL_FORMATS:
        from echofm.io.still import STILL_FPS, STILL_FPS_SOURCE, probe_still

        image = probe_still(item.path)
        return FileHeader(source_format=item.source_format, n_frames=1, fps=STILL_FPS, fps_source=STILL_FPS_SOURCE,
                          height=image.height, width=image.width, meta={"container": item.source_format}, still=True)
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
    if item.source_format in VOLUME_FORMATS:
        from echofm.io.volume import read_volume

        return read_volume(item.path, item.source_format, indices.tolist())
    if item.source_format in STILL_FORMATS:
        from echofm.io.still import read_still

        return read_still(item.path, indices.tolist())
    from echofm.io.video import read_video

    return read_video(item.path, indices.tolist())
