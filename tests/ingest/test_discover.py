"""Discovery recognises containers by content, records every file and hashes the bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from echofm.ingest.discover import SourceError, discover, sha256_file, sniff_format
from echofm.io.deid import Pseudonymizer


def _dicom(path: Path, *, preamble: bool, file_meta: bool = True) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Modality = "US"
    if file_meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    else:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    if preamble:
        ds.preamble = b"\x00" * 128
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:
        ds.preamble = None
        if not file_meta:
            del ds.file_meta
            with open(path, "wb") as handle:
                from pydicom.filebase import DicomFileLike
                from pydicom.filewriter import write_dataset

                fp = DicomFileLike(handle)
                fp.is_little_endian, fp.is_implicit_VR = True, True
                write_dataset(fp, ds)
        else:
            pydicom.dcmwrite(path, ds, enforce_file_format=False)


def _video(path: Path, fourcc: str, container: str) -> None:
    # OpenCV picks the container from the extension: write with the right one, then rename.
    written = path.with_name(path.name + container)
    writer = cv2.VideoWriter(str(written), cv2.VideoWriter_fourcc(*fourcc), 25.0, (32, 24))
    for i in range(3):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    written.rename(path)


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    (root / "a" / "b").mkdir(parents=True)
    _dicom(root / "a" / "with_preamble.dcm", preamble=True)
    _dicom(root / "a" / "b" / "IM0001", preamble=False)  # no extension, file meta, no preamble
    _dicom(root / "raw_dataset.bin", preamble=False, file_meta=False)  # bare implicit-VR data set
    _video(root / "a" / "clip.bin", "mp4v", ".mp4")  # an MP4 with a misleading extension
    _video(root / "clip.avi", "MJPG", ".avi")
    (root / "notes.dcm").write_text("Patient notes, definitely not DICOM\n")  # text named .dcm
    (root / "fake.mp4").write_bytes(b"\x00\x01\x02garbage" * 40)
    (root / "empty.dcm").write_bytes(b"")
    return root


def test_formats_are_recognised_by_content_not_extension(source: Path, keyed) -> None:
    found = {item.rel_path: item for item in discover(source, keyed, workers=2)}
    assert set(found) == {
        "a/with_preamble.dcm",
        "a/b/IM0001",
        "raw_dataset.bin",
        "a/clip.bin",
        "clip.avi",
        "notes.dcm",
        "fake.mp4",
        "empty.dcm",
    }
    assert found["a/with_preamble.dcm"].source_format == "dicom"
    assert found["a/b/IM0001"].source_format == "dicom"
    assert found["raw_dataset.bin"].source_format == "dicom"
    assert found["a/clip.bin"].source_format == "mp4"
    assert found["clip.avi"].source_format == "avi"
    for name in ("a/with_preamble.dcm", "a/b/IM0001", "raw_dataset.bin", "a/clip.bin", "clip.avi"):
        assert found[name].is_media and found[name].reject_reason is None
    assert found["notes.dcm"].reject_reason == "not_media"
    assert found["fake.mp4"].reject_reason == "not_media"
    assert found["empty.dcm"].reject_reason == "empty_file"
    assert found["empty.dcm"].size_bytes == 0


def test_files_are_named_by_keyed_ids_and_order_is_stable(source: Path, keyed) -> None:
    first = discover(source, keyed, workers=1)
    second = discover(source, keyed, workers=3)
    assert [f.rel_path for f in first] == [f.rel_path for f in second] == sorted(f.rel_path for f in first)
    for item in first:
        plain = hashlib.sha256(item.path.read_bytes()).hexdigest()
        # The keyed digest of the bytes, never the plain one anybody holding the file can compute.
        assert item.source_hash == keyed.digest("source", plain) != plain
        assert item.source_id == keyed.source_id(item.rel_path)
        assert item.path.is_absolute()
    other = Pseudonymizer(b"another-secret-0123456789")
    assert {f.source_id for f in discover(source, other)}.isdisjoint(f.source_id for f in first)


def test_names_in_any_byte_encoding_are_discovered(tmp_path: Path, keyed) -> None:
    root = tmp_path / "archive"
    latin1 = "S\xd8REN^\xc5SE".encode("latin-1")  # not valid UTF-8
    (root / os.fsdecode(latin1)).mkdir(parents=True)
    _dicom(root / os.fsdecode(latin1) / os.fsdecode(b"IM\xff\xfe.dcm"), preamble=True)
    (found,) = discover(root, keyed)
    assert found.is_media and found.source_id == keyed.source_id(latin1 + b"/IM\xff\xfe.dcm")


def test_streamed_hash_spans_chunks(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 3 * 1000 + 17, dtype=np.uint8).tobytes()
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()


def test_text_starting_like_a_tag_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "looks.dcm"
    path.write_bytes(b"\x08\x00\x05\x00" + b"this is plain text, not a data set" * 4)
    assert sniff_format(path) == "other"


def test_missing_source_is_a_systemic_error_that_does_not_name_it(tmp_path: Path, keyed) -> None:
    with pytest.raises(SourceError) as caught:
        discover(tmp_path / "DOE^JOHN_12345678", keyed)
    assert "DOE" not in str(caught.value) and "12345678" not in str(caught.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SourceError):
        discover(tmp_path / "file", keyed)
