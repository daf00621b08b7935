from __future__ import annotations

import cv2
import numpy as np
import pytest

from echofm.preprocess.area import area_plan, area_shrink


def _refined_overlaps(n_source: int, n_output: int) -> np.ndarray:
    """int64 `[n_output, n_source]`: how many pixels of the axis refined `n_output` times fall in
    each source pixel and each output footprint (counted, not by the module's formula); the
    period's overlaps times `n_output / q`."""
    refined = np.repeat(np.arange(n_source), n_output)  # source pixel of each refined pixel
    footprint = np.repeat(np.arange(n_output), n_source)  # output pixel of each refined pixel
    counts = np.zeros((n_output, n_source), np.int64)
    np.add.at(counts, (footprint, refined), 1)
    return counts


def _frames(n: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    frames[:, : shape[0] // 4] = frames[:, : shape[0] // 4] // 64 * 64  # flat patches
    frames[0, :, : shape[1] // 5] = 255
    return frames


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ((600, 800), (168, 224)),  # 25/7 on both axes: the typical cine
        ((800, 600), (224, 168)),
        ((300, 400), (168, 224)),  # 25/14: the half-scale decode of the same cine
        ((81, 108), (27, 36)),  # integer factor 3: OpenCV's other code path
        ((600, 800), (200, 224)),  # 3 on one axis, 25/7 on the other
    ],
)
def test_the_exact_shrink_is_opencvs_area_resize_and_meets_near_ties(
    source: tuple[int, int], output: tuple[int, int]
) -> None:
    plan = area_plan(source, output)
    assert plan is not None
    frames = _frames(6, source, seed=source[0] + output[0])
    out = np.zeros((6, *output), np.uint8)
    area_shrink(frames, out, plan)
    expected = np.stack([cv2.resize(f, output[::-1], interpolation=cv2.INTER_AREA) for f in frames])
    assert np.array_equal(out, expected)
    # The footprint sums in refined units, exactly: their rounded means are OpenCV's values, and
    # the frames reach the sums that come closest to a tie (the case the proof is about).
    rows, cols = _refined_overlaps(source[0], output[0]), _refined_overlaps(source[1], output[1])
    periods = (source[0] // plan.source_period[0]) * (source[1] // plan.source_period[1])
    sums = rows.astype(np.float64) @ frames.astype(np.float64) @ cols.T.astype(np.float64) / periods  # exact
    assert np.array_equal(np.rint(sums / plan.divisor), expected)
    nearest_to_tie = np.abs(2 * (sums % plan.divisor) - plan.divisor) == 1
    assert nearest_to_tie.sum() >= 20


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ((768, 1024), (168, 224)),  # 32/7: an even divisor, ties exist
        ((480, 640), (168, 224)),  # 20/7: even
        ((1080, 1920), (126, 224)),  # 60/7: even
        ((450, 600), (168, 224)),  # 75/28: odd, but 1/(2D) is below three times the error bound
        ((100, 100), (120, 100)),  # growing: not an area shrink
    ],
)
def test_sizes_without_a_proof_keep_opencv(source: tuple[int, int], output: tuple[int, int]) -> None:
    assert area_plan(source, output) is None



def test_colour_frames_through_resize_pad_equal_opencvs_three_channel_resize() -> None:
    from echofm.preprocess.resample import resize_pad

    frames = np.stack([_frames(3, (600, 800), seed=k) for k in range(3)], axis=-1)
    out = resize_pad(frames, size=224)
    expected = np.stack([cv2.resize(f, (224, 168), interpolation=cv2.INTER_AREA) for f in frames])
    assert np.array_equal(out[:, 28:196], expected)
    assert not out[:, :28].any() and not out[:, 196:].any()
