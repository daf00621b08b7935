"""De-identification: keyed pseudonyms and the allow-list of technical metadata.

This is the only module that reads identifying DICOM attributes (names, IDs, UIDs, dates,
accession numbers, institution, operator, free-text descriptions). What leaves it is either a
keyed pseudonym (HMAC-SHA256 under a secret the data owner controls) or an allow-listed technical
value. Free-text descriptions are reduced to a canonical view name (`views.view_hint`) and never
returned themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from echofm.io.views import view_hint

logger = logging.getLogger(__name__)

SECRET_FILENAME = ".echofm-deid-secret"
DEFAULT_SECRET_ENV = "ECHOFM_DEID_SECRET"
PSEUDONYM_HEX_CHARS = 20  # 80 bits: collisions are negligible below billions of identifiers
_MIN_SECRET_BYTES = 16

# One letter per kind so a pseudonym says what it stands for; letters and hex only (no dots), so
# pseudonyms are safe inside WebDataset keys and file names.
_PREFIXES = {"patient": "p", "study": "s", "series": "r", "instance": "i"}


class Pseudonymizer:
    """Keyed, deterministic pseudonyms: the same (kind, value) under the same secret always maps
    to the same pseudonym; without the secret the mapping cannot be inverted or recomputed."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or not secret:
            raise ValueError("Pseudonymizer needs a non-empty bytes secret")
        self._secret = bytes(secret)

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r})"

    @property
    def key_id(self) -> str:
        """A short public fingerprint of the secret (to record which secret a run used)."""
        return hashlib.sha256(b"echofm-key-id\x00" + self._secret).hexdigest()[:12]

    def pseudonym(self, kind: str, value: str) -> str:
        """Return `<prefix><20 hex>` for `value` of `kind` ("patient" | "study" | "series" |
        "instance"; other kinds get prefix "x")."""
        message = kind.encode() + b"\x00" + value.strip().encode("utf-8", "surrogateescape")
        digest = hmac.new(self._secret, message, hashlib.sha256).hexdigest()
        return _PREFIXES.get(kind, "x") + digest[:PSEUDONYM_HEX_CHARS]

    def dataset_pseudonyms(self, ds: Dataset) -> dict[str, str]:
        """Pseudonyms `patient_id`, `study_id`, `series_id`, `instance_id` of a DICOM dataset.

        The patient key is PatientID; without one, PatientName + PatientBirthDate; without those,
        the study UID (each such study then counts as its own patient, which keeps train/test
        splits by patient conservative). Keys whose source attribute is empty are left out.
        """
        out: dict[str, str] = {}
        patient = _text(ds, "PatientID")
        if patient:
            out["patient_id"] = self.pseudonym("patient", patient)
        else:
            name_dob = f"{_text(ds, 'PatientName')}|{_text(ds, 'PatientBirthDate')}"
            if name_dob != "|":
                out["patient_id"] = self.pseudonym("patient", "name-dob:" + name_dob)
            elif _text(ds, "StudyInstanceUID"):
                out["patient_id"] = self.pseudonym("patient", "study:" + _text(ds, "StudyInstanceUID"))
        for key, kind, keyword in (
            ("study_id", "study", "StudyInstanceUID"),
            ("series_id", "series", "SeriesInstanceUID"),
            ("instance_id", "instance", "SOPInstanceUID"),
        ):
            value = _text(ds, keyword)
            if value:
                out[key] = self.pseudonym(kind, value)
        return out

    @classmethod
    def from_output(cls, output_dir: str | Path, *, env_var: str = DEFAULT_SECRET_ENV) -> Pseudonymizer:
        """The pseudonymizer of an ingestion run writing to `output_dir` (see `load_or_create_secret`)."""
        secret, _ = load_or_create_secret(Path(output_dir), env_var=env_var)
        return cls(secret)


