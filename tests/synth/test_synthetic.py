"""The synthetic echo archive: coverage, validity, ground truth, faults, PHI, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom import uid as dcm_uid
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, pixel_array

from echofm.synth.archive import LABEL_COLUMNS, MIN_CLIPS_FULL_COVERAGE, SMALL_ARCHIVE_OPTIONS, generate_archive
from echofm.synth.containers import VARIANTS
from echofm.synth.faults import FAULT_KINDS
from echofm.synth.heart import HeartParams, ed_es_frames, filling, lv_volume
from echofm.synth.plan import SynthConfig, plan_clip, plan_patients

# Small, short clips keep the suite fast; sizes/rates stay inside the realistic ranges.
FAST = SMALL_ARCHIVE_OPTIONS
SEED = 7


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_archive(out, MIN_CLIPS_FULL_COVERAGE, SEED, faults=True, **FAST)
    return out


@pytest.fixture(scope="module")
def labels(archive: Path) -> pd.DataFrame:
    return pd.read_parquet(archive / "labels.parquet")


def _clean(labels: pd.DataFrame) -> pd.DataFrame:
    return labels[labels["fault"] == ""]


def _box(text: str) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in text.split(";"))
    return x0, y0, x1, y1


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def test_layout_and_label_columns(archive: Path, labels: pd.DataFrame) -> None:
    assert list(labels.columns) == list(LABEL_COLUMNS)
    csv = pd.read_csv(archive / "labels.csv", keep_default_na=False)
    assert list(csv["file"]) == list(labels["file"])
    on_disk = sorted(p.relative_to(archive / "archive").as_posix() for p in (archive / "archive").rglob("*") if p.is_file())
    assert on_disk == sorted(labels["file"])
    assert len(_clean(labels)) == MIN_CLIPS_FULL_COVERAGE
    # Several clips per patient, so patient-level splits are possible.
    assert _clean(labels).groupby("patient").size().min() >= 2
    assert all(f.count("/") == 2 for f in labels["file"])


def test_twelve_clips_cover_every_variant(labels: pd.DataFrame) -> None:
    clean = _clean(labels)
    assert set(clean["variant"]) == {v.name for v in VARIANTS}
    assert set(clean["container"]) == {"dicom", "mp4", "avi"}
    assert {
        dcm_uid.ExplicitVRLittleEndian, dcm_uid.ImplicitVRLittleEndian, dcm_uid.ExplicitVRBigEndian,
        dcm_uid.JPEGBaseline8Bit, dcm_uid.JPEGLSLossless, dcm_uid.JPEG2000Lossless, dcm_uid.RLELossless,
    } <= set(clean["transfer_syntax"])
    assert {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"} <= set(clean["photometric"])
    assert set(clean["planar_configuration"].dropna()) == {0, 1}
    assert {"A4C", "A2C", "PLAX", "PSAX"} <= set(clean["view"])
    assert clean["has_regions"].any() and (~clean["has_regions"]).any()
    assert (~clean["regions_valid"]).sum() >= 1
    assert {"FrameTime", "CineRate", "FrameTimeVector", "RecommendedDisplayFrameRate"} <= set(clean["fps_tag"])


def test_dicom_headers_match_labels(archive: Path, labels: pd.DataFrame) -> None:
    for row in _clean(labels)[lambda d: d["container"] == "dicom"].itertuples():
        ds = pydicom.dcmread(archive / "archive" / row.file, stop_before_pixels=True)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1" and ds.Modality == "US"
        assert ds.file_meta.TransferSyntaxUID == row.transfer_syntax
        assert ds.PhotometricInterpretation == row.photometric
        assert (int(ds.NumberOfFrames), ds.Rows, ds.Columns) == (row.n_frames, row.height, row.width)
        if row.fps_tag == "FrameTime":
            assert float(ds.FrameTime) == pytest.approx(1000.0 / row.fps, rel=1e-5)
        elif row.fps_tag == "FrameTimeVector":
            assert "FrameTime" not in ds and len(ds.FrameTimeVector) == row.n_frames
        elif row.fps_tag == "CineRate":
            assert "FrameTime" not in ds and int(ds.CineRate) == row.fps
        else:
            assert int(ds.RecommendedDisplayFrameRate) == row.fps
        if row.has_regions:
            tissue = ds.SequenceOfUltrasoundRegions[0]
            region = (tissue.RegionLocationMinX0, tissue.RegionLocationMinY0, tissue.RegionLocationMaxX1, tissue.RegionLocationMaxY1)
            fits = region[2] < row.width and region[3] < row.height
            assert fits == row.regions_valid
            if row.regions_valid:
                assert region == _box(row.sector_box) or _overlaps(region, _box(row.sector_box))
                assert tissue.PhysicalDeltaX == pytest.approx(row.depth_cm / (float(row.sector_geometry.split(";")[3])), rel=1e-3)
        else:
            assert "SequenceOfUltrasoundRegions" not in ds
        if row.view_tag in ("series_description", "both"):
            assert ds.SeriesDescription
        if row.view_tag in ("view_code", "both"):
            assert ds.ViewCodeSequence[0].CodeMeaning


def test_every_clip_decodes_with_the_right_shape(archive: Path, labels: pd.DataFrame) -> None:
    for row in _clean(labels).itertuples():
        path = archive / "archive" / row.file
        if row.container == "dicom":
            colour = () if row.photometric in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR") else (3,)
            ds = pydicom.dcmread(path)
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                # Decoding the last frame proves every frame is there (offsets, fragment count).
                last = pixel_array(ds, index=row.n_frames - 1)
                assert last.shape == (row.height, row.width) + colour and last.dtype == np.uint8, row.file
            else:
                arr = ds.pixel_array
                assert arr.shape == (row.n_frames, row.height, row.width) + colour and arr.dtype == np.uint8, row.file
        else:
            cap = cv2.VideoCapture(str(path))
            assert cap.isOpened()
            assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(row.fps, rel=1e-3)
            count = 0
            while cap.read()[0]:
                count += 1
            assert count == row.n_frames


def _first(labels: pd.DataFrame, variant: str) -> pd.Series:
    return _clean(labels)[lambda d: d["variant"] == variant].iloc[0]


def test_colour_files_are_grey_with_a_colour_overlay(archive: Path, labels: pd.DataFrame) -> None:
    """Decoded RGB must be grey-balanced in the sector (no green cast) with a red-to-blue colour bar."""
    for variant in ("jpeg_baseline_ybr422", "explicit_le_ybr_full", "explicit_le_rgb_planar0", "explicit_be_rgb_planar1", "rle_rgb"):
        row = _first(labels, variant)
        rgb = pydicom.dcmread(archive / "archive" / row.file).pixel_array[0].astype(np.int16)
        x0, y0, x1, y1 = _box(row.sector_box)
        sector = rgb[y0 : y1 + 1, x0 : x1 + 1]
        assert np.abs(sector[..., 0] - sector[..., 1]).mean() < 2.0, variant
        assert np.abs(sector[..., 1] - sector[..., 2]).mean() < 2.0, variant
        if row.colour_box:
            bx0, by0, bx1, by1 = _box(row.colour_box)
            top, bottom = rgb[by0 + 2, (bx0 + bx1) // 2], rgb[by1 - 2, (bx0 + bx1) // 2]
            assert top[0] > 180 and top[2] < 80, (variant, top)
            assert bottom[2] > 180 and bottom[0] < 80, (variant, bottom)
    palette = _first(labels, "explicit_le_palette")
    ds = pydicom.dcmread(archive / "archive" / palette.file)
    rgb = apply_color_lut(ds.pixel_array[0], ds)
    assert rgb.shape[-1] == 3
    ex0, ey0, ex1, ey1 = _box(palette.ecg_box)
    ecg = rgb[ey0 : ey1 + 1, ex0 : ex1 + 1].astype(np.int32)
    assert (ecg[..., 1] - ecg[..., 0] > 100).any(), "the ECG trace of a palette file is green"


def test_monochrome1_is_stored_inverted(archive: Path, labels: pd.DataFrame) -> None:
    row = _first(labels, "implicit_le_mono1")
    arr = pydicom.dcmread(archive / "archive" / row.file).pixel_array
    # The background outside the fan is black on screen, so stored as 255 in MONOCHROME1.
    assert arr[0, row.height - 1, 0] == 255 and arr[0, row.height - 1, row.width - 1] == 255


def test_lv_masks_follow_the_ejection_fraction(archive: Path, labels: pd.DataFrame) -> None:
    for row in _clean(labels).itertuples():
        assert row.ef == pytest.approx((row.edv_ml - row.esv_ml) / row.edv_ml * 100.0, abs=0.01)
        ed = [int(i) for i in row.ed_frames.split(";")]
        es = [int(i) for i in row.es_frames.split(";")]
        assert ed and es
        with np.load(archive / row.mask_file) as npz:
            masks, idx, is_ed = npz["masks"], npz["frame_indices"], npz["is_ed"]
            area, volume, sector = npz["lv_area_px"], npz["lv_volume_ml"], npz["sector"]
        assert masks.dtype == np.uint8 and masks.shape[1:] == (row.height, row.width)
        assert sorted(idx.tolist()) == sorted(ed + es) and is_ed.sum() == len(ed)
        ed_area = masks[is_ed].reshape(int(is_ed.sum()), -1).sum(1).mean()
        es_area = masks[~is_ed].reshape(int((~is_ed).sum()), -1).sum(1).mean()
        assert ed_area > es_area * 1.1, row.file
        assert (masks & (1 - sector)).sum() == 0, "LV masks lie inside the fan"
        assert len(area) == len(volume) == row.n_frames
        assert (masks.reshape(len(masks), -1).sum(1) == area[idx]).all()
        assert volume.max() <= row.edv_ml + 1e-3 and volume.min() >= row.esv_ml - 1e-3
        # Area and volume move together over the cycle.
        assert np.corrcoef(area, volume)[0, 1] > 0.9


def test_sector_moves_and_overlays_stay_outside_it(archive: Path, labels: pd.DataFrame) -> None:
    row = _first(labels, "explicit_le_mono2")
    frames = pydicom.dcmread(archive / "archive" / row.file).pixel_array
    sector_box = _box(row.sector_box)
    boxes = [_box(b) for b in row.text_boxes.split("|")] + [_box(row.ecg_box)]
    assert len(boxes) >= 4
    for box in boxes:
        assert not _overlaps(box, sector_box), (box, sector_box)
        assert 0 <= box[0] <= box[2] < row.width and 0 <= box[1] <= box[3] < row.height
    text = [b for b in boxes[:-1]]
    assert all(frames[0, b[1] : b[3] + 1, b[0] : b[2] + 1].max() > 150 for b in text), "text is burned in"
    x0, y0, x1, y1 = sector_box
    inside = frames[:, y0 : y1 + 1, x0 : x1 + 1].astype(np.int16)
    assert np.abs(np.diff(inside, axis=0)).mean() > 2.0, "the cine is not frozen"
    # Text does not move; the ECG cursor does.
    b = text[0]
    assert (frames[:, b[1] : b[3] + 1, b[0] : b[2] + 1] == frames[0, b[1] : b[3] + 1, b[0] : b[2] + 1]).all()
    # Outside the fan and the overlays, pixels are exactly zero.
    with np.load(archive / row.mask_file) as npz:
        outside = npz["sector"] == 0
    ys, xs = np.nonzero(~outside)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == sector_box
    for box in boxes:
        outside[box[1] : box[3] + 1, box[0] : box[2] + 1] = False
    assert frames[:, outside].max() == 0


def test_phi_is_planted_where_phi_json_says(archive: Path, labels: pd.DataFrame) -> None:
    phi = json.loads((archive / "phi.json").read_text())
    for kind in ("patient_names", "patient_ids", "birth_dates", "accession_numbers", "institutions", "operators", "burned_in"):
        assert phi[kind], kind
    checked = 0
    for row in labels[labels["container"] == "dicom"].itertuples():
        entry = phi["files"].get(row.file)
        if entry is None or "header" not in entry:
            continue
        raw = (archive / "archive" / row.file).read_bytes()
        for value in entry["header"].values():
            assert value.encode("latin-1") in raw, (row.file, value)
        checked += 1
    assert checked >= 8
    assert any(not name.isascii() for name in phi["patient_names"]), "a Latin-1 name tests character sets"
    assert all(s.isascii() for s in phi["burned_in"])
    # The patient's name is burned into the pixels too.
    burned = phi["files"][_first(labels, "explicit_le_mono2")["file"]]["burned_in"]
    assert any(", " in s for s in burned) and any(s.startswith("ID: ") for s in burned)
    assert set(phi["patient_name_parts"]) <= set(" ".join(phi["all"]).replace("^", " ").replace(",", " ").split())


def test_faults_are_present_and_labelled(archive: Path, labels: pd.DataFrame) -> None:
    faults = labels[labels["fault"] != ""].set_index("fault")
    assert set(faults.index) == set(FAULT_KINDS)
    root = archive / "archive"
    assert (root / faults.loc["empty", "file"]).stat().st_size == 0
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(root / faults.loc["not_dicom", "file"])
    assert pydicom.dcmread(root / faults.loc["not_ultrasound", "file"]).Modality == "CT"
    single = pydicom.dcmread(root / faults.loc["single_frame", "file"])
    assert single.Modality == "US" and "NumberOfFrames" not in single and single.pixel_array.ndim == 2
    truncated = pydicom.dcmread(root / faults.loc["truncated", "file"])
    assert len(truncated.PixelData) < int(truncated.NumberOfFrames) * truncated.Rows * truncated.Columns
    with pytest.raises(ValueError, match="less than expected"):
        truncated.pixel_array
    dup = faults.loc["duplicate"]
    source = dup["fault_detail"].split("=", 1)[1]
    assert source != dup["file"]
    assert (root / source).read_bytes() == (root / dup["file"]).read_bytes()
    cap = cv2.VideoCapture(str(root / faults.loc["corrupt_video", "file"]))
    assert not cap.isOpened() or not cap.read()[0]
    frozen = pydicom.dcmread(root / faults.loc["frozen", "file"]).pixel_array
    assert frozen.shape[0] > 1 and (frozen == frozen[:1]).all()
    assert pydicom.dcmread(root / faults.loc["blank", "file"]).pixel_array.max() == 0


def test_same_seed_same_bytes_and_prefix_stable(archive: Path, labels: pd.DataFrame, tmp_path: Path) -> None:
    small = generate_archive(tmp_path / "again", 4, SEED, **FAST)
    again = pd.read_parquet(small.labels_parquet)
    pd.testing.assert_frame_equal(again, labels.iloc[:4].reset_index(drop=True))
    for f in again["file"]:
        assert (small.archive_dir / f).read_bytes() == (archive / "archive" / f).read_bytes(), f
    other = generate_archive(tmp_path / "other", 1, SEED + 1, **FAST)
    f0 = pd.read_parquet(other.labels_parquet)["file"][0]
    assert (other.archive_dir / f0).read_bytes() != (archive / "archive" / labels["file"][0]).read_bytes()


def test_worker_processes_write_the_same_files(archive: Path, tmp_path: Path) -> None:
    out = generate_archive(tmp_path / "par", 3, SEED, workers=2, **FAST)
    for f in pd.read_parquet(out.labels_parquet)["file"]:
        assert (out.archive_dir / f).read_bytes() == (archive / "archive" / f).read_bytes(), f


def test_parameter_ranges_over_many_clips() -> None:
    """Planning only (no pixels): the realism ranges of issue 3 hold across an archive."""
    config = SynthConfig(n_clips=240, seed=3)
    plans = [plan_clip(config, i, slot, study) for i, (slot, study) in enumerate(plan_patients(config, 240))]
    efs = np.array([p.heart.ef for p in plans])
    assert (efs < 40).sum() >= 20 and (efs > 60).sum() >= 20 and efs.min() >= 17 and efs.max() <= 78
    assert all(50 <= p.heart.heart_rate_bpm <= 120 for p in plans)
    assert all(20 <= p.fps <= 90 for p in plans) and max(p.fps for p in plans) > 70
    durations = np.array([p.n_frames / p.fps for p in plans])
    assert durations.min() >= 1.0 - 1e-9 and durations.max() <= 4.0 + 1e-9 and durations.max() > 2.5
    assert all(480 <= p.height <= 768 and 640 <= p.width <= 1024 for p in plans)
    assert {(p.height, p.width) for p in plans} >= {(480, 640), (768, 1024)}
    assert {p.view for p in plans} == {"A4C", "A2C", "A3C", "PLAX", "PSAX"}
    # No variant is tied to a view or a tag choice (a classifier must not learn views from codecs).
    for name in {p.variant.name for p in plans}:
        mine = [p for p in plans if p.variant.name == name]
        assert len({p.view for p in mine}) == 5, name
        if mine[0].variant.container == "dicom":
            assert len({p.fps_tags for p in mine}) >= 3 and len({p.view_tag for p in mine}) >= 3, name
            assert {p.has_regions for p in mine} == {True, False}, name


def test_heart_cycle_gives_the_ejection_fraction() -> None:
    heart = HeartParams(heart_rate_bpm=60.0, edv_ml=120.0, esv_ml=48.0, systole_fraction=0.35, phase0=0.0)
    assert heart.ef == pytest.approx(60.0)
    assert filling(np.array([0.0, 0.35, 0.999999]), 0.35) == pytest.approx([1.0, 0.0, 1.0], abs=1e-4)
    v = lv_volume(np.linspace(0.0, 1.0, 1001), heart)
    assert v.max() == pytest.approx(120.0) and v.min() == pytest.approx(48.0, abs=0.01)
    ed, es = ed_es_frames(n_frames=60, fps=30.0, heart=heart)
    assert ed == [0, 30] and es == [10, 40]
    with pytest.raises(ValueError):
        HeartParams(heart_rate_bpm=60.0, edv_ml=50.0, esv_ml=60.0)


def test_config_errors(tmp_path: Path, archive: Path) -> None:
    with pytest.raises(ValueError):
        SynthConfig(n_clips=0, seed=0)
    with pytest.raises(ValueError):
        SynthConfig(n_clips=2, seed=0, sizes=((100, 100),))
    with pytest.raises(TypeError):
        generate_archive(tmp_path / "x", 1, 0, no_such_option=1)
    with pytest.raises(FileExistsError):
        generate_archive(archive, 1, 0)


def test_cli_synth(tmp_path: Path) -> None:
    from echofm.cli import main

    out = tmp_path / "cli"
    assert main(["synth", str(out), "--n-clips", "1", "--seed", "5", "--workers", "1", "--mask-frames", "all"]) == 0
    table = pd.read_csv(out / "labels.csv")
    assert len(table) == 1 and (out / "phi.json").exists()
    assert all((out / "archive" / f).is_file() for f in table["file"])
    with np.load(out / table["mask_file"][0]) as npz:
        assert npz["masks"].shape == (table["n_frames"][0], table["height"][0], table["width"][0])
        assert (npz["masks"].reshape(len(npz["masks"]), -1).sum(1) == npz["lv_area_px"]).all()
