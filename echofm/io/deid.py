"""De-identification: the secret, keyed ids and pseudonyms, and the allow-list of technical metadata.

This is the only module that reads identifying DICOM attributes (names, IDs, UIDs, dates,
accession numbers, institution, operator, free-text descriptions). What leaves it is either a
keyed value (HMAC-SHA256 under a secret the data owner controls) or a controlled term from a
fixed list. Free text is reduced to a canonical term and never returned itself.

The identity contract (docs/deid.md) that every producer and consumer of a manifest follows:

- `source_id(secret, rel_path)` names a source file: `"f"` + 32 hex characters of
  HMAC-SHA256(secret, b"echofm-source\\x00" + normalised relative path bytes). The manifest
  column is `source_id`; the path itself is never stored (see `write_path_map` for the only
  place the map back to paths exists).
- `keyed_digest(secret, kind, digest)` keys a content digest: the manifest's `source_hash` is
  `keyed_digest(secret, "source", sha256(file bytes))`, `content_hash` is
  `keyed_digest(secret, "content", sha256 of the decoded pixels)`; 64 hex characters each.
- A label table that names files by path joins by computing `source_id` of each path (see
  `echofm.downstream.labels.join_labels`): the same function, the same secret.

The secret comes from `ECHOFM_DEID_SECRET` or a secret file (`load_secret`), never from, and
never into, an ingestion OUTPUT; `echofm keygen FILE` creates a secret file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Any, ClassVar

from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from echofm.errors import EchoFMError
from echofm.io.views import view_from_code, view_hint

DEFAULT_SECRET_ENV = "ECHOFM_DEID_SECRET"
# What older versions left in OUTPUT; its presence stops a run (a key must not travel with data).
LEGACY_SECRET_FILENAME = ".echofm-deid-secret"
PSEUDONYM_HEX_CHARS = 20  # 80 bits: collisions are negligible below billions of identifiers
SOURCE_ID_PREFIX = "f"
SOURCE_ID_HEX_CHARS = 32  # 128 bits: label joins must never hit the wrong file
MIN_SECRET_BYTES = 16
SECRET_FILE_BYTES = 32

# One letter per kind so a pseudonym says what it stands for; letters and hex only (no dots), so
# pseudonyms are safe inside WebDataset keys and file names.
_PREFIXES = {"patient": "p", "study": "s", "series": "r", "instance": "i"}
_KEYGEN_HINT = "create one with `echofm keygen FILE` (keep FILE outside every OUTPUT)"


class DeidError(EchoFMError):
    """Base class: the de-identification set-up does not allow a run to start."""

    reason: ClassVar[str] = "deid_error"


class MissingSecret(DeidError):
    """No de-identification secret is configured."""

    reason = "missing_secret"


class SecretInsideOutput(DeidError):
    """A secret (or the path map) would live under OUTPUT, which travels with the data."""

    reason = "secret_inside_output"


class BadSecret(DeidError):
    """The secret file cannot be read, is not hex, or holds too few bytes."""

    reason = "bad_secret"


class SecretFileExists(DeidError):
    """`echofm keygen` refuses to overwrite a secret: pseudonyms made with it would be lost."""

    reason = "secret_file_exists"


def normalise_rel_path(rel_path: bytes | str) -> bytes:
    """The bytes a relative path is keyed by: POSIX separators, no leading `./` or `/`.

    A `str` is encoded as the file system encodes names (UTF-8; undecodable bytes that Python
    carries as surrogates go back to the original bytes), so a name read from disk in any byte
    encoding and the same name typed into a label table give the same bytes.
    """
    raw = os.fsencode(rel_path) if isinstance(rel_path, str) else bytes(rel_path)
    raw = raw.replace(b"\\", b"/")
    parts = [part for part in raw.split(b"/") if part not in (b"", b".")]
    return b"/".join(parts)


def source_id(secret: bytes, rel_path: bytes | str) -> str:
    """Keyed id of a source file: `"f"` + 32 lowercase hex characters.

    rel_path: the file's path relative to the ingested SOURCE (bytes as on disk, or str),
    normalised by `normalise_rel_path`. Without the secret the id can neither be inverted nor
    recomputed from a guessed path.
    """
    message = b"echofm-source\x00" + normalise_rel_path(rel_path)
    digest = hmac.new(_check_secret(secret), message, hashlib.sha256).hexdigest()
    return SOURCE_ID_PREFIX + digest[:SOURCE_ID_HEX_CHARS]


def keyed_digest(secret: bytes, kind: str, digest: bytes | str) -> str:
    """64 hex characters: HMAC-SHA256 over `kind` and a plain digest (bytes or hex).

    Keying the plain SHA-256 (rather than the content again) lets discovery hash files at disk
    speed and keeps the plain digest, which anyone holding the original file could recompute,
    inside the process that computed it.
    """
    plain = bytes.fromhex(digest) if isinstance(digest, str) else bytes(digest)
    message = b"echofm-digest\x00" + kind.encode() + b"\x00" + plain
    return hmac.new(_check_secret(secret), message, hashlib.sha256).hexdigest()


def _check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise ValueError("a de-identification secret must be non-empty bytes")
    return bytes(secret)


class Pseudonymizer:
    """Holds the secret and computes everything keyed by it: pseudonyms of DICOM identifiers,
    source ids of paths, keyed digests of content. The same input under the same secret always
    gives the same output; without the secret nothing can be inverted or recomputed."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        self._secret = _check_secret(secret)

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r})"

    def __reduce__(self) -> tuple[type[Pseudonymizer], tuple[bytes]]:
        return (Pseudonymizer, (self._secret,))

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

    def source_id(self, rel_path: bytes | str) -> str:
        """`source_id(secret, rel_path)` under this pseudonymizer's secret."""
        return source_id(self._secret, rel_path)

    def digest(self, kind: str, plain: bytes | str) -> str:
        """`keyed_digest(secret, kind, plain)` under this pseudonymizer's secret."""
        return keyed_digest(self._secret, kind, plain)

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


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """True when `path` (resolved, symlinks followed) is `folder` or lies under it."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def load_secret(
    *,
    secret_file: str | Path | None = None,
    output: str | Path | None = None,
    env_var: str = DEFAULT_SECRET_ENV,
) -> bytes:
    """The de-identification secret: the hex in `secret_file` when given, else the UTF-8 bytes
    of the environment variable `env_var`.

    Raises `MissingSecret` when neither is set (the message says how to create one),
    `SecretInsideOutput` when `secret_file` lies under `output` or `output` holds a secret left
    by an older version, and `BadSecret` for an unreadable, non-hex or short secret (below 16
    bytes: short secrets make pseudonyms of guessable values, such as MRNs, easy to enumerate).
    """
    if output is not None:
        legacy = Path(output) / LEGACY_SECRET_FILENAME
        if legacy.exists():
            raise SecretInsideOutput(
                f"OUTPUT holds a de-identification secret ({LEGACY_SECRET_FILENAME}); move it out of OUTPUT "
                "and pass it with --secret-file, or set the environment variable"
            )
    if secret_file is not None:
        if output is not None and is_inside(secret_file, output):
            raise SecretInsideOutput("--secret-file lies inside OUTPUT; a key must never travel with the data")
        secret = _read_secret_file(Path(secret_file))
    else:
        value = os.environ.get(env_var, "")
        if not value:
            raise MissingSecret(f"no de-identification secret: set {env_var} or pass --secret-file FILE; {_KEYGEN_HINT}")
        secret = value.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise BadSecret(f"the de-identification secret has {len(secret)} bytes, at least {MIN_SECRET_BYTES} needed; {_KEYGEN_HINT}")
    return secret


def write_secret_file(path: str | Path) -> Path:
    """Create a new secret file: 32 random bytes as hex, mode 0600, never overwriting one.

    Raises `SecretFileExists` when `path` exists.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two invocations at once must not each write (and hand out) a different secret.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretFileExists("the secret file exists already; pseudonyms made with it would be lost") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_bytes(SECRET_FILE_BYTES).hex() + "\n")
    os.chmod(target, 0o600)
    return target


