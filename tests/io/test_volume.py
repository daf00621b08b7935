"""NIfTI and MetaImage 2D+t images and PNG stills as ingestion inputs: recognised by content,
read at square pixels with label volumes on the same grid, and refused with a named reason."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from echofm.ingest.discover import discover, sniff_format
from echofm.io.errors import UnreadableImage, UnreadableVolume
from echofm.io.still import probe_still, read_still
from echofm.io.volume import probe_volume, read_label_volume, read_volume
from tests.factories.public_datasets import heart_cine, write_mhd, write_nifti


@pytest.fixture
def cine() -> tuple[np.ndarray, np.ndarray]:
    return heart_cine(0, 6, 40, 80, 50.0)


def test_nifti_reads_frames_rows_columns_and_its_time_step(tmp_path: Path, cine) -> None:
    frames, labels = cine
    write_nifti(tmp_path / "a.nii.gz", frames, (0.2, 0.2), frame_s=0.02)
    write_nifti(tmp_path / "a_gt.nii", labels, (0.2, 0.2))
    header = probe_volume(tmp_path / "a.nii.gz", "nifti")
    assert (header.n_frames, header.height, header.width) == (6, 40, 80)
    assert (header.fps, header.fps_source) == (pytest.approx(50.0), "volume_header")
    clip = read_volume(tmp_path / "a.nii.gz", "nifti", [1, 4])
    np.testing.assert_array_equal(clip.frames[..., 0], frames[[1, 4]])
    np.testing.assert_array_equal(read_label_volume(tmp_path / "a_gt.nii", "nifti"), labels)
    assert probe_volume(tmp_path / "a_gt.nii", "nifti").fps_source == "default"  # no time unit


def test_pixels_that_are_not_square_are_resampled_and_labels_follow(tmp_path: Path, cine) -> None:
    frames, labels = cine
    write_mhd(tmp_path / "b.mhd", frames, (0.4, 0.2))
    write_mhd(tmp_path / "b_gt.mhd", labels, (0.4, 0.2))
    clip = read_volume(tmp_path / "b.mhd", "mhd")
    assert clip.frames.shape == (6, 80, 80, 1) and probe_volume(tmp_path / "b.mhd", "mhd").height == 80
    gt = read_label_volume(tmp_path / "b_gt.mhd", "mhd")
    assert gt.shape == (6, 80, 80) and set(np.unique(gt)) == set(np.unique(labels))
    np.testing.assert_array_equal(gt[:, ::2], labels)  # nearest neighbour: rows doubled, values kept


def test_compressed_and_local_metaimage_data(tmp_path: Path, cine) -> None:
    frames, _ = cine
    t, h, w = frames.shape
    header = f"ObjectType = Image\nNDims = 3\nDimSize = {w} {h} {t}\nElementType = MET_UCHAR\nCompressedData = True\n"
    (tmp_path / "c.zraw").write_bytes(zlib.compress(frames.tobytes()))
    (tmp_path / "c.mhd").write_text(header + "ElementDataFile = c.zraw\n")
    np.testing.assert_array_equal(read_volume(tmp_path / "c.mhd", "mhd").frames[..., 0], frames)
    (tmp_path / "d.mhd").write_bytes((header.replace("True", "False") + "ElementDataFile = LOCAL\n").encode()
                                     + frames.tobytes())
    np.testing.assert_array_equal(read_volume(tmp_path / "d.mhd", "mhd").frames[..., 0], frames)


def test_broken_volumes_name_their_reason(tmp_path: Path, cine) -> None:
    frames, _ = cine
    write_mhd(tmp_path / "e.mhd", frames, (0.2, 0.2))
    (tmp_path / "e.raw").write_bytes(frames.tobytes()[:100])
    with pytest.raises(UnreadableVolume, match="holds 100 bytes"):
        read_volume(tmp_path / "e.mhd", "mhd")
    (tmp_path / "f.mhd").write_text("ObjectType = Image\nNDims = 3\n")
    with pytest.raises(UnreadableVolume) as raised:
        probe_volume(tmp_path / "f.mhd", "mhd")
    assert raised.value.reason == "unreadable_volume"
    # A gzipped NIfTI cut short: the header still reads, the voxels (inflated by ISA-L) do not.
    write_nifti(tmp_path / "g.nii.gz", frames, (0.2, 0.2))
    whole = (tmp_path / "g.nii.gz").read_bytes()
    (tmp_path / "g.nii.gz").write_bytes(whole[: len(whole) // 2])
    assert probe_volume(tmp_path / "g.nii.gz", "nifti").n_frames == 6
    with pytest.raises(UnreadableVolume, match="voxel data cannot be decoded"):
        read_volume(tmp_path / "g.nii.gz", "nifti")


def test_discovery_recognises_volumes_stills_and_metaimage_voxels(tmp_path: Path, cine, keyed) -> None:
    frames, _ = cine
    write_nifti(tmp_path / "seq.nii.gz", frames, (0.2, 0.2))
    write_nifti(tmp_path / "seq.nii", frames, (0.2, 0.2))
    write_mhd(tmp_path / "seq.mhd", frames, (0.2, 0.2))
    cv2.imwrite(str(tmp_path / "still.png"), frames[0])
    (tmp_path / "notes.gz").write_bytes(gzip.compress(b"not an image"))
    found = {item.rel_path: (item.source_format, item.reject_reason) for item in discover(tmp_path, keyed, workers=1)}
    assert found == {"seq.nii.gz": ("nifti", None), "seq.nii": ("nifti", None), "seq.mhd": ("mhd", None),
                     "seq.raw": ("other", "volume_data"), "still.png": ("png", None),
                     "notes.gz": ("other", "not_media")}
    assert sniff_format(tmp_path / "seq.raw") == "other"


def test_stills_are_one_frame_in_rgb_order(tmp_path: Path) -> None:
    grey = np.tile(np.arange(0, 200, 2, dtype=np.uint8), (60, 1))
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    clip = read_still(tmp_path / "g.png")
    assert clip.frames.shape == (1, 60, 100, 1) and clip.fps_source == "still" and clip.n_frames_source == 1
    colour = np.zeros((60, 100, 3), np.uint8)
    colour[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    assert read_still(tmp_path / "c.png").frames[0, 0, 0].tolist() == [200, 0, 0]
    deep = (grey.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    np.testing.assert_array_equal(read_still(tmp_path / "d.png").frames[0, ..., 0], grey)
    assert (probe_still(tmp_path / "g.png").height, probe_still(tmp_path / "g.png").width) == (60, 100)
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)
    with pytest.raises(UnreadableImage):
        probe_still(tmp_path / "x.png")
