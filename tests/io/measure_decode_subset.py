"""Measure what decoding only the kept frames saves: `python -m tests.io.measure_decode_subset`.

Writes a 300-frame 600 x 800 JPEG Baseline YBR_FULL_422 cine and a 100-frame native RGB cine
(noise frames, so compression does not flatter the numbers) to a temporary directory, then times
`scan_dicom`, `read_dicom` of 32 evenly spaced frames and `read_dicom` of every frame. Not
collected by pytest (the files are ~250 MB); the figures are quoted in docs/io.md.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import uid
from pydicom.encaps import encapsulate

from echofm.io import read_dicom, scan_dicom
from tests.factories import dicom as F

ROWS, COLUMNS, KEPT = 600, 800, 32


def _jpeg_cine(path: Path, base: np.ndarray, n_frames: int) -> Path:
    fragments = []
    for t in range(n_frames):
        grey = np.roll(base, t, axis=1)
        buf = io.BytesIO()
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(buf, format="JPEG", quality=85, subsampling=1)
        fragments.append(buf.getvalue())
    ds = F.base_dataset()
    ds.FrameTime = 20.0
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = ROWS, COLUMNS, n_frames, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return F.save(ds, path, uid.JPEGBaseline8Bit)


def main() -> None:
    base = np.random.default_rng(0).integers(0, 255, (ROWS, COLUMNS), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        files = [
            (_jpeg_cine(Path(tmp) / "jpeg.dcm", base, 300), 300),
            (
                F.native_file(
                    Path(tmp) / "native.dcm", np.repeat(base[None, :, :, None], 100, 0).repeat(3, -1), photometric="RGB"
                ),
                100,
            ),
        ]
        for path, n_frames in files:
            started = time.perf_counter()
            header = scan_dicom(path)
            scan_s = time.perf_counter() - started
            kept = np.linspace(0, n_frames - 1, KEPT).round().astype(int).tolist()
            started = time.perf_counter()
            read_dicom(path, frames=kept)
            kept_s = time.perf_counter() - started
            started = time.perf_counter()
            read_dicom(path)
            all_s = time.perf_counter() - started
            size_mb = path.stat().st_size / 1e6
            print(
                f"{header.transfer_syntax_name}, {n_frames} frames {ROWS}x{COLUMNS} ({size_mb:.0f} MB): "
                f"scan {scan_s * 1000:.1f} ms, {KEPT} frames {kept_s:.2f} s, all {all_s:.2f} s ({all_s / kept_s:.1f}x)"
            )


if __name__ == "__main__":
    main()
