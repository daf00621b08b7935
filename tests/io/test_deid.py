"""De-identification: keyed pseudonyms, the secret's life cycle, and no PHI in anything returned."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread, uid

from echofm.io import Pseudonymizer, load_secret, read_dicom, scan_dicom, source_id, technical_metadata
from echofm.io.deid import (
    LEGACY_SECRET_FILENAME,
    BadSecret,
    MissingSecret,
    SecretFileExists,
    SecretInsideOutput,
    image_type_terms,
    keyed_digest,
    vendor,
    write_secret_file,
)
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
    # Controlled terms only: a vendor from the list (or "other"), no model name.
    assert meta["manufacturer"] == "other" and "model" not in meta
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
    assert load_secret(output=tmp_path) == b"a-configured-secret-of-some-length"
    assert list(tmp_path.iterdir()) == []  # nothing is ever written into OUTPUT


def test_without_a_secret_nothing_starts_and_the_message_names_keygen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECHOFM_DEID_SECRET", raising=False)
    with pytest.raises(MissingSecret, match="echofm keygen") as caught:
        load_secret(output=tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("ECHOFM_DEID_SECRET", "short")
    with pytest.raises(BadSecret, match="at least 16"):
        load_secret()


def test_keygen_file_is_private_never_overwritten_and_refused_inside_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ECHOFM_DEID_SECRET", raising=False)
    key = write_secret_file(tmp_path / "keys" / "echofm.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret = load_secret(secret_file=key, output=tmp_path / "out")
    assert len(secret) == 32
    with pytest.raises(SecretFileExists):
        write_secret_file(key)
    assert load_secret(secret_file=key) == secret
    inside = write_secret_file(tmp_path / "out" / "k.key")
    with pytest.raises(SecretInsideOutput):
        load_secret(secret_file=inside, output=tmp_path / "out")
    # A symlink from outside that resolves into OUTPUT is inside too.
    (tmp_path / "link.key").symlink_to(inside)
    with pytest.raises(SecretInsideOutput):
        load_secret(secret_file=tmp_path / "link.key", output=tmp_path / "out")
    (tmp_path / "bad.key").write_text("not hex\n")
    with pytest.raises(BadSecret):
        load_secret(secret_file=tmp_path / "bad.key")


def test_a_secret_left_in_output_by_an_old_version_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHOFM_DEID_SECRET", "a-configured-secret-of-some-length")
    (tmp_path / LEGACY_SECRET_FILENAME).write_text("00" * 32)
    with pytest.raises(SecretInsideOutput, match="move it out"):
        load_secret(output=tmp_path)


def test_source_id_is_keyed_normalised_and_takes_any_bytes() -> None:
    key, other = b"k" * 32, b"o" * 32
    sid = source_id(key, b"DOE^JOHN_12345678/STUDY_20190317/IMG0001.dcm")
    assert sid.startswith("f") and len(sid) == 33 and int(sid[1:], 16) >= 0
    assert "DOE" not in sid and "12345678" not in sid
    # The same path however it is spelled: str or bytes, ./ prefix, Windows separators.
    for spelling in ("DOE^JOHN_12345678/STUDY_20190317/IMG0001.dcm", "./DOE^JOHN_12345678//STUDY_20190317/IMG0001.dcm",
                     "DOE^JOHN_12345678\\STUDY_20190317\\IMG0001.dcm"):
        assert source_id(key, spelling) == sid
    assert source_id(other, b"DOE^JOHN_12345678/STUDY_20190317/IMG0001.dcm") != sid
    # A Latin-1 name that is not valid UTF-8, as read from disk (surrogate-escaped) or as bytes.
    raw = "S\xd8REN/IMG.dcm".encode("latin-1")
    assert source_id(key, raw) == source_id(key, os.fsdecode(raw))
    assert source_id(key, raw) != source_id(key, "S\xd8REN/IMG.dcm")  # UTF-8 bytes differ from Latin-1
    assert Pseudonymizer(key).source_id(raw) == source_id(key, raw)


def test_keyed_digests_depend_on_key_and_kind() -> None:
    plain = "ab" * 32
    a = keyed_digest(b"k" * 32, "source", plain)
    assert len(a) == 64 and a != plain
    assert a == keyed_digest(b"k" * 32, "source", bytes.fromhex(plain))
    assert a != keyed_digest(b"o" * 32, "source", plain) and a != keyed_digest(b"k" * 32, "content", plain)


def test_meta_holds_controlled_terms_only(tmp_path: Path) -> None:
    ds = F.base_dataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    F.set_pixels(ds, F.grey_frames(2), photometric="MONOCHROME2")
    ds.Manufacturer = "GE Vingmed Ultrasound MARKERVENDOR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "MARKERTYPE", "0011"]
    ds.BodyPartExamined = "MARKERPART"
    ds.SOPClassUID = "1.2.826.0.1.12345678"
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "MRK1", "99X", "Apical four chamber MARKERCODE"
    ds.ViewCodeSequence = [code]
    meta = technical_metadata(ds)
    assert meta["manufacturer"] == "GE" and meta["image_type"] == ["ORIGINAL", "PRIMARY", "0011"]
    assert meta["body_part"] == "OTHER" and meta["sop_class_uid"] == "private" and meta["view_code"] == "A4C"
    assert "MARKER" not in repr(meta) and "12345678" not in repr(meta)
    assert vendor("Philips Medical Systems") == "Philips" and vendor("TOSHIBA_MEC_US") == "Canon"
    assert image_type_terms(["DERIVED", "SECONDARY", "JOHN DOE"]) == ["DERIVED", "SECONDARY"]


def test_reading_a_file_with_odd_values_warns_and_logs_nothing(tmp_path: Path) -> None:
    """pydicom quotes invalid values in warnings and log lines; the readers keep both quiet, in a
    fresh interpreter whose logging prints everything to stderr."""
    from pydicom import config

    ds = F.base_dataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    F.set_pixels(ds, F.grey_frames(2), photometric="MONOCHROME2")
    path = tmp_path / "odd.dcm"
    # Values as some scanners write them: a UI built from an MRN, an unknown character set.
    mode = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        ds.SeriesInstanceUID = "1.2.826.0.1.MRNMARK4298"
        ds.SpecificCharacterSet = "ISO_IR MARKCHARSET"
        ds.save_as(path, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = mode
    script = (
        "import logging, sys, warnings\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "warnings.simplefilter('always')\n"
        "from echofm.io import read_dicom, Pseudonymizer\n"
        f"clip = read_dicom({str(path)!r}, pseudonymizer=Pseudonymizer(b'k' * 32))\n"
        "print(repr(clip.meta), repr(clip.pseudonyms))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for marker in ("MRNMARK", "MARKCHARSET"):
        assert marker not in done.stdout + done.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dicom(path)  # raises if any warning escapes
