"""How a clip is stored inside a shard: one sample member `frames.<ext>`, the extension naming the codec.

Readers never need to know which codec a writer chose: `decode_clip` picks it from the member's
extension. Codecs (measured in docs/benchmarks.md, shard codec, `echofm bench codec`):

- `npy`: raw uint8 `.npy` bytes. No decode cost beyond a copy; the largest.
- `zlib`: the same `.npy` bytes deflated at level 1 (lossless). The zeroed exterior of the sector
  and the padding compress to almost nothing; speckle inside the sector compresses by how
  correlated it is (level 1: level 6 saves ~1% more for ~20% more encode time). Deflate runs in
  ISA-L (`isal`): its level 1 is ~5x faster than zlib's level 1 for the same size, and inflates
  ~2x faster; the stream is plain zlib, so any zlib reads it.
- `png`: one PNG per frame (lossless; its row filters end up about as small as `zlib`).
- `jpeg`: one JPEG per frame at quality 90 (lossy, fidelity reported as PSNR).

Multi-frame codecs (`png`, `jpeg`) pack their frames as: magic `EFM1`, uint32 frame count,
uint32 byte length of each frame, then the frames' bytes; all little-endian. The extensions are
chosen so WebDataset's default decoders leave them alone (`frames.jpgs`, not `frames.jpg`,
which it would decode as one image).

`DEFAULT_CODEC` is chosen by that measurement; see the comment where it is set.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
from isal import isal_zlib

from echofm.errors import DataError

FRAMES_PREFIX = "frames."
_PACK_MAGIC = b"EFM1"
_ZLIB_LEVEL = 1
_JPEG_QUALITY = 90


class CodecError(DataError, ValueError):
    """A clip that cannot be encoded or decoded: unknown codec, bad layout or corrupt bytes."""


@dataclass(frozen=True, kw_only=True)
class Codec:
    """One way to store `uint8 [T, H, W, C]` frames as bytes.

    extension: the sample member's extension (WebDataset key suffix), e.g. `frames.npy`.
    lossless: whether `decode(encode(x)) == x` exactly.
    """

    name: str
    extension: str
    lossless: bool
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise CodecError(
            f"frames must be uint8 [T, H, W, C] with C in (1, 3), got {getattr(frames, 'dtype', type(frames))} "
            f"{getattr(frames, 'shape', '')}"
        )
    return np.ascontiguousarray(frames)


def _npy_bytes(frames: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, frames, allow_pickle=False)
    return buffer.getvalue()


def _npy_array(data: bytes) -> np.ndarray:
    try:
        frames = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CodecError(f"not a valid .npy clip: {error}") from error
    return _check_frames(frames)


def _encode_zlib(frames: np.ndarray) -> bytes:
    return isal_zlib.compress(_npy_bytes(frames), _ZLIB_LEVEL)


def _decode_zlib(data: bytes) -> np.ndarray:
    try:
        raw = isal_zlib.decompress(data)
    except isal_zlib.error as error:
        raise CodecError(f"corrupt zlib clip: {error}") from error
    return _npy_array(raw)


def _pack(parts: list[bytes]) -> bytes:
    header = _PACK_MAGIC + struct.pack(f"<I{len(parts)}I", len(parts), *(len(p) for p in parts))
    return header + b"".join(parts)


def _unpack(data: bytes) -> list[memoryview]:
    view = memoryview(data)
    if len(view) < 8 or bytes(view[:4]) != _PACK_MAGIC:
        raise CodecError("not a packed frame sequence (bad magic)")
    (count,) = struct.unpack_from("<I", view, 4)
    offset = 8 + 4 * count
    if count < 1 or len(view) < offset:
        raise CodecError("packed frame sequence truncated in its header")
    lengths = struct.unpack_from(f"<{count}I", view, 8)
    if offset + sum(lengths) != len(view):
        raise CodecError("packed frame sequence length does not match its header")
    parts = []
    for length in lengths:
        parts.append(view[offset : offset + length])
        offset += length
    return parts


def _image_codec(ext: str, params: list[int]) -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]:
    def encode(frames: np.ndarray) -> bytes:
        parts = []
        for frame in frames:
            # OpenCV codecs expect BGR; clips are RGB. A grey frame is passed as 2-D.
            image = frame[..., 0] if frame.shape[-1] == 1 else np.ascontiguousarray(frame[..., ::-1])
            ok, buffer = cv2.imencode(ext, image, params)
            if not ok:
                raise CodecError(f"OpenCV could not encode a frame as {ext}")
            parts.append(buffer.tobytes())
        return _pack(parts)

    def decode(data: bytes) -> np.ndarray:
        frames = []
        for part in _unpack(data):
            image = cv2.imdecode(np.frombuffer(part, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise CodecError(f"corrupt {ext} frame")
            frames.append(image[..., None] if image.ndim == 2 else image[..., ::-1])
        if len({f.shape for f in frames}) != 1:
            raise CodecError("frames of one clip differ in shape")
        return np.ascontiguousarray(np.stack(frames))

    return encode, decode


def _build_registry() -> dict[str, Codec]:
    png_encode, png_decode = _image_codec(".png", [cv2.IMWRITE_PNG_COMPRESSION, 1])
    jpeg_encode, jpeg_decode = _image_codec(".jpg", [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    codecs = [
        Codec(name="npy", extension="frames.npy", lossless=True, encode=_npy_bytes, decode=_npy_array),
        Codec(name="zlib", extension="frames.npy.zlib", lossless=True, encode=_encode_zlib, decode=_decode_zlib),
        Codec(name="png", extension="frames.pngs", lossless=True, encode=png_encode, decode=png_decode),
        Codec(name="jpeg", extension="frames.jpgs", lossless=False, encode=jpeg_encode, decode=jpeg_decode),
    ]
    return {c.name: c for c in codecs}


CODECS: Mapping[str, Codec] = _build_registry()
_BY_EXTENSION: Mapping[str, Codec] = {c.extension: c for c in CODECS.values()}

# Chosen by `echofm bench codec` (docs/benchmarks.md, shard codec; figures per core, 32x224x224 clips):
# zlib is exact and stores a masked grey clip in 0.19 of the raw bytes on synthetic echo (0.59 on
# uncorrelated speckle, the worst case): 88 GB instead of 466 GB for 290K grey clips, and as much
# less disk and network read per epoch. It decodes 136-232 grey clips/s (91 colour), so a few
# loader workers feed one GPU; encoding costs ingestion 12-33 ms per clip. Being exact, training
# sees the pixels ingestion wrote and `content_sha256` matches what `load_clip` returns. JPEG
# q90 is only 1.6x smaller again, lossy (38-43 dB PSNR: a second generation of loss on archives
# that were JPEG already) and no faster to decode (2x slower in colour); PNG is about as small
# but decodes 2.5-3x slower; raw npy decodes 6-15x faster at 2-5x the storage and reads.
DEFAULT_CODEC = "zlib"


def get_codec(name: str) -> Codec:
    """The codec registered as `name`; `CodecError` names the choices otherwise."""
    try:
        return CODECS[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; choose from {sorted(CODECS)}") from None


def encode_clip(frames: np.ndarray, codec: str = DEFAULT_CODEC) -> tuple[str, bytes]:
    """Encode uint8 `[T, H, W, C]` frames; returns (sample member extension, bytes).

    Raises `CodecError` for an unknown codec or frames of another dtype/layout.
    """
    chosen = get_codec(codec)
    return chosen.extension, chosen.encode(_check_frames(frames))


def decode_clip(sample: Mapping[str, object]) -> np.ndarray:
    """Decode the clip in one shard sample: uint8 `[T, H, W, C]`.

    sample: member extension -> bytes, as WebDataset yields it (other members such as
    `__key__` and `meta.json` are ignored). Exactly one `frames.*` member must be present and its
    extension must name a registered codec; `CodecError` otherwise.
    """
    members = [k for k in sample if k.startswith(FRAMES_PREFIX)]
    if len(members) != 1:
        raise CodecError(f"a sample holds exactly one frames.* member, found {sorted(members)}")
    (extension,) = members
    codec = _BY_EXTENSION.get(extension)
    if codec is None:
        raise CodecError(f"no codec for member {extension!r}; known: {sorted(_BY_EXTENSION)}")
    data = sample[extension]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"member {extension!r} is {type(data).__name__}, expected raw bytes")
    return codec.decode(bytes(data))