def optional_secret(secret_file: str | Path | None = None, *, env_var: str = DEFAULT_SECRET_ENV) -> bytes | None:
    """`load_secret` for steps that need the secret only for some inputs (a label table named by
    path): None when neither the file nor the variable is set; a bad secret still raises."""
    if secret_file is None and not os.environ.get(env_var):
        return None
    return load_secret(secret_file=secret_file, env_var=env_var)


class PathMapInsideOutput(DeidError):
    """The path map would be written under OUTPUT, which travels with the data."""

    reason = "path_map_inside_output"


PATH_MAP_COLUMNS = ("source_id", "path", "path_text")


def check_path_map(path_map: str | Path, output: str | Path) -> Path:
    """Raise `PathMapInsideOutput` when `path_map` lies under `output`; returns it as a Path."""
    if is_inside(path_map, output):
        raise PathMapInsideOutput("--path-map lies inside OUTPUT; the map back to file names must be kept apart from the data")
    return Path(path_map)


def write_path_map(path_map: str | Path, entries: dict[str, bytes], *, output: str | Path) -> Path:
    """Add `entries` (source id -> relative path bytes) to the path map file, mode 0600.

    The map is a Parquet table with columns `source_id`, `path` (the bytes as on disk, any
    encoding) and `path_text` (UTF-8 with undecodable bytes escaped, for reading only). An
    existing map is merged (a re-run adds its new files), and the file is replaced atomically.
    Raises `PathMapInsideOutput` when the map would lie under `output`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = check_path_map(path_map, output)
    merged = read_path_map(target) if target.exists() else {}
    merged.update(entries)
    ids = sorted(merged)
    table = pa.table(
        {
            "source_id": pa.array(ids, pa.string()),
            "path": pa.array([merged[i] for i in ids], pa.binary()),
            "path_text": pa.array([merged[i].decode("utf-8", "backslashreplace") for i in ids], pa.string()),
        }
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def read_path_map(path_map: str | Path) -> dict[str, bytes]:
    """The path map written by `write_path_map`: source id -> relative path bytes."""
    import pyarrow.parquet as pq

    table = pq.read_table(path_map, columns=["source_id", "path"])
    return dict(zip(table.column("source_id").to_pylist(), table.column("path").to_pylist()))


def _read_secret_file(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
        return bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError):
        raise BadSecret(f"the secret file cannot be read as hex; {_KEYGEN_HINT}") from None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# Vendors of echo machines, by the first words their Manufacturer attribute starts with (several
# spellings each: "GE Vingmed Ultrasound", "GE MEDICAL SYSTEMS", "TOSHIBA_MEC_US"...).
VENDORS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    # The name ends at anything but a letter or digit ("TOSHIBA_MEC_US" is Toshiba).
    (name, re.compile(rf"^({words})(?![A-Z0-9])"))
    for name, words in (
        ("GE", "GE|GENERAL ELECTRIC"),
        ("Philips", "PHILIPS"),
        ("Siemens", "SIEMENS"),
        ("Canon", "CANON|TOSHIBA"),
        ("Samsung", "SAMSUNG"),
        ("Mindray", "MINDRAY"),
        ("Esaote", "ESAOTE"),
        ("SonoSite", "SONOSITE|FUJIFILM SONOSITE"),
        ("Fujifilm", "FUJIFILM|HITACHI|ALOKA"),
        ("Butterfly", "BUTTERFLY"),
        ("Clarius", "CLARIUS"),
        ("Konica Minolta", "KONICA"),
        ("SonoScape", "SONOSCAPE"),
        ("Terason", "TERASON"),
    )
)
OTHER_VENDOR = "other"
# DICOM defined terms of ImageType (PS3.3 C.7.6.1.1.2 and C.8.5.6.1.1): value 1, value 2, the
# US anatomic regions of value 3, and value 4 as the 4-hex-digit US image type bit field.
IMAGE_TYPE_TERMS: frozenset[str] = frozenset(
    {
        "ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY", "ABDOMINAL", "BREAST", "CHEST", "CARDIAC",
        "CARDIOLOGY", "ECHOCARDIOGRAPHY", "ENDOCAVITARY", "ENDORECTAL", "ENDOVAGINAL", "EPICARDIAL",
        "FETAL_HEART", "GYNECOLOGY", "INTRACARDIAC", "INTRAOPERATIVE", "INTRAVASCULAR", "MUSCULOSKELETAL",
        "NEONATAL_HEAD", "NEUROSONOGRAPHY", "OB", "OBSTETRICAL", "OPHTHALMIC", "PEDIATRIC", "PELVIC",
        "RETROPERITONEAL", "SCROTAL", "SMALL_PARTS", "TEE", "THYROID", "TRANSCRANIAL", "TRANSESOPHAGEAL",
        "TRANSRECTAL", "TRANSTHORACIC", "TRANSVAGINAL", "UROLOGY", "VASCULAR",
    }
)
_US_IMAGE_TYPE_BITS = re.compile(r"^[0-9A-F]{4}$")
BODY_PARTS: frozenset[str] = frozenset(
    {
        "HEART", "CHEST", "THORAX", "CARDIAC", "ABDOMEN", "PELVIS", "NECK", "HEAD", "BRAIN", "BREAST",
        "KIDNEY", "LIVER", "KNEE", "SHOULDER", "HIP", "EXTREMITY", "LEG", "ARM", "FETUS", "UTERUS",
        "OVARY", "PROSTATE", "CAROTID", "THYROID", "SCROTUM",
    }
)
# Defined terms of Photometric Interpretation (PS3.3 C.7.6.3.1.2), supported by the readers or not.
PHOTOMETRIC_TERMS: frozenset[str] = frozenset(
    {
        "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422",
        "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK", "XYB",
    }
)
# Transfer syntaxes whose pixels went through a lossy codec: JPEG baseline/extended, JPEG-LS near
# lossless, JPEG 2000 (lossy allowed), HTJ2K (lossy allowed), MPEG-2/4 and HEVC video.
LOSSY_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203", *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
    }
)
MODALITIES: frozenset[str] = frozenset({"US", "IVUS", "CT", "MR", "XA", "CR", "DX", "NM", "PT", "OT", "SR", "ECG"})


def vendor(manufacturer: str) -> str:
    """The vendor name from `VENDORS` that a Manufacturer value starts with, else "other"."""
    text = manufacturer.strip().upper()
    for name, pattern in VENDORS:
        if pattern.search(text):
            return name
    return OTHER_VENDOR


def known_uid(value: str) -> str:
    """A UID from the DICOM standard's registry as it is, anything else as "private" (a UID can
    be built from an MRN or a date)."""
    value = value.strip()
    return value if value in UID_dictionary else "private"


def image_type_terms(values: Any) -> list[str]:
    """The ImageType values that are DICOM defined terms, in order; the rest is dropped."""
    terms = [str(v).strip().upper() for v in (values or [])]
    return [t for t in terms if t in IMAGE_TYPE_TERMS or _US_IMAGE_TYPE_BITS.match(t)]


def controlled(value: str, allowed: frozenset[str]) -> str | None:
    """`value` (upper-cased) when it is one of `allowed`; "OTHER" for another non-empty value."""
    term = value.strip().upper()
    if not term:
        return None
    return term if term in allowed else "OTHER"


def technical_metadata(ds: Dataset) -> dict[str, Any]:
    """The technical metadata of a DICOM dataset, as controlled terms and numbers only.

    Keys (present when known): `modality` (`MODALITIES` or "OTHER"), `manufacturer` (a name
    from `VENDORS` or "other"), `sop_class_uid` and `transfer_syntax` (standard UIDs, else
    "private"), `photometric_interpretation` (a defined term, else "OTHER"), `rows`, `columns`,
    `number_of_frames`, `bits_stored`, `frame_time_ms`, `heart_rate_bpm`, `view_code` (the
    canonical view a ViewCodeSequence names, see `views.CANONICAL_VIEWS`), `view_hint` (a
    canonical view guessed from the descriptions), `image_type` (DICOM defined terms),
    `body_part` (`BODY_PARTS` or "OTHER"), `lossy` (the pixels went through a lossy codec, now
    or before). No free text, no model name, no private UID.
    """
    meta: dict[str, Any] = {}
    terms = {
        "modality": controlled(_text(ds, "Modality"), MODALITIES),
        "photometric_interpretation": controlled(_text(ds, "PhotometricInterpretation"), PHOTOMETRIC_TERMS),
        "body_part": controlled(_text(ds, "BodyPartExamined"), BODY_PARTS),
    }
    meta.update({key: value for key, value in terms.items() if value})
    if _text(ds, "Manufacturer"):
        meta["manufacturer"] = vendor(_text(ds, "Manufacturer"))
    if _text(ds, "SOPClassUID"):
        meta["sop_class_uid"] = known_uid(_text(ds, "SOPClassUID"))
    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if transfer_syntax:
        meta["transfer_syntax"] = known_uid(str(transfer_syntax))
    # Lossy now, or once: a PACS that decompressed a JPEG keeps its codec noise (and says so).
    meta["lossy"] = str(transfer_syntax or "") in LOSSY_TRANSFER_SYNTAXES or _text(ds, "LossyImageCompression") == "01"
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
    code_value, code_meaning = _view_code(ds)
    if code_value or code_meaning:
        meta["view_code"] = view_from_code(code_value, code_meaning)
    image_type = image_type_terms(ds.get("ImageType"))
    if image_type:
        meta["image_type"] = image_type
    meta["view_hint"] = view_hint(
        series_description=_text(ds, "SeriesDescription"),
        view_code_meaning=code_meaning,
        image_type=image_type,
        body_part=_text(ds, "BodyPartExamined").upper(),
    )
    return meta


def _view_code(ds: Dataset) -> tuple[str, str]:
    sequence = ds.get("ViewCodeSequence")
    if not sequence:
        return "", ""
    item = sequence[0]
    return str(item.get("CodeValue", "")).strip(), str(item.get("CodeMeaning", "")).strip()
