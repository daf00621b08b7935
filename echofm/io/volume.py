"""NIfTI and MetaImage (MHD/RAW) 2D+t images, read as the same `Clip` as DICOM and video.

CAMUS publishes its cines this way: one image volume per sequence whose first two voxel axes are
the image columns and rows and whose third is time (`patientNNNN_4CH_half_sequence.nii.gz`, or
`.mhd` + `.raw` in the older release), and label volumes of the same geometry (`..._gt`).

Libraries, chosen by measurement and licence (`echofm bench volume`; docs/datasets.md, "Reading
NIfTI and MHD"): NIfTI headers through nibabel (MIT, 12 MB installed), gzipped voxels inflated by
ISA-L (already the shard codec's), MetaImage by the small reader below (a text header and raw or
zlib bytes, read with numpy). SimpleITK (Apache-2.0) inflates a CAMUS-sized `.nii.gz` faster
(9.5 against 34 ms) but installs 276 MB; on uncompressed and `.zraw` data the two are level.

Geometry: voxel (i, j, t) becomes frame t, row j, column i, as SimpleITK's arrays order them.
Pixels that are not square (a `pixdim` / `ElementSpacing` that differs between i and j) are
resampled to square pixels at the finer spacing, images linearly and label volumes by nearest
neighbour, so that resizing to the clip size keeps the heart's proportions and masks stay aligned.
A volume's time step is used as the frame rate only when the NIfTI header gives time units;
MetaImage has none, so its clips use the default rate (`echofm.io.fps.DEFAULT_FPS`).
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from isal import igzip, isal_zlib

from echofm.io.clip import Clip
from echofm.io.errors import UnreadableVolume
from echofm.io.fps import DEFAULT_FPS

VOLUME_FORMATS: tuple[str, ...] = ("nifti", "mhd")
_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES = 348, 540
_GZIP_MAGIC = b"\x1f\x8b"
_MHD_KEY = re.compile(rb"^\s*(ObjectType|NDims|DimSize|ElementType|ElementSpacing)\s*=", re.MULTILINE)
MHD_DATA_SUFFIXES = (".raw", ".zraw")
_MET_TYPES: dict[str, str] = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2", "MET_UINT": "u4",
    "MET_INT": "i4", "MET_ULONG_LONG": "u8", "MET_LONG_LONG": "i8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_TIME_UNITS_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}
_SQUARE_TOLERANCE = 0.01  # relative spacing difference below which pixels count as square


@dataclass(frozen=True)
class VolumeHeader:
    """What a volume's header says. height/width after square-pixel resampling (pixels);
    spacing_mm: (row, column) spacing of the file's own grid; fps in frames/s."""

    path: Path
    volume_format: str
    n_frames: int
    height: int
    width: int
    fps: float
    fps_source: str
    spacing_mm: tuple[float, float]


def _nifti_magic(header: bytes) -> bool:
    if len(header) >= _NIFTI1_HEADER_BYTES and header[344:347] in (b"n+1", b"ni1"):
        return int.from_bytes(header[:4], "little") == 348 or int.from_bytes(header[:4], "big") == 348
    return len(header) >= 8 and header[4:7] in (b"n+2", b"ni2") and int.from_bytes(header[:4], "little") == 540


def sniff_volume(path: Path, head: bytes) -> str | None:
    """"nifti" | "mhd" | None from a file's first bytes (a gzipped file is opened to look inside)."""
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as handle:
                inner = handle.read(_NIFTI1_HEADER_BYTES)
        except (OSError, EOFError, zlib.error):
            return None
        return "nifti" if _nifti_magic(inner) else None
    if _nifti_magic(head) or (len(head) < _NIFTI1_HEADER_BYTES and head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c")
                              and _nifti_magic(_read_head(path, _NIFTI1_HEADER_BYTES))):
        return "nifti"
    return "mhd" if _MHD_KEY.search(head) else None


