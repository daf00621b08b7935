"""`echofm bench volume`: reading CAMUS-style NIfTI and MetaImage sequences, the project's readers
against nibabel's bare load and SimpleITK.

One CAMUS-sized half sequence (uint8, default 20 frames of 843 x 583 pixels, smooth speckle so
that gzip compresses it about as much as a real one) is written in every layout CAMUS releases
have used: `.nii.gz`, `.nii`, `.mhd` + `.raw` and `.mhd` + `.zraw`. Each reader decodes every
file to a `[T, H, W]` array; the arrays are checked equal voxel for voxel, and the median wall
time over `--repeats` reads is printed with its ratio to SimpleITK's. The footprint (bytes
installed) and declared licence of each library come from its installed distribution.

SimpleITK is not a dependency: it is measured when it is installed (`pip install SimpleITK`);
without it the table says so and prints the other readers only.

    echofm bench volume --repeats 15
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

LAYOUTS: tuple[str, ...] = ("nii.gz", "nii", "mhd+raw", "mhd+zraw")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=20, help="frames of the half sequence")
    parser.add_argument("--rows", type=int, default=843)
    parser.add_argument("--columns", type=int, default=583)
    parser.add_argument("--repeats", type=int, default=15, help="reads per reader and layout (median)")
    parser.add_argument("--seed", type=int, default=0)


def speckle_sequence(frames: int, rows: int, columns: int, seed: int) -> np.ndarray:
    """uint8 `[T, H, W]`: blurred noise under a dark border, compressing like an echo cine."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((frames, rows, columns), dtype=np.uint8)
    for t in range(frames):
        noise = rng.gamma(2.0, 40.0, size=(rows, columns)).astype(np.float32)
        out[t] = np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5), 0, 255).astype(np.uint8)
    out[:, : rows // 8] = 0  # the black band above a fan
    return out


def write_layouts(volume: np.ndarray, folder: Path) -> dict[str, Path]:
    """The sequence `[T, H, W]` in each of `LAYOUTS`; returns layout -> header path."""
    import nibabel

    t, h, w = volume.shape
    paths: dict[str, Path] = {}
    # NIfTI voxel axes are (column, row, time), as CAMUS stores them.
    image = nibabel.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine=np.eye(4))
    for suffix in ("nii.gz", "nii"):
        paths[suffix] = folder / f"sequence.{suffix}"
        nibabel.save(image, str(paths[suffix]))
    for layout, data_suffix, compressed in (("mhd+raw", ".raw", False), ("mhd+zraw", ".zraw", True)):
        header = folder / f"sequence_{data_suffix[1:]}.mhd"
        raw = np.ascontiguousarray(volume).tobytes()
        data = zlib.compress(raw, 6) if compressed else raw
        header.with_suffix(data_suffix).write_bytes(data)
        lines = ["ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
                 f"CompressedData = {compressed}", *([f"CompressedDataSize = {len(data)}"] if compressed else []),
                 "ElementSpacing = 1 1 1", f"DimSize = {w} {h} {t}", "ElementType = MET_UCHAR",
                 f"ElementDataFile = {header.with_suffix(data_suffix).name}"]
        header.write_text("\n".join(lines) + "\n")
        paths[layout] = header
    return paths


def _echofm_reader(path: Path, layout: str) -> np.ndarray:
    from echofm.io.volume import read_volume

    return read_volume(path, "nifti" if layout.startswith("nii") else "mhd").frames[..., 0]


def _nibabel_reader(path: Path, layout: str) -> np.ndarray | None:
    if not layout.startswith("nii"):
        return None
    import nibabel

    data = np.asanyarray(nibabel.load(str(path)).dataobj)
    # An uncompressed file comes back memory-mapped: copy, so that the voxels are really read.
    return np.array(data.transpose(2, 1, 0), order="C", copy=True)


def _simpleitk_reader(path: Path, layout: str) -> np.ndarray:
    import SimpleITK

    return SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(path)))


def footprint(distribution: str) -> tuple[str, str]:
    """(installed size in MB, declared licence) of an installed distribution, or ("-", "-")."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return "-", "-"
    size = 0
    for file in dist.files or ():
        located = Path(str(dist.locate_file(file)))
        if located.is_file():
            size += located.stat().st_size
    meta = dist.metadata
    licence = meta.get("License-Expression") or ""
    if not licence:
        classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or () if c.startswith("License ::")]
        licence = ", ".join(classifiers) or (meta.get("License") or "-").splitlines()[0][:40]
    return f"{size / 1e6:.0f}", licence


def _median_ms(read: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall, CPU of the whole process) milliseconds of one read; CPU above wall means
    the library decoded on several threads."""
    read()  # warm the page cache and the library's lazy imports
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        read()
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def run(args: argparse.Namespace) -> int:
    volume = speckle_sequence(args.frames, args.rows, args.columns, args.seed)
    readers: dict[str, Callable[[Path, str], np.ndarray | None]] = {
        "echofm.io.volume": _echofm_reader,
        "nibabel (bare load)": _nibabel_reader,
    }
    if importlib.util.find_spec("SimpleITK") is not None:
        readers["SimpleITK"] = _simpleitk_reader
    with tempfile.TemporaryDirectory(prefix="echofm-bench-volume-") as tmp:
        paths = write_layouts(volume, Path(tmp))
        sizes = {layout: sum(f.stat().st_size for f in Path(tmp).iterdir()
                             if f == paths[layout] or (layout.startswith("mhd") and f.stem == paths[layout].stem))
                 for layout in LAYOUTS}
        print(f"sequence {args.frames} x {args.rows} x {args.columns} uint8, median of {args.repeats} reads, wall / CPU ms")
        print(f"{'layout':10s} {'MB':>6s} " + " ".join(f"{name:>20s}" for name in readers) + "  equal")
        for layout in LAYOUTS:
            cells, equal = [], True
            for name, reader in readers.items():
                array = reader(paths[layout], layout)
                if array is None:
                    cells.append(f"{'-':>20s}")
                    continue
                equal &= bool(np.array_equal(array, volume))
                wall, cpu = _median_ms(lambda r=reader: r(paths[layout], layout), args.repeats)
                cells.append(f"{f'{wall:.1f} / {cpu:.1f}':>20s}")
            print(f"{layout:10s} {sizes[layout] / 1e6:6.2f} " + " ".join(cells) + f"  {'yes' if equal else 'NO'}")
    if "SimpleITK" not in readers:
        print("SimpleITK is not installed: `pip install SimpleITK` to measure it as well")
    print(f"{'library':12s} {'installed MB':>12s}  licence")
    for distribution in ("nibabel", "SimpleITK"):
        size, licence = footprint(distribution)
        print(f"{distribution:12s} {size:>12s}  {licence}")
    return 0
