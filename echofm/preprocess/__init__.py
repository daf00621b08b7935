"""Pixel-level preprocessing of decoded clips: sector masking, resampling."""

from echofm.preprocess.sector import (
    SectorConfig,
    SectorInputError,
    SectorMask,
    SectorMethod,
    apply_sector_mask,
    estimate_sector,
)

__all__ = [
    "SectorConfig",
    "SectorInputError",
    "SectorMask",
    "SectorMethod",
    "apply_sector_mask",
    "estimate_sector",
]