def _read_head(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def is_volume_data(path: Path) -> bool:
    """True for the `.raw`/`.zraw` voxel file of a MetaImage header beside it (same stem):
    ingested with its `.mhd`, not on its own."""
    return path.suffix.lower() in MHD_DATA_SUFFIXES and path.with_suffix(".mhd").is_file()


# --- MetaImage -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _MetaImage:
    dims: tuple[int, ...]  # x, y[, t]
    dtype: np.dtype
    channels: int
    spacing: tuple[float, ...]
    compressed: bool
    data_file: Path | None  # None: the voxels follow the header in the same file
    header_bytes: int


def _parse_mhd(path: Path) -> _MetaImage:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableVolume(path, f"cannot read the header ({type(exc).__name__})") from exc
    fields: dict[str, str] = {}
    offset = 0
    for line in raw.splitlines(keepends=True):
        offset += len(line)
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    try:
        dims = tuple(int(v) for v in fields["DimSize"].split())
        dtype = np.dtype(_MET_TYPES[fields["ElementType"]])
        data_name = fields["ElementDataFile"]
    except (KeyError, ValueError) as exc:
        raise UnreadableVolume(path, "MetaImage header lacks DimSize, a known ElementType or ElementDataFile") from exc
    msb = fields.get("ElementByteOrderMSB", fields.get("BinaryDataByteOrderMSB", "False")).lower() == "true"
    dtype = dtype.newbyteorder(">" if msb else "<")
    spacing = tuple(float(v) for v in fields.get("ElementSpacing", " ".join("1" for _ in dims)).split())
    if data_name.upper() == "LIST" or "%" in data_name:
        raise UnreadableVolume(path, "MetaImage slice lists are not supported")
    data_file = None if data_name.upper() == "LOCAL" else path.parent / data_name
    return _MetaImage(dims=dims, dtype=dtype, channels=int(fields.get("ElementNumberOfChannels", "1")),
                      spacing=spacing, compressed=fields.get("CompressedData", "False").lower() == "true",
                      data_file=data_file, header_bytes=offset)


def _mhd_voxels(path: Path, meta: _MetaImage) -> np.ndarray:
    """Voxels as `[T, H, W]` (or `[T, H, W, C]`) in file order (x fastest)."""
    source = meta.data_file or path
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise UnreadableVolume(path, f"cannot read the voxel data ({type(exc).__name__})") from exc
    if meta.data_file is None:
        data = data[meta.header_bytes:]
    if meta.compressed:
        try:
            data = isal_zlib.decompress(data)
        except (isal_zlib.error, zlib.error) as exc:
            raise UnreadableVolume(path, "compressed voxel data is corrupt") from exc
    shape = tuple(reversed(meta.dims)) + ((meta.channels,) if meta.channels > 1 else ())
    expected = int(np.prod(shape)) * meta.dtype.itemsize
    if len(data) < expected:
        raise UnreadableVolume(path, f"voxel data holds {len(data)} bytes, the header needs {expected}")
    return np.frombuffer(data[:expected], dtype=meta.dtype).reshape(shape)


# --- NIfTI -----------------------------------------------------------------------------------

def _nifti_image(path: Path):  # noqa: ANN202 - a nibabel image
    import nibabel

    try:
        return nibabel.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises several unrelated types for bad files
        raise UnreadableVolume(path, f"nibabel cannot read the header ({type(exc).__name__})") from exc


def _nifti_time_axis_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(X, Y, T) of a NIfTI shape: 2D is one frame; a 4D image with one slice keeps its 4th axis as time."""
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) == 3:
        return shape
    if len(shape) == 4 and shape[2] == 1:
        return shape[0], shape[1], shape[3]
    raise ValueError(f"shape {shape} is not 2D+t")


def _nifti_fps(image) -> tuple[float, str]:  # noqa: ANN001
    zooms = image.header.get_zooms()
    _, time_unit = image.header.get_xyzt_units()
    axis = 3 if len(image.shape) == 4 else 2
    if time_unit in _TIME_UNITS_TO_S and len(zooms) > axis and zooms[axis] > 0:
        return 1.0 / (float(zooms[axis]) * _TIME_UNITS_TO_S[time_unit]), "volume_header"
    return DEFAULT_FPS, "default"


def _inflated_image(path: Path, image):  # noqa: ANN001, ANN202 - nibabel images
    """A gzipped NIfTI re-opened from its bytes inflated by ISA-L (the header was already read
    lazily by `nibabel.load`): 1.8x faster than nibabel's own gzip stream on a CAMUS sequence."""
    import nibabel

    with open(path, "rb") as handle:
        if handle.read(2) != _GZIP_MAGIC:
            return image
        handle.seek(0)
        raw = igzip.decompress(handle.read())
    image_class = nibabel.Nifti2Image if isinstance(image, nibabel.Nifti2Image) else nibabel.Nifti1Image
    return image_class.from_bytes(raw)


def _nifti_voxels(path: Path, image) -> np.ndarray:  # noqa: ANN001
    try:
        data = np.asanyarray(_inflated_image(path, image).dataobj)
    except Exception as exc:  # noqa: BLE001
        raise UnreadableVolume(path, f"voxel data cannot be decoded ({type(exc).__name__})") from exc
    x, y, t = _nifti_time_axis_shape(data.shape)
    return np.ascontiguousarray(data.reshape(x, y, t, order="F").transpose(2, 1, 0))


# --- common ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Volume:
    voxels_fn: object  # () -> [T, H, W(, C)] in the file's grid
    n_frames: int
    rows: int
    columns: int
    spacing: tuple[float, float]  # row, column (mm)
    fps: float
    fps_source: str


def _open(path: Path, volume_format: str) -> _Volume:
    if volume_format == "nifti":
        image = _nifti_image(path)
        try:
            x, y, t = _nifti_time_axis_shape(tuple(image.shape))
        except ValueError as exc:
            raise UnreadableVolume(path, str(exc)) from exc
        zooms = image.header.get_zooms()
        fps, fps_source = _nifti_fps(image)
        return _Volume(lambda: _nifti_voxels(path, image), t, y, x, (float(zooms[1]), float(zooms[0])), fps, fps_source)
    meta = _parse_mhd(path)
    if len(meta.dims) not in (2, 3):
        raise UnreadableVolume(path, f"DimSize {meta.dims} is not 2D+t")
    x, y = meta.dims[0], meta.dims[1]
    t = meta.dims[2] if len(meta.dims) == 3 else 1
    spacing = (meta.spacing[1], meta.spacing[0]) if len(meta.spacing) >= 2 else (1.0, 1.0)
    return _Volume(lambda: _mhd_voxels(path, meta).reshape(t, y, x, *(() if meta.channels == 1 else (meta.channels,))),
                   t, y, x, spacing, DEFAULT_FPS, "default")


def _square_shape(rows: int, columns: int, spacing: tuple[float, float]) -> tuple[int, int]:
    row_mm, col_mm = spacing
    if row_mm <= 0 or col_mm <= 0 or abs(row_mm - col_mm) <= _SQUARE_TOLERANCE * max(row_mm, col_mm):
        return rows, columns
    finest = min(row_mm, col_mm)
    return max(1, round(rows * row_mm / finest)), max(1, round(columns * col_mm / finest))


def _resample(frames: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    if frames.shape[1:3] == shape:
        return frames
    import cv2

    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = [cv2.resize(frame, (shape[1], shape[0]), interpolation=interpolation) for frame in frames]
    return np.stack([f if f.ndim == frames.ndim - 1 else f[..., None] for f in out])


def _to_uint8(voxels: np.ndarray) -> np.ndarray:
    """Intensities as uint8: kept when already 8-bit, else the volume's range mapped to 0..255."""
    if voxels.dtype == np.uint8:
        return voxels
    values = voxels.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip((values - low) * scale + 0.5, 0, 255).astype(np.uint8)


def probe_volume(path: str | Path, volume_format: str) -> VolumeHeader:
    """Header of a NIfTI / MHD file without reading voxels; raises `UnreadableVolume`."""
    path = Path(path)
    volume = _open(path, volume_format)
    height, width = _square_shape(volume.rows, volume.columns, volume.spacing)
    return VolumeHeader(path=path, volume_format=volume_format, n_frames=volume.n_frames, height=height,
                        width=width, fps=volume.fps, fps_source=volume.fps_source, spacing_mm=volume.spacing)


def read_volume(path: str | Path, volume_format: str, indices: list[int] | None = None) -> Clip:
    """Frames `indices` (all when None) as uint8 `[T, H, W, C]` at square pixels."""
    path = Path(path)
    volume = _open(path, volume_format)
    voxels = volume.voxels_fn()  # type: ignore[operator]
    wanted = np.arange(volume.n_frames) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(wanted) and (wanted.min() < 0 or wanted.max() >= volume.n_frames):
        raise UnreadableVolume(path, f"frames {wanted.min()}..{wanted.max()} outside 0..{volume.n_frames - 1}")
    frames = _to_uint8(voxels)[wanted]
    frames = frames if frames.ndim == 4 else frames[..., None]
    frames = _resample(frames, _square_shape(volume.rows, volume.columns, volume.spacing), nearest=False)
    return Clip(
        frames=np.ascontiguousarray(frames),
        fps=volume.fps,
        fps_source=volume.fps_source,
        frame_indices=wanted.astype(np.int64),
        n_frames_source=volume.n_frames,
        meta={"container": volume_format, "rows": int(frames.shape[1]), "columns": int(frames.shape[2])},
        source=path,
    )


def read_label_volume(path: str | Path, volume_format: str) -> np.ndarray:
    """A label volume (`..._gt`) as uint8 `[T, H, W]` on the same square-pixel grid as
    `read_volume` gives its image (nearest-neighbour resampling keeps the label values)."""
    path = Path(path)
    volume = _open(path, volume_format)
    labels = np.asarray(volume.voxels_fn())  # type: ignore[operator]
    if labels.ndim != 3:
        raise UnreadableVolume(path, "a label volume has one channel")
    if labels.min() < 0 or labels.max() > 255:
        raise UnreadableVolume(path, "label values outside 0..255")
    shape = _square_shape(volume.rows, volume.columns, volume.spacing)
    return _resample(labels.astype(np.uint8)[..., None], shape, nearest=True)[..., 0]
