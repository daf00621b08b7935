"""Area shrinking by exact integer overlap sums, at the sizes where that is OpenCV's own result.

OpenCV's `INTER_AREA` shrink from `H x W` to `h x w` gives each output pixel the mean of the
source over its footprint. With `H / h = py / qy` and `W / w = px / qx` in lowest terms, refine the
grid `qy x qx` times: each source pixel becomes a `qy x qx` block of its value and each footprint
a `py x px` block, so a footprint's sum in refined units is an integer

    N = sum_ij S_ij a_i b_j,   a_i <= qy, b_j <= qx (the overlaps, in refined pixels)

and the mean is `N / D`, `D = py * px`. OpenCV accumulates the same weighted sum in float32 and
rounds to nearest. When `D` is odd, `N / D` is never a tie and never comes closer to one than
`1 / (2 D)`; OpenCV's float error is far smaller (`_error_bound`), so rounding `N / D` gives its
value exactly. 800 x 600 -> 224 x 168 (25/7 on both axes, `D` = 625) is such a size.

`N` is computed as two float32 matrix products over one period (`p` source pixels -> `q` output
pixels on each axis): sums of integers below 2^24 are exact in float32 in any order, so the BLAS
result is `N` itself. Other sizes (`D` even, where ties exist and OpenCV's float rounding decides
them; periods too long for the bound; row products too large for one thread) get `None` from
`area_plan` and keep `cv2.resize`. At 800 x 600 -> 224 x 168 the exact shrink takes about 0.6x
OpenCV's CPU (docs/benchmarks.md, ingestion r11).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np

# OpenBLAS runs a product on the calling thread while m * n * k stays at or under 4 x 65,536 (its
# multithreading threshold); above, it wakes a thread pool whose spinning threads cost CPU that
# a worker per core cannot spare. Products are cut to stay under it.
_SINGLE_THREAD_PRODUCT = 262_144
_FLOAT32_UNIT = 2.0**-24
# The bound is first order; demand three times the margin it needs.
_SAFETY = 3.0


@dataclass(frozen=True)
class AreaPlan:
    """Integer overlap weights of one period on each axis and the divisor `D`.

    rows: float32 `[qy, py]` (output row within a period x source row); cols: float32 `[px, qx]`
    (source column x output column), each row of `rows` and column of `cols` summing to `p`.
    """

    rows: np.ndarray
    cols: np.ndarray
    divisor: int

    @property
    def source_period(self) -> tuple[int, int]:
        return self.rows.shape[1], self.cols.shape[0]


def _overlaps(ratio: Fraction) -> np.ndarray:
    """`[q, p]` overlaps, in refined pixels, of output pixel j with source pixel i over a period."""
    p, q = ratio.numerator, ratio.denominator
    j, i = np.arange(q)[:, None], np.arange(p)[None, :]
    overlap = np.minimum((j + 1) * p, (i + 1) * q) - np.maximum(j * p, i * q)
    return np.maximum(overlap, 0).astype(np.float32)


def _error_bound(rows: Fraction, cols: Fraction) -> float:
    """First-order bound on |OpenCV's float32 area mean - the exact mean| plus our final scaling.

    OpenCV sums at most `ceil(p / q) + 1` weighted terms per axis, each weight and product rounded
    once (n + 1 roundings of values up to 255 per axis); the scaling of `N` by `1 / D` adds two.
    """
    terms = sum(math.ceil(r) + 1 for r in (rows, cols))
    return (terms + 4) * 255 * _FLOAT32_UNIT


@functools.lru_cache(maxsize=64)
def area_plan(source_hw: tuple[int, int], output_hw: tuple[int, int]) -> AreaPlan | None:
    """The exact plan for shrinking `source_hw` to `output_hw` (pixels, rows x columns), or None
    where the result would not provably be `cv2.resize(..., INTER_AREA)`'s or its row products
    would leave the calling thread. Cached: one plan per frame size, its arrays read-only."""
    (height, width), (out_h, out_w) = source_hw, output_hw
    if not (0 < out_h <= height and 0 < out_w <= width):
        return None
    rows, cols = Fraction(height, out_h), Fraction(width, out_w)
    divisor = rows.numerator * cols.numerator
    if divisor % 2 == 0 or _SAFETY * _error_bound(rows, cols) >= 1.0 / (2 * divisor):
        return None
    if rows.denominator * rows.numerator * width > _SINGLE_THREAD_PRODUCT:
        return None
    plan = AreaPlan(_overlaps(rows), np.ascontiguousarray(_overlaps(cols).T), divisor)
    plan.rows.flags.writeable = plan.cols.flags.writeable = False
    return plan


def area_shrink(frames: np.ndarray, out: np.ndarray, plan: AreaPlan) -> None:
    """Shrink uint8 `[T, H, W]` into the uint8 view `out` `[T, h, w]` by `plan`.

    Each frame: to float32 (one reused buffer); the row sums of each period of `py` rows as one
    product with `plan.rows` (`[qy, py] @ [py, W]`); the column sums of those rows' periods as
    products with `plan.cols` (`[h * W / px, px] @ [px, qx]`, cut into single-thread pieces); then
    `N / D` rounded to uint8. Rows first: the column products then run on `h`, not `H`, rows
    (~15 % less CPU than columns first).
    """
    t, height, width = frames.shape
    out_h, out_w = out.shape[1:]
    py, px = plan.source_period
    source = np.empty((height, width), np.float32)
    rows = np.empty((height // py, plan.rows.shape[0], width), np.float32)
    periods = rows.reshape(-1, px)
    sums = np.empty((len(periods), plan.cols.shape[1]), np.float32)
    step = max(1, _SINGLE_THREAD_PRODUCT // (px * plan.cols.shape[1]))
    scale = 1.0 / plan.divisor
    for k in range(t):
        np.copyto(source, frames[k], casting="unsafe")
        np.matmul(plan.rows, source.reshape(height // py, py, width), out=rows)
        for start in range(0, len(periods), step):
            np.matmul(periods[start : start + step], plan.cols, out=sums[start : start + step])
        # N is exact and never within 1 / (2 D) of a tie: any correct rounding of N / D agrees.
        out[k] = cv2.convertScaleAbs(sums.reshape(out_h, out_w), alpha=scale)
