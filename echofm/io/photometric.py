"""From decoded DICOM pixel values to uint8 RGB / grey display values.

pydicom (with `raw=False`) already returns YBR_FULL and YBR_FULL_422 as RGB, and JPEG 2000
YBR_ICT / YBR_RCT come back as RGB from the decoder's inverse component transform. This module
therefore never converts YBR itself (converting twice is what gives other tools their green
cast); it handles what pydicom leaves raw: MONOCHROME1 inversion, PALETTE COLOR lookup and
scaling of more than 8 bits to uint8.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut

GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
# Photometric interpretations whose 3 samples pydicom returns as RGB when decoding with raw=False.
COLOUR_AS_RGB = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
PALETTE = "PALETTE COLOR"
SUPPORTED = GREY | COLOUR_AS_RGB | {PALETTE}


def scale_to_uint8(arr: np.ndarray, *, bits_stored: int, signed: bool) -> np.ndarray:
    """Map stored values linearly onto 0..255.

    The full stored range [0, 2**bits_stored - 1] (signed data first shifted up by
    2**(bits_stored - 1)) maps to [0, 255], rounding to nearest. A fixed mapping (rather than a
    per-clip min/max) keeps a frame's values independent of which other frames were decoded.
    """
    if arr.dtype == np.uint8 and bits_stored <= 8 and not signed:
        return arr
    values = arr.astype(np.int64)
    if signed:
        values += 1 << (bits_stored - 1)
    top = (1 << bits_stored) - 1
    values = np.clip(values, 0, top)
    return ((values * 255 + top // 2) // top).astype(np.uint8)


def palette_lut(ds: Dataset) -> tuple[np.ndarray, int]:
    """Return `(lut, first_mapped)`: uint8 `[n_entries, 3]` RGB table and the first stored value
    it maps (LUT descriptor value 2). Segmented tables are expanded by pydicom."""
    descriptor = ds.RedPaletteColorLookupTableDescriptor
    n_entries = int(descriptor[0]) or 65536  # PS3.3 C.7.6.3.1.5: 0 means 2**16 entries
    first_mapped = int(descriptor[1])
    entry_bits = int(descriptor[2])
    dtype = np.uint8 if n_entries <= 256 else np.uint16
    index = (np.arange(n_entries) + first_mapped).astype(dtype)
    table = np.asarray(apply_color_lut(index, ds)).reshape(n_entries, 3)
    # Some vendors declare 16-bit entries but store 8-bit values: scale by what is actually there.
    if entry_bits > 8 and int(table.max()) > 255:
        table = table >> (entry_bits - 8)
    return np.clip(table, 0, 255).astype(np.uint8), first_mapped


def to_display(
    frame: np.ndarray,
    *,
    photometric: str,
    bits_stored: int,
    signed: bool,
    lut: tuple[np.ndarray, int] | None,
) -> np.ndarray:
    """One decoded frame (`[H, W]` or `[H, W, 3]`, any integer dtype) → uint8 `[H, W, C]` RGB.

    C = 1 for MONOCHROME1/2 (MONOCHROME1 inverted so that 0 is black), C = 3 for everything else.
    `lut` comes from `palette_lut` and is required for PALETTE COLOR.
    """
    if photometric == PALETTE:
        if lut is None:
            raise ValueError("PALETTE COLOR needs the palette lookup table")
        table, first_mapped = lut
        index = np.clip(frame.astype(np.int64) - first_mapped, 0, len(table) - 1)
        return table[index]
    out = scale_to_uint8(frame, bits_stored=bits_stored, signed=signed)
    if photometric == "MONOCHROME1":
        out = 255 - out
    if out.ndim == 2:
        out = out[:, :, None]
    return out
