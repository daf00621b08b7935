"""Sector mask: generated fan clips with burned-in text and a moving ECG trace outside the fan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from echofm.io.clip import UltrasoundRegion
from echofm.preprocess import SectorConfig, SectorInputError, SectorMask, apply_sector_mask, estimate_sector

HEIGHT, WIDTH = 240, 320


@dataclass(frozen=True)
class FanClip:
    frames: np.ndarray  # uint8 [T, H, W, C]
    fan: np.ndarray  # bool [H, W], the true sector
    text: np.ndarray  # bool [H, W], pixels ever covered by burned-in text
    ecg: np.ndarray  # bool [H, W], pixels ever covered by the ECG trace


def make_fan_clip(
    *,
    n_frames: int = 16,
    channels: int = 1,
    seed: int = 0,
    text: bool = True,
    ecg: bool = True,
    moving: bool = True,
    inner_text: bool = False,
    attenuation: float = 0.0,
    cavity_rows: tuple[int, int] | None = None,
) -> FanClip:
    """A pie-slice fan (apex at the top) filled with speckle that changes every frame.

    Static text sits in the top-left corner and bottom-right; `inner_text` adds text in the top
    corners beside the apex (inside the fan's bounding box, outside the fan). The ECG is a sine
    trace below the fan that scrolls each frame. `attenuation` darkens the speckle with depth;
    `cavity_rows` blanks a band of rows across the fan (a blood pool cutting off the near field).
    """
    rng = np.random.default_rng(seed)
    fan_u8 = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.ellipse(fan_u8, (WIDTH // 2, 10), (170, 170), 0, 55, 125, 1, thickness=cv2.FILLED)
    fan = fan_u8.astype(bool)
    depth_gain = np.exp(-attenuation * np.linspace(0.0, 1.0, HEIGHT))[:, None]
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    overlay = np.zeros((HEIGHT, WIDTH), np.uint8)
    if text:
        cv2.putText(overlay, "DOE^JANE 0042", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1)
        cv2.putText(overlay, "HR 72", (WIDTH - 64, HEIGHT - 44), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1)
    if inner_text:
        # Inside the bounding box of the fan (x 62..258, y 10..150) but outside the fan.
        cv2.putText(overlay, "MI 1.2", (70, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
        cv2.putText(overlay, "TIS 0.4", (196, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
    overlay[fan] = 0
    labels[overlay > 0] = 1
    xs = np.arange(16, WIDTH - 16)
    ecg_seen = np.zeros((HEIGHT, WIDTH), bool)
    frames = np.zeros((n_frames, HEIGHT, WIDTH, channels), np.uint8)
    still_speckle = rng.random((HEIGHT // 4, WIDTH // 4)).astype(np.float32)
    for t in range(n_frames):
        coarse = rng.random((HEIGHT // 4, WIDTH // 4)).astype(np.float32) if moving else still_speckle
        speckle = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        image = np.where(fan, (40.0 + 200.0 * speckle) * depth_gain, 0.0).astype(np.uint8)
        if cavity_rows is not None:
            image[cavity_rows[0] : cavity_rows[1]] = 0
        image = np.maximum(image, overlay)
        if ecg:
            phase = 0.7 * t if moving else 0.0
            ys = (HEIGHT - 18 + 10 * np.sin(2 * np.pi * xs / 40.0 + phase)).astype(np.int32)
            trace = np.zeros((HEIGHT, WIDTH), np.uint8)
            cv2.polylines(trace, [np.stack([xs, ys], axis=1)], False, 255, 1)
            image = np.maximum(image, trace)
            ecg_seen |= trace > 0
        frames[t] = image[:, :, None] if channels == 1 else np.repeat(image[:, :, None], 3, axis=2)
    return FanClip(frames=frames, fan=fan, text=labels.astype(bool), ecg=ecg_seen)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def assert_valid(result: SectorMask, shape: tuple[int, int]) -> None:
    assert result.mask.dtype == bool and result.mask.shape == shape
    assert 0.0 <= result.confidence <= 1.0
    assert result.area_fraction == pytest.approx(float(result.mask.mean()))
    assert result.detail


@pytest.mark.parametrize("channels", [1, 3])
def test_image_path_finds_fan_and_removes_text_and_ecg(channels: int) -> None:
    clip = make_fan_clip(channels=channels)
    result = estimate_sector(clip.frames)
    assert_valid(result, (HEIGHT, WIDTH))
    assert result.method == "image"
    assert result.confidence > 0.7
    assert iou(result.mask, clip.fan) > 0.9
    masked = apply_sector_mask(clip.frames, result.mask)
    assert clip.text.sum() > 100 and clip.ecg.sum() > 200  # the overlays are really there
    assert not masked[:, clip.text].any()
    assert not masked[:, clip.ecg].any()
    # Nearly all of the fan survives.
    kept = (masked[:, clip.fan] > 0).mean()
    assert kept > 0.97


def test_colour_and_grey_give_the_same_mask() -> None:
    grey = estimate_sector(make_fan_clip(channels=1).frames)
    colour = estimate_sector(make_fan_clip(channels=3).frames)
    assert np.array_equal(grey.mask, colour.mask)


def test_colour_overlay_inside_the_fan_still_counts_as_sector() -> None:
    clip = make_fan_clip(channels=3)
    frames = clip.frames.copy()
    # A colour-flow box (red/blue) flickering inside the fan.
    rng = np.random.default_rng(1)
    for t in range(frames.shape[0]):
        frames[t, 60:110, 130:190, 0] = rng.integers(0, 255, (50, 60), dtype=np.uint8)
        frames[t, 60:110, 130:190, 1] = 0
    result = estimate_sector(frames)
    assert result.method == "image"
    assert iou(result.mask, clip.fan) > 0.9


def test_depth_attenuated_fan_is_still_found() -> None:
    clip = make_fan_clip(attenuation=2.5)
    result = estimate_sector(clip.frames)
    assert result.method == "image"
    assert iou(result.mask, clip.fan) > 0.9


def test_consistent_region_is_used_and_refined_to_the_fan() -> None:
    clip = make_fan_clip(inner_text=True)
    ys, xs = np.nonzero(clip.fan)
    region = UltrasoundRegion(
        x0=int(xs.min()), y0=int(ys.min()), x1=int(xs.max()), y1=int(ys.max()), spatial_format=1, data_type=1
    )
    result = estimate_sector(clip.frames, [region])
    assert_valid(result, (HEIGHT, WIDTH))
    assert result.method == "regions"
    assert "refined" in result.detail
    assert iou(result.mask, clip.fan) > 0.9
    # Text inside the region box but outside the fan is removed too.
    masked = apply_sector_mask(clip.frames, result.mask)
    assert clip.text[60 - 12 : 62, 60:250].sum() > 50
    assert not masked[:, clip.text].any()
    # Nothing outside the region box is ever kept.
    box = np.zeros_like(clip.fan)
    box[region.y0 : region.y1 + 1, region.x0 : region.x1 + 1] = True
    assert not (result.mask & ~box).any()
    # Agreement of two sources is more certain than the pixels alone.
    assert result.confidence > estimate_sector(clip.frames).confidence


def test_region_without_moving_pixels_is_never_used_as_rectangle() -> None:
    # The box is plausible, but the pixels show no fan in it: a box alone is not a sector.
    clip = make_fan_clip(moving=False, text=False, ecg=False, n_frames=4)
    region = UltrasoundRegion(x0=40, y0=5, x1=280, y1=190, spatial_format=1, data_type=1)
    result = estimate_sector(clip.frames, [region])
    assert result.method == "none" and not result.mask.any()
    assert "a box alone is never used" in result.detail


def test_lying_region_is_intersected_with_the_pixel_fan() -> None:
    """A header region that takes in the banner beside a small fan (the fan spans less than half
    the box): the mask is the fan the pixels show, never the rectangle with the banner in it."""
    clip = make_fan_clip()
    frames = np.zeros((clip.frames.shape[0], HEIGHT, 2 * WIDTH, 1), np.uint8)
    frames[:, :, WIDTH:] = clip.frames
    banner = np.zeros((HEIGHT, 2 * WIDTH), np.uint8)
    cv2.putText(banner, "DOE^JANE MRN 0042 17/03/2019", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    frames[:, :, :, 0] = np.maximum(frames[:, :, :, 0], banner)
    fan = np.zeros((HEIGHT, 2 * WIDTH), bool)
    fan[:, WIDTH:] = clip.fan
    lying = UltrasoundRegion(x0=0, y0=0, x1=2 * WIDTH - 1, y1=200, spatial_format=1, data_type=1)
    result = estimate_sector(frames, [lying])
    assert result.method == "image" and "not trusted" in result.detail
    assert iou(result.mask, fan) > 0.85
    assert not apply_sector_mask(frames, result.mask)[:, banner > 0].any()


@pytest.mark.parametrize(
    ("region", "reason"),
    [
        (
            UltrasoundRegion(x0=0, y0=0, x1=WIDTH + 200, y1=HEIGHT + 100, spatial_format=1, data_type=1),
            "larger than image",
        ),
        (UltrasoundRegion(x0=100, y0=50, x1=100, y1=50, spatial_format=1, data_type=1), "degenerate"),
        (UltrasoundRegion(x0=10, y0=10, x1=30, y1=25, spatial_format=1, data_type=1), "covers only"),
    ],
)
def test_invalid_region_falls_back_to_image(region: UltrasoundRegion, reason: str) -> None:
    clip = make_fan_clip()
    result = estimate_sector(clip.frames, [region])
    assert result.method == "image"
    assert reason in result.detail and "fell back to image" in result.detail
    assert iou(result.mask, clip.fan) > 0.9


def test_region_overshooting_by_one_pixel_is_clipped_not_rejected() -> None:
    clip = make_fan_clip()
    region = UltrasoundRegion(x0=0, y0=0, x1=WIDTH, y1=HEIGHT, spatial_format=1, data_type=1)
    result = estimate_sector(clip.frames, [region])
    assert result.method == "regions"
    assert iou(result.mask, clip.fan) > 0.9


def test_non_tissue_regions_are_ignored() -> None:
    clip = make_fan_clip()
    spectral = UltrasoundRegion(x0=0, y0=150, x1=WIDTH - 1, y1=HEIGHT - 1, spatial_format=3, data_type=3)
    result = estimate_sector(clip.frames, [spectral])
    assert result.method == "image"
    assert "fell back" not in result.detail


def test_blank_clip_gives_none() -> None:
    frames = np.zeros((8, HEIGHT, WIDTH, 1), np.uint8)
    result = estimate_sector(frames)
    assert_valid(result, (HEIGHT, WIDTH))
    assert result.method == "none" and result.confidence == 0.0
    assert not result.mask.any()
    assert not apply_sector_mask(frames + 7, result.mask).any()


def test_static_frames_give_none() -> None:
    # A frozen clip: fan, text and ECG drawn identically in every frame, no noise.
    clip = make_fan_clip(moving=False, n_frames=6)
    result = estimate_sector(clip.frames)
    assert result.method == "none" and result.confidence == 0.0
    assert "no temporal change" in result.detail
    assert not result.mask.any()


def test_noise_over_the_whole_image_gives_none() -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (8, HEIGHT, WIDTH, 1), dtype=np.uint8)
    result = estimate_sector(frames)
    assert result.method == "none"
    assert "outside" in result.detail


def test_single_frame_uses_brightness_with_lower_confidence() -> None:
    clip = make_fan_clip(n_frames=1)
    result = estimate_sector(clip.frames)
    assert result.method == "image"
    assert "brightness" in result.detail
    assert 0.0 < result.confidence <= SectorConfig().still_confidence_scale
    assert iou(result.mask, clip.fan) > 0.9
    assert not apply_sector_mask(clip.frames, result.mask)[:, clip.text].any()


def test_sweeping_cursor_outside_the_fan_is_ignored() -> None:
    clip = make_fan_clip()
    frames = clip.frames.copy()
    for t in range(frames.shape[0]):
        x = 10 + 18 * t
        frames[t, 200:235, x : x + 3] = 255  # an ECG sweep bar moving left to right
    result = estimate_sector(frames)
    assert result.method == "image"
    assert iou(result.mask, clip.fan) > 0.9
    assert not result.mask[200:235].any()


def test_apply_sector_mask_keeps_shape_and_dtype_and_input() -> None:
    clip = make_fan_clip(channels=3, n_frames=3)
    original = clip.frames.copy()
    masked = apply_sector_mask(clip.frames, clip.fan)
    assert masked.shape == clip.frames.shape and masked.dtype == np.uint8
    assert np.array_equal(clip.frames, original)
    assert np.array_equal(masked[:, clip.fan], original[:, clip.fan])
    assert not masked[:, ~clip.fan].any()
    in_place = apply_sector_mask(clip.frames, clip.fan, out=clip.frames)
    assert in_place is clip.frames and np.array_equal(in_place, masked)


def test_apply_sector_mask_rejects_mismatched_mask() -> None:
    frames = np.zeros((2, HEIGHT, WIDTH, 1), np.uint8)
    with pytest.raises(SectorInputError):
        apply_sector_mask(frames, np.ones((HEIGHT, WIDTH + 1), bool))
    with pytest.raises(SectorInputError):
        apply_sector_mask(frames, np.ones((HEIGHT, WIDTH), np.uint8))


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, HEIGHT, WIDTH), np.uint8),
        np.zeros((2, HEIGHT, WIDTH, 2), np.uint8),
        np.zeros((2, HEIGHT, WIDTH, 1), np.float32),
        np.zeros((0, HEIGHT, WIDTH, 1), np.uint8),
    ],
)
def test_estimate_sector_rejects_malformed_frames(frames: np.ndarray) -> None:
    with pytest.raises(SectorInputError):
        estimate_sector(frames)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_frames": 1},
        {"min_area_fraction": 0.9, "max_area_fraction": 0.5},
        {"min_confidence": 1.5},
        {"blur_fraction": 0.7},
        {"region_tolerance_px": -1},
    ],
)
def test_config_rejects_invalid_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SectorConfig(**kwargs)


def test_whole_image_region_without_pixel_evidence_gives_none() -> None:
    # A region declaring the whole frame is no sector on its own: without moving pixels to
    # refine it, the result must not be the unmasked frame.
    clip = make_fan_clip(moving=False, n_frames=4)
    region = UltrasoundRegion(x0=0, y0=0, x1=WIDTH - 1, y1=HEIGHT - 1, spatial_format=1, data_type=1)
    result = estimate_sector(clip.frames, [region])
    assert result.method == "none" and result.confidence == 0.0
    assert "no sector in its pixels" in result.detail
    assert not result.mask.any()


def test_short_span_with_still_speckle_is_completed_by_brightness() -> None:
    # Over a few frames at a high frame rate speckle barely changes; only a moving wall does.
    clip = make_fan_clip(moving=False, n_frames=5)
    frames = clip.frames.copy()
    for t in range(frames.shape[0]):
        ring = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.circle(ring, (WIDTH // 2, 95), 28 + 3 * t, 255, 5)
        frames[t, :, :, 0] = np.maximum(frames[t, :, :, 0], ring & clip.fan.astype(np.uint8) * 255)
    result = estimate_sector(frames)
    assert result.method == "image"
    assert "completed by brightness" in result.detail
    assert iou(result.mask, clip.fan) > 0.9
    masked = apply_sector_mask(frames, result.mask)
    assert not masked[:, clip.text].any()
    assert not masked[:, clip.ecg].any()


def test_sector_mask_is_read_only_and_checked() -> None:
    result = estimate_sector(make_fan_clip(n_frames=4).frames)
    with pytest.raises(ValueError):
        result.mask[0, 0] = True
    with pytest.raises(ValueError):
        SectorMask(mask=np.ones((4, 4), bool), method="none", confidence=0.0, area_fraction=1.0, detail="x")


@pytest.fixture(scope="module")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from echofm.synth.archive import generate_archive

    out = tmp_path_factory.mktemp("synthetic")
    # Seven clips: DICOM with valid regions, DICOM whose region runs past the image (clip 6),
    # DICOM without regions, MP4 and AVI.
    generate_archive(
        out, n_clips=7, seed=11, sizes=((240, 320),), duration_range_s=(1.0, 1.0), fps_range=(24, 30)
    )
    return out


def test_synthetic_archive_sectors_match_labels_and_hide_burned_in_text(synthetic_archive: Path) -> None:
    from echofm.io import read_dicom, read_video

    labels = pd.read_csv(synthetic_archive / "labels.csv", keep_default_na=False)
    assert (labels["has_regions"] & ~labels["regions_valid"]).any()  # a region past the image edge
    methods = []
    for row in labels.itertuples():
        path = synthetic_archive / "archive" / row.file
        clip = read_dicom(path) if row.container == "dicom" else read_video(path)
        result = estimate_sector(clip.frames, clip.regions)
        fan = np.load(synthetic_archive / row.mask_file)["sector"].astype(bool)
        x0, y0, x1, y1 = map(int, row.sector_box.split(";"))
        expected = "regions" if row.has_regions and row.regions_valid else "image"
        assert result.method == expected, (row.file, result.detail)
        if row.has_regions and not row.regions_valid:
            assert "larger than image" in result.detail and "fell back to image" in result.detail
        assert iou(result.mask, fan) > 0.9, (row.file, result.detail)
        ys, xs = np.nonzero(result.mask)
        assert xs.min() >= x0 - 3 and xs.max() <= x1 + 3 and ys.min() >= y0 - 3 and ys.max() <= y1 + 3
        masked = apply_sector_mask(clip.frames, result.mask)
        text = np.zeros_like(fan)
        for box in filter(None, row.text_boxes.split("|")):
            bx0, by0, bx1, by1 = map(int, box.split(";"))
            text[by0 : by1 + 1, bx0 : bx1 + 1] = True
        assert (text & ~fan).sum() > 500  # the clip really has burned-in text
        assert not masked[:, text & ~fan].any(), row.file
        methods.append(result.method)
    assert {"regions", "image"} <= set(methods)


def test_two_side_by_side_regions_are_each_refined_to_their_fan() -> None:
    # A biplane display: two fans, each with its own 2D region box.
    left, right = make_fan_clip(seed=1, text=False, ecg=False), make_fan_clip(seed=2, ecg=False)
    frames = np.concatenate([left.frames, right.frames], axis=2)
    fans = np.concatenate([left.fan, right.fan], axis=1)
    regions = []
    for offset in (0, WIDTH):
        ys, xs = np.nonzero(left.fan)
        regions.append(
            UltrasoundRegion(
                x0=int(xs.min()) + offset, y0=int(ys.min()), x1=int(xs.max()) + offset, y1=int(ys.max()),
                spatial_format=1, data_type=1,
            )
        )
    result = estimate_sector(frames, regions)
    assert result.method == "regions"
    assert result.detail.count("refined") == 2
    assert iou(result.mask, fans) > 0.9


def test_nested_colour_region_does_not_replace_the_tissue_region() -> None:
    clip = make_fan_clip(inner_text=True)
    ys, xs = np.nonzero(clip.fan)
    tissue = UltrasoundRegion(
        x0=int(xs.min()), y0=int(ys.min()), x1=int(xs.max()), y1=int(ys.max()), spatial_format=1, data_type=1
    )
    colour = UltrasoundRegion(x0=110, y0=30, x1=210, y1=150, spatial_format=1, data_type=2)
    result = estimate_sector(clip.frames, [tissue, colour])
    assert result.method == "regions"
    assert "(110,30)" not in result.detail  # the nested box is not estimated on its own
    assert iou(result.mask, clip.fan) > 0.9
    assert not apply_sector_mask(clip.frames, result.mask)[:, clip.text].any()


def test_near_field_cut_off_by_a_cavity_stays_in_the_sector() -> None:
    clip = make_fan_clip(cavity_rows=(75, 92))
    result = estimate_sector(clip.frames)
    assert result.method == "image"
    near_field = clip.fan.copy()
    near_field[75:] = False
    assert near_field.sum() > 2000
    assert result.mask[near_field].mean() > 0.95
    assert iou(result.mask, clip.fan) > 0.9
    masked = apply_sector_mask(clip.frames, result.mask)
    assert not masked[:, clip.text].any()
    assert not masked[:, clip.ecg].any()


def test_invalid_region_beside_a_valid_one_is_reported_and_ignored() -> None:
    clip = make_fan_clip()
    ys, xs = np.nonzero(clip.fan)
    valid = UltrasoundRegion(
        x0=int(xs.min()), y0=int(ys.min()), x1=int(xs.max()), y1=int(ys.max()), spatial_format=1, data_type=1
    )
    oversize = UltrasoundRegion(x0=-50, y0=0, x1=WIDTH + 50, y1=HEIGHT - 1, spatial_format=1, data_type=1)
    result = estimate_sector(clip.frames, [oversize, valid])
    assert result.method == "regions"
    assert "ignored" in result.detail and "larger than image" in result.detail
    assert iou(result.mask, clip.fan) > 0.9


@pytest.mark.parametrize(("shape", "factor"), [((9, 120, 160, 1), 1), ((12, 600, 800, 3), 4), ((2, 301, 517, 1), 3)])
def test_evidence_equals_float_means_of_the_analysis_frames(shape: tuple[int, ...], factor: int) -> None:
    # The evidence is summed in integers for speed; it must equal the float32 means it stands
    # for exactly, or the sector mask (and so every ingested pixel) would change.
    from echofm.preprocess import sector

    config = SectorConfig(analysis_max_side=-(-max(shape[1:3]) // factor))
    frames = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    small = sector._analysis_frames(frames, factor, config).astype(np.float32)
    evidence = sector._evidence(frames, config)
    brightness = small.mean(axis=0)
    raw = np.abs(np.diff(small, axis=0)).mean(axis=0)
    raw[brightness < config.min_brightness] = 0.0
    assert evidence.factor == factor
    assert evidence.brightness.dtype == evidence.raw.dtype == np.float32
    np.testing.assert_array_equal(evidence.brightness, brightness)
    np.testing.assert_array_equal(evidence.raw, raw)


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 16])
def test_analysis_frames_are_opencvs_area_means_for_every_block_sum(factor: int) -> None:
    # Power-of-two factors are reduced by exact halvings (sector._block_mean_by_halving); the
    # analysis frames, and so every sector mask, must stay OpenCV's area means. Every block sum
    # 0..255 x factor^2 appears in some block, ties (sums halfway between two levels) included.
    from echofm.preprocess import sector

    n = factor * factor
    sums = np.arange(n * 255 + 1)
    side = factor * int(np.ceil(np.sqrt(len(sums))))
    per_side = side // factor
    sums = np.resize(sums, per_side * per_side)
    blocks = np.repeat((sums // n)[:, None], n, axis=1)
    blocks[np.arange(n)[None, :] < (sums % n)[:, None]] += 1
    image = blocks.reshape(per_side, per_side, factor, factor).transpose(0, 2, 1, 3).reshape(side, side)
    rng = np.random.default_rng(factor)
    # Two frames: the crafted sums, and noise one row and column past a multiple of the factor
    # (the remainder is left out, as documented).
    frames = np.zeros((2, side + 1, side + 1, 1), np.uint8)
    frames[0, :side, :side, 0] = image
    frames[1] = rng.integers(0, 256, frames.shape[1:], dtype=np.uint8)
    config = SectorConfig(analysis_max_side=max(32, per_side))
    small = sector._analysis_frames(frames, factor, config)
    for i in range(2):
        expected = cv2.resize(np.ascontiguousarray(frames[i, :side, :side, 0]), (per_side, per_side),
                              interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(small[i], expected)
    colour = rng.integers(0, 256, (1, 4 * factor, 6 * factor, 3), dtype=np.uint8)
    grey = cv2.cvtColor(colour[0], cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(sector._analysis_frames(colour, factor, config)[0],
                                  cv2.resize(grey, (6, 4), interpolation=cv2.INTER_AREA))
