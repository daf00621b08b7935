"""De-identification: keyed pseudonyms, the secret's life cycle, and no PHI in anything returned."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from pydicom import dcmread, uid

from echofm.io import Pseudonymizer, load_or_create_secret, read_dicom, scan_dicom, technical_metadata
from echofm.io.deid import SECRET_FILENAME
from tests.factories import dicom as F


def _phi_strings() -> list[str]:
    """Every planted PHI value, plus its parts (name components, the UIDs)."""
    values = list(F.PHI.values())
    parts = [part for value in values for part in value.replace("^", " ").split() if len(part) >= 4]
    # Generic words of the descriptions are not identifying; the names in them are.
    parts = [p for p in parts if p.lower() not in {"echo", "view", "hospital"}]
    uids = ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"]
    return values + parts + uids


def _assert_no_phi(text: str) -> None:
    for value in _phi_strings():
        assert value.lower() not in text.lower(), f"PHI {value!r} leaked"


def test_no_phi_in_anything_the_reader_returns(tmp_path: Path) -> None:
    path = F.jpeg_baseline_file(tmp_path / "clip.dcm", F.colour_frames(3))
    ds = dcmread(path)
    ds.OperatorsName = F.PHI["OperatorsName"]
    ds.PerformingPhysicianName = "Performer^Paula"
    ds.save_as(path)
    pseudonymizer = Pseudonymizer(b"k" * 32)
    header = scan_dicom(path, pseudonymizer=pseudonymizer)
    clip = read_dicom(path, pseudonymizer=pseudonymizer)
    returned_texts = (repr(header), repr(clip), str(header.meta), str(clip.meta), str(clip.pseudonyms))
    for returned in returned_texts:
        _assert_no_phi(returned)
        assert "performer" not in returned.lower()
    # The description said "A4C": the hint survives, the text does not.
    assert clip.meta["view_hint"] == "A4C"
    assert set(clip.pseudonyms) == {"patient_id", "study_id", "series_id", "instance_id"}


def test_technical_metadata_keeps_the_allow_list(tmp_path: Path) -> None:
    ds = F.base_dataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    F.set_pixels(ds, F.grey_frames(2), photometric="MONOCHROME2")
    ds.FrameTime = 20.0
    ds.HeartRate = 72
    ds.BodyPartExamined = "HEART"
    meta = technical_metadata(ds)
    assert meta["modality"] == "US"
    assert meta["manufacturer"] == "EchoFM Test Systems" and meta["model"] == "Factory 1"
    assert (meta["rows"], meta["columns"], meta["number_of_frames"]) == (F.H, F.W, 2)
    assert meta["photometric_interpretation"] == "MONOCHROME2"
    assert meta["transfer_syntax"] == uid.ExplicitVRLittleEndian
    assert meta["frame_time_ms"] == 20.0 and meta["heart_rate_bpm"] == 72.0
    assert meta["body_part"] == "HEART" and meta["image_type"] == ["ORIGINAL", "PRIMARY"]
    assert meta["view_hint"] == "A4C"
    _assert_no_phi(str(meta))


def test_pseudonyms_are_deterministic_per_secret() -> None:
    a, b = Pseudonymizer(b"secret-one-0123456789"), Pseudonymizer(b"secret-two-0123456789")
    assert a.pseudonym("patient", "PID-1") == Pseudonymizer(b"secret-one-0123456789").pseudonym("patient", "PID-1")
    assert a.pseudonym("patient", "PID-1") != b.pseudonym("patient", "PID-1")
    assert a.pseudonym("patient", "PID-1") != a.pseudonym("patient", "PID-2")
    # The kind is part of the message: the same value as a study is a different pseudonym.
    assert a.pseudonym("patient", "X")[1:] != a.pseudonym("study", "X")[1:]
    value = a.pseudonym("series", "1.2.3.4")
    assert value.startswith("r") and len(value) == 21 and "." not in value
    assert "secret" not in repr(a)


def test_dataset_pseudonyms_fall_back_when_patient_id_is_missing() -> None:
    ds = F.base_dataset()
    p = Pseudonymizer(b"x" * 32)
    with_id = p.dataset_pseudonyms(ds)
    del ds.PatientID
    without_id = p.dataset_pseudonyms(ds)
    assert without_id["patient_id"] != with_id["patient_id"]
    assert without_id["study_id"] == with_id["study_id"]
    del ds.PatientName, ds.PatientBirthDate
    assert p.dataset_pseudonyms(ds)["patient_id"].startswith("p")


def test_secret_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHOFM_DEID_SECRET", "a-configured-secret-of-some-length")
    secret, source = load_or_create_secret(tmp_path)
    assert (secret, source) == (b"a-configured-secret-of-some-length", "env")
    assert not (tmp_path / SECRET_FILENAME).exists()


def test_secret_created_once_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("ECHOFM_DEID_SECRET", raising=False)
    output = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="echofm.io.deid"):
        secret, source = load_or_create_secret(output)
    assert source == "created" and len(secret) == 32
    stored = output / SECRET_FILENAME
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert any(str(stored) in record.getMessage() for record in caplog.records)
    again, source_again = load_or_create_secret(output)
    assert (again, source_again) == (secret, "file")
    from_output = Pseudonymizer.from_output(output)
    assert from_output.pseudonym("patient", "A") == Pseudonymizer(secret).pseudonym("patient", "A")
