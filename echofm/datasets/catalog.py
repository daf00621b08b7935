"""The supported public datasets, each registered once; `echofm datasets list` and
`echofm datasets prepare NAME` read `DATASETS`.

Adding a dataset is one module with its `read(root, keys) -> Listing` and one registration
here, plus a replica of its layout in `tests/factories/public_datasets.py`.
"""

from __future__ import annotations

from echofm.datasets.camus import CAMUS_RECORD, read_camus
from echofm.datasets.dataset import DatasetRegistry, PublicDataset
from echofm.datasets.echonet import ECHONET_RECORD, read_dynamic, read_lvh, read_pediatric
from echofm.datasets.mimic import read_mimic_echo
from echofm.datasets.tmed import read_tmed2
from echofm.ingest.config import QCThresholds

DATASETS = DatasetRegistry()

DATASETS.register(PublicDataset(
    name="echonet-dynamic",
    title="EchoNet-Dynamic: 10,030 apical 4-chamber videos with EF, volumes and LV tracings",
    layout="Videos/<FileName>.avi, FileList.csv, VolumeTracings.csv",
    split="official",
    tasks=("ef", "reduced_ef", "segmentation"),
    read=read_dynamic,
    record_pattern=ECHONET_RECORD,
))

DATASETS.register(PublicDataset(
    name="echonet-pediatric",
    title="EchoNet-Pediatric: A4C and PSAX videos of children with EF and LV tracings, 10 folds",
    layout="{A4C,PSAX}/Videos/*.avi, {A4C,PSAX}/FileList.csv, {A4C,PSAX}/VolumeTracings.csv",
    split="folds",
    tasks=("ef", "reduced_ef", "view", "segmentation"),
    read=read_pediatric,
))

DATASETS.register(PublicDataset(
    name="echonet-lvh",
    title="EchoNet-LVH: PLAX videos with IVS, LVID and LVPW caliper measurements",
    layout="Batch1/ .. Batch4/*.avi, MeasurementsList.csv",
    split="official",
    tasks=("lvh",),
    read=read_lvh,
    record_pattern=ECHONET_RECORD,
))

DATASETS.register(PublicDataset(
    name="camus",
    title="CAMUS: A2C/A4C half cycles with EF and LV endocardium, myocardium and atrium segmentations",
    layout="patientNNNN/patientNNNN_{2CH,4CH}_half_sequence[_gt].nii.gz (or _sequence.mhd/.raw), Info_{2CH,4CH}.cfg, "
           "[database_split/subgroup_{training,validation,testing}.txt]",
    split="official",
    tasks=("ef", "view", "segmentation"),
    read=read_camus,
    record_pattern=CAMUS_RECORD,
    # A half cycle (ED to ES) is 10-40 frames and its images carry no frame rate: keep it whole
    # as one clip (at the default 30 fps, 40 frames last 1.33 s) and accept its short length.
    ingest_defaults={"window_ms": 1400.0, "qc": QCThresholds(min_frames=8, min_duration_ms=250.0)},
))

DATASETS.register(PublicDataset(
    name="tmed-2",
    title="TMED-2: PNG stills with view and aortic stenosis labels",
    layout="<SourceFolder>/<query_key>.png, a CSV with query_key, view_label, diagnosis_label, "
           "diagnosis_classifier_split, SourceFolder",
    split="official",
    tasks=("aortic_stenosis", "view"),
    read=read_tmed2,
))

DATASETS.register(PublicDataset(
    name="mimic-iv-echo",
    title="MIMIC-IV-ECHO: DICOM studies joined to echo-study-list.csv by study (keyed ids only)",
    layout="files/pNN/p<subject_id>/s<study_id>/*.dcm, echo-study-list.csv",
    split="none",
    tasks=("ef", "reduced_ef"),
    read=read_mimic_echo,
))
