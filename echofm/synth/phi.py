"""Fictitious patient-identifying values for the synthetic archive.

Every value is made up, but shaped like the real thing (DICOM person names, MRN-like IDs,
accession numbers, birth dates, institutions), so de-identification has something to remove and
tests can search outputs for it. Names are long and unusual on purpose: a search for "HALVORSRUD"
in a manifest cannot hit an ordinary word by chance, and IDs mix letters and digits so they cannot
collide with a byte count or a frame index.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

# Two carry Latin-1 letters, as real names do: the header is ISO_IR 100, the burned-in text ASCII.
LAST_NAMES: tuple[str, ...] = (
    "HALVORSRUD", "OKONKWOBI", "ØSTERGAARDEN", "VASQUELLO", "BRANDVOLDEN", "ESPELANDER", "KJELSTADLI", "TRAVNICEKOVA",
    "LINDQVARN", "ACHTERBERGH", "DUVERNAYE", "FENWICKSON", "GRIMSTVEDT", "IRVANOVSKA", "MOREAUXIER",
    "OYELARANMI", "PETRAKOPOULI", "QUISENBERRO", "RASMUSSVIK", "SKJOLDBRAND", "THORVALDSEY", "SÖDERHJELMA",
)
# cv2.putText draws ASCII only, so scanners (and we) burn a transliteration into the pixels.
_ASCII = str.maketrans({"Ø": "O", "Ö": "O", "Å": "A", "Æ": "AE", "É": "E", "Ü": "U"})
FIRST_NAMES: tuple[str, ...] = (
    "AGNETHEA", "BJORNULF", "CORDELIANE", "DESMONDRA", "EVANDERIK", "FRIDTJOVA", "GWENDOLIRA", "HALLSTEINO",
    "ISOLDETTE", "JOAQUINELLA", "KASIMIRON", "LEOCADIAN", "MAGNHILDUR", "NIKODEMUSZ", "OTTILIENNE",
    "PERPETUINA", "QUENTINUS", "ROSWITHANE", "SIGVALDUR", "THEODORINA",
)
INSTITUTIONS: tuple[str, ...] = (
    "NORDFJORDEID HJERTESENTER", "RIVERBEND CARDIAC INSTITUTE", "ST. WILLIBRORD HOSPITAAL",
    "KLINIKUM OBERWALDSTADT", "HOSPITAL SANTA EULALIANA", "MERIDALE HEART CLINIC",
)
OPERATORS: tuple[str, ...] = (
    "SONOGRAF^LIVTHERESE", "ULTRAVIK^HEDDAMARIE", "ECHOLUND^TORBJORNE", "CARDIOSEN^ANNIKENE",
)
REFERRERS: tuple[str, ...] = ("WESTERGAARDT^ELISIF", "BOUCHARDEAU^FELIXANDRE", "NAKAMURANO^HIROKAZE")
MANUFACTURERS: tuple[tuple[str, str], ...] = (
    ("GE Vingmed Ultrasound", "Vivid E95"),
    ("Philips Medical Systems", "EPIQ 7C"),
    ("SIEMENS", "ACUSON SC2000"),
    ("Canon Medical Systems", "Aplio i900"),
)


@dataclass(frozen=True, kw_only=True)
class SyntheticPatient:
    """One fictitious patient: the label key (not PHI) and the PHI planted for them."""

    key: str  # label key, e.g. "SYN0003": what labels.csv calls `patient`
    folder: str  # archive folder, e.g. "P0003"
    last_name: str
    first_name: str
    patient_id: str
    birth_date: dt.date
    sex: str
    institution: str

    @property
    def dicom_name(self) -> str:
        return f"{self.last_name}^{self.first_name}"

    @property
    def display_name(self) -> str:
        """How the scanner burns the name into the image (ASCII)."""
        return f"{self.last_name}, {self.first_name}".translate(_ASCII)


@dataclass(frozen=True, kw_only=True)
class SyntheticStudy:
    """One study (one visit) of a patient."""

    folder: str  # e.g. "S01"
    date: dt.date
    time: str  # HHMMSS
    accession: str
    operator: str
    referring: str
    manufacturer: str
    model: str
    heart_rate_bpm: float

    @property
    def dicom_date(self) -> str:
        return self.date.strftime("%Y%m%d")

    @property
    def burned_date(self) -> str:
        return self.date.strftime("%d/%m/%Y") + f" {self.time[:2]}:{self.time[2:4]}:{self.time[4:]}"

    def description(self, patient: SyntheticPatient) -> str:
        """Free-text study description, carrying identifying detail as real ones do."""
        surname = self.referring.split("^")[0]
        return f"TTE COMPLETE {max(patient.institution.split(), key=len)} REF {surname}"


def make_patient(index: int, rng: np.random.Generator) -> SyntheticPatient:
    """Patient number `index` (0-based) with values drawn from `rng`."""
    born = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 70)))
    return SyntheticPatient(
        key=f"SYN{index:04d}",
        folder=f"P{index:04d}",
        last_name=LAST_NAMES[index % len(LAST_NAMES)],
        first_name=FIRST_NAMES[int(rng.integers(0, len(FIRST_NAMES)))],
        patient_id=f"HX{int(rng.integers(0, 10**6)):06d}{chr(65 + int(rng.integers(0, 26)))}",
        birth_date=born,
        sex="F" if rng.random() < 0.5 else "M",
        institution=INSTITUTIONS[int(rng.integers(0, len(INSTITUTIONS)))],
    )


def make_study(patient_index: int, study_number: int, rng: np.random.Generator, hr_range: tuple[float, float]) -> SyntheticStudy:
    """Study `study_number` (1-based) of a patient; the heart rate is a property of the visit."""
    date = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 10)))
    manufacturer, model = MANUFACTURERS[int(rng.integers(0, len(MANUFACTURERS)))]
    return SyntheticStudy(
        folder=f"S{study_number:02d}",
        date=date,
        time=f"{int(rng.integers(7, 18)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}",
        accession=f"AC{patient_index:03d}{study_number}Q{int(rng.integers(0, 10**5)):05d}",
        operator=OPERATORS[int(rng.integers(0, len(OPERATORS)))],
        referring=REFERRERS[int(rng.integers(0, len(REFERRERS)))],
        manufacturer=manufacturer,
        model=model,
        heart_rate_bpm=float(rng.uniform(*hr_range)),
    )