def load_or_create_secret(output_dir: Path, *, env_var: str = DEFAULT_SECRET_ENV) -> tuple[bytes, str]:
    """Return `(secret, source)`, source being "env" | "file" | "created".

    1. The environment variable `env_var` (its UTF-8 bytes) when set and non-empty.
    2. Else `output_dir/.echofm-deid-secret` (hex) from an earlier run, so pseudonyms stay stable
       across incremental runs into the same output.
    3. Else 32 random bytes are created and stored there with permissions 0600, with a warning:
       whoever can read that file can recompute pseudonyms, and losing it breaks their linkage.
    """
    value = os.environ.get(env_var, "")
    if value:
        secret = value.encode("utf-8")
        if len(secret) < _MIN_SECRET_BYTES:
            logger.warning(
                "%s is shorter than %d bytes: pseudonyms are easy to brute-force", env_var, _MIN_SECRET_BYTES
            )
        return secret, "env"
    path = Path(output_dir) / SECRET_FILENAME
    if path.exists():
        return _read_secret_file(path), "file"
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    try:
        # O_EXCL: two workers starting at once must not each create (and use) a different secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret_file(path), "file"
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex() + "\n")
    os.chmod(path, 0o600)
    logger.warning(
        "No de-identification secret configured (%s unset): created a random one in %s (mode 0600). "
        "Keep it private and keep it with the output; set %s to share pseudonyms across outputs.",
        env_var,
        path,
        env_var,
    )
    return secret, "created"


def _read_secret_file(path: Path) -> bytes:
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"{path}: de-identification secret file is not hex") from exc
    if not secret:
        raise ValueError(f"{path}: de-identification secret file is empty")
    return secret


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


_CODE_STRING = re.compile(r"^[A-Z0-9_ ]{1,16}$")


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _view_code_meaning(ds: Dataset) -> str:
    sequence = ds.get("ViewCodeSequence")
    if not sequence:
        return ""
    return str(sequence[0].get("CodeMeaning", "")).strip()


def technical_metadata(ds: Dataset) -> dict[str, Any]:
    """The allow-listed technical metadata of a DICOM dataset (never a patient-identifying value).

    Keys (present when known): `modality`, `manufacturer`, `model`, `sop_class_uid`,
    `transfer_syntax`, `photometric_interpretation`, `rows`, `columns`, `number_of_frames`,
    `bits_stored`, `frame_time_ms`, `heart_rate_bpm`, `view_code` (code meaning from
    ViewCodeSequence, a coded term), `view_hint` (a canonical view, see `views.CANONICAL_VIEWS`),
    `image_type` (list of defined terms), `body_part`.
    """
    meta: dict[str, Any] = {}
    for key, keyword in (
        ("modality", "Modality"),
        ("manufacturer", "Manufacturer"),
        ("model", "ManufacturerModelName"),
        ("photometric_interpretation", "PhotometricInterpretation"),
    ):
        value = _text(ds, keyword)
        if value:
            meta[key] = value
    sop_class = _text(ds, "SOPClassUID")
    if sop_class:
        meta["sop_class_uid"] = sop_class
    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if transfer_syntax:
        meta["transfer_syntax"] = str(transfer_syntax)
    for key, keyword in (("rows", "Rows"), ("columns", "Columns"), ("bits_stored", "BitsStored")):
        number = _number(ds, keyword)
        if number is not None:
            meta[key] = int(number)
    frames = _number(ds, "NumberOfFrames")
    meta["number_of_frames"] = int(frames) if frames and frames > 0 else 1
    for key, keyword in (("frame_time_ms", "FrameTime"), ("heart_rate_bpm", "HeartRate")):
        number = _number(ds, keyword)
        if number is not None and number > 0:
            meta[key] = number
    code_meaning = _view_code_meaning(ds)
    # A coded term is normally short; a long value is someone's free text, which stays here.
    if code_meaning and len(code_meaning) <= 64:
        meta["view_code"] = code_meaning
    image_type = [str(v).strip() for v in (ds.get("ImageType") or [])]
    image_type = [v for v in image_type if _CODE_STRING.match(v)]
    if image_type:
        meta["image_type"] = image_type
    body_part = _text(ds, "BodyPartExamined").upper()
    if _CODE_STRING.match(body_part):
        meta["body_part"] = body_part
    meta["view_hint"] = view_hint(
        series_description=_text(ds, "SeriesDescription"),
        view_code_meaning=code_meaning,
        image_type=image_type,
        body_part=body_part,
    )
    return meta
