"""process_batch: every file ends as rows with the right status and reason; clips land in shards."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from echofm.data.shards import iter_shard
from echofm.ingest.batch import process_batch
from echofm.ingest.config import IngestConfig
from echofm.ingest.discover import discover
from echofm.ingest.views import ViewPrediction
from tests.factories.media import PHI_ID, PHI_NAME, H, W, fan_cine, write_dicom, write_mp4


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batch") / "archive"
    root.mkdir()
    write_dicom(root / "good.dcm", fan_cine(45))
    write_dicom(root / "same_pixels_other_header.dcm", fan_cine(45), patient_name="Other^Name")
    write_dicom(root / "ct.dcm", fan_cine(45), modality="CT")
    write_dicom(root / "still.dcm", fan_cine(1))
    write_dicom(root / "truncated.dcm", fan_cine(45, seed=3), truncate=True)
    write_dicom(root / "frozen.dcm", fan_cine(45, seed=4, frozen=True))
    write_dicom(root / "abdomen.dcm", fan_cine(45, seed=5), body_part="ABDOMEN")
    write_mp4(root / "clip.mp4", fan_cine(45, seed=6))
    (root / "readme.dcm").write_text(f"notes about {PHI_NAME}")
    return root


@pytest.fixture(scope="module")
def batch(archive: Path, tmp_path_factory: pytest.TempPathFactory, keyed) -> tuple[Path, list[dict[str, Any]]]:
    output = tmp_path_factory.mktemp("batch-out")
    files = discover(archive, keyed, workers=1)
    result = process_batch(files, archive, output, IngestConfig(), "testbatch-b00000", run_id="testrun")
    assert result.part_path is not None and result.part_path.exists()
    assert result.n_files == len(files)
    # The rows name files by keyed id only; the test knows the names and the key.
    names = {f.source_id: f.rel_path for f in files}
    return output, [{**row, "name": names[row["source_id"]]} for row in result.rows]


def _by_path(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["name"], []).append(row)
    return out


def test_every_file_has_the_expected_fate(batch: tuple[Path, list[dict[str, Any]]]) -> None:
    _, rows = batch
    fate = {path: (r[0]["status"], r[0]["reason"]) for path, r in _by_path(rows).items()}
    assert fate == {
        "abdomen.dcm": ("rejected", "non_cardiac_view"),
        "clip.mp4": ("accepted", None),
        "ct.dcm": ("rejected", "not_ultrasound"),
        "frozen.dcm": ("rejected", "frozen"),
        "good.dcm": ("accepted", None),
        "readme.dcm": ("rejected", "not_media"),
        "same_pixels_other_header.dcm": ("rejected", "duplicate"),
        "still.dcm": ("rejected", "too_few_frames"),
        "truncated.dcm": ("failed", "corrupt_pixel_data"),
    }
    assert len({row["clip_id"] for row in rows}) == len(rows)


def test_failed_row_names_the_error_without_file_text(batch: tuple[Path, list[dict[str, Any]]]) -> None:
    _, rows = batch
    (failed,) = _by_path(rows)["truncated.dcm"]
    assert failed["error_class"] == "CorruptPixelData"
    assert failed["error_message"].startswith("scan: CorruptPixelData")
    assert "truncated" not in failed["error_message"] and "/" not in failed["error_message"]


def test_accepted_clip_is_stored_masked_and_pseudonymised(batch: tuple[Path, list[dict[str, Any]]]) -> None:
    output, rows = batch
    (good,) = _by_path(rows)["good.dcm"]
    assert good["view"] == "unknown" and good["mask_method"] in ("image", "regions")
    assert good["patient_id"] and good["patient_id"] != PHI_ID and good["study_id"]
    assert good["window_index"] == 0 and good["channels"] == 1
    assert good["n_frames_source"] == 45 and good["height_source"] == H and good["width_source"] == W
    assert good["qc_motion_energy"] > 1.0 and good["content_hash"]
    samples = {key: (frames, meta) for shard in sorted((output / "shards").glob("*.tar")) for key, frames, meta in iter_shard(shard)}
    frames, meta = samples[good["key"]]
    assert good["key"] == good["clip_id"]
    assert frames.shape == (32, 224, 224, 1) and frames.dtype == np.uint8
    assert meta["clip_id"] == good["clip_id"] and meta["view"] == "unknown"
    # The burned-in block sat top-left outside the fan: after resize_pad (160 -> 224 wide, rows
    # padded by 28 above) it would cover rows ~31-42, cols ~3-55. It must be zero.
    assert frames[:, 31:43, 3:55].max() == 0
    assert frames[:, :28].max() == 0 and frames[:, -28:].max() == 0  # the padding
    assert frames[:, 100:180, 90:130].mean() > 20  # the sector kept its content
    blob = b"".join(p.read_bytes() for p in (output / "shards").glob("*.tar"))
    assert PHI_NAME.split("^")[0].encode() not in blob and PHI_ID.encode() not in blob


def test_non_cardiac_file_is_not_decoded(archive: Path, tmp_path: Path, keyed) -> None:
    files = [f for f in discover(archive, keyed, workers=1) if f.rel_path == "abdomen.dcm"]
    result = process_batch(files, archive, tmp_path, IngestConfig(), "nodecode-b00000")
    assert [row["reason"] for row in result.rows] == ["non_cardiac_view"]
    assert "decode" not in result.stage_seconds
    assert not (tmp_path / "shards").exists() or not any((tmp_path / "shards").iterdir())


def test_view_selection_and_several_windows(archive: Path, tmp_path: Path, keyed) -> None:
    files = [f for f in discover(archive, keyed, workers=1) if f.rel_path in ("good.dcm", "clip.mp4")]
    only_a4c = process_batch(files, archive, tmp_path / "a", IngestConfig(views=("A4C",)), "views-b00000")
    assert {row["reason"] for row in only_a4c.rows} == {"view_not_selected"}
    config = IngestConfig(window_ms=460.0, max_windows=3)
    windows = process_batch(files, archive, tmp_path / "b", config, "windows-b00000")
    good = [row for row in windows.rows if row["source_id"] == keyed.source_id("good.dcm")]
    # 45 frames at 33.3 ms = 1.5 s: three 460 ms windows, back to back.
    assert [row["window_index"] for row in good] == [0, 1, 2]
    assert len({row["clip_id"] for row in good}) == 3
    starts = [row["window_start_ms"] for row in good]
    assert starts[0] == 0.0 and 430 < starts[1] < 500 and 890 < starts[2] < 960
    assert windows.n_clips == 6


class ExplodingClassifier:
    """A plugged-in pixel classifier that fails: the file fails, the batch goes on."""

    needs_pixels = True

    def classify(self, meta: Mapping[str, Any], frames: np.ndarray | None = None) -> ViewPrediction:
        raise RuntimeError(f"model crashed on {meta}")


class PixelClassifier:
    needs_pixels = True

    def classify(self, meta: Mapping[str, Any], frames: np.ndarray | None = None) -> ViewPrediction:
        assert frames is not None and frames.shape[1:3] == (224, 224)
        return ViewPrediction("PLAX", "model:test", 0.9)


def test_pluggable_classifier(archive: Path, tmp_path: Path, keyed) -> None:
    files = [f for f in discover(archive, keyed, workers=1) if f.rel_path == "good.dcm"]
    plugged = process_batch(
        files, archive, tmp_path / "ok", IngestConfig(view_classifier=f"{__name__}:PixelClassifier"), "plug-b00000"
    )
    assert [(row["status"], row["view"], row["view_source"]) for row in plugged.rows] == [("accepted", "PLAX", "model:test")]
    broken = process_batch(
        files, archive, tmp_path / "bad", IngestConfig(view_classifier=f"{__name__}:ExplodingClassifier"), "boom-b00000"
    )
    (row,) = broken.rows
    assert (row["status"], row["reason"], row["error_class"]) == ("failed", "view_error", "RuntimeError")
    assert row["error_message"] == "view: RuntimeError: unexpected error"


def test_part_file_holds_the_rows(batch: tuple[Path, list[dict[str, Any]]]) -> None:
    import pyarrow.parquet as pq

    output, rows = batch
    (part,) = (output / ".parts").glob("*.parquet")
    stored = pq.read_table(part).to_pylist()
    assert [r["clip_id"] for r in stored] == [r["clip_id"] for r in rows]
    assert json.dumps([r["status"] for r in stored]) == json.dumps([r["status"] for r in rows])
    assert {r["ingest_run_id"] for r in stored} == {"testrun"}


def test_short_windows_get_extra_frames_for_the_sector_mask() -> None:
    from echofm.ingest.batch import frames_to_decode

    window = np.arange(14, dtype=np.int64)
    # 25-frame cine, one 14-frame window: the mask sees 24 frames spread over the whole cine.
    decoded = frames_to_decode(window, 25, 24)
    assert set(window) <= set(decoded.tolist()) and len(decoded) >= 24 and decoded[-1] == 24
    assert np.all(np.diff(decoded) > 0)
    typical = np.linspace(0, 62, 32).round().astype(np.int64)
    assert frames_to_decode(typical, 64, 24) is typical  # nothing extra for a typical window
    assert frames_to_decode(np.arange(10), 10, 24).tolist() == list(range(10))


def test_grey_stored_as_colour_becomes_one_channel() -> None:
    from echofm.ingest.batch import grey_if_balanced

    grey = np.random.default_rng(1).integers(0, 250, (4, 30, 40, 1), dtype=np.uint8)
    ybr_like = np.concatenate([grey, grey + 2, grey + 4], axis=3)
    collapsed = grey_if_balanced(ybr_like)
    assert collapsed.shape == (4, 30, 40, 1) and np.array_equal(collapsed, grey + 2)
    doppler = ybr_like.copy()
    doppler[0, 10:12, 10:12] = (200, 30, 30)
    assert grey_if_balanced(doppler).shape == (4, 30, 40, 3)
