"""Small replicas of the public datasets' published layouts, built from their schemas.

Each replica holds a handful of short cines (or stills) of a synthetic heart in an ultrasound
fan: an LV cavity whose size follows a cardiac cycle (its area ratio gives the EF), the
myocardium around it and the left atrium below, with speckle that changes every frame, so that
ingestion's sector and QC checks pass as on real echo. The label files follow each dataset's
published columns (FileList.csv, VolumeTracings.csv, MeasurementsList.csv, Info_*.cfg, the
TMED-2 CSV, echo-study-list.csv), with free-text columns and extra, unlisted files that carry
planted PHI (`Replica.phi`), which must never reach an output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

PHI_NAME = "DOE^JANE"
PHI_MRN = "MRN8675309"
PHI_DATE = "19500401"
PHI: tuple[str, ...] = (PHI_NAME, PHI_MRN, PHI_DATE, "Jane Doe")
FREE_TEXT = f"patient Jane Doe {PHI_MRN} born {PHI_DATE}"


@dataclass
class Replica:
    """A replica on disk. root: the dataset as downloaded; phi: strings planted in names and
    free text; splits: `{record: split}` the dataset defines; unusable: records listed that
    cannot become clips, by reason."""

    root: Path
    phi: tuple[str, ...] = PHI
    splits: dict[str, object] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)


def heart_cine(seed: int, n_frames: int, height: int, width: int, ef: float, fps: float = 40.0,
               period_s: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames `[T, H, W]` and labels `[T, H, W]` (1 LV cavity, 2 myocardium, 3 left atrium).

    End-diastole at frame 0, end-systole half a period later; the cavity area at ES is
    `1 - ef / 100` of the area at ED.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    apex_x, apex_y, radius, half = width / 2, 0.04 * height, 0.93 * height, math.radians(38)
    r = np.hypot(xx - apex_x, yy - apex_y)
    angle = np.arctan2(xx - apex_x, yy - apex_y)
    fan = (r <= radius) & (np.abs(angle) <= half)
    t = np.arange(n_frames) / fps
    scale = np.sqrt(1.0 - (ef / 100.0) * (1 - np.cos(2 * np.pi * t / period_s)) / 2)
    cx, cy = width / 2, 0.45 * height
    frames = np.zeros((n_frames, height, width), np.uint8)
    labels = np.zeros((n_frames, height, width), np.uint8)
    atrium = ((xx - cx) / (0.12 * width)) ** 2 + ((yy - 0.8 * height) / (0.08 * height)) ** 2 <= 1
    for i, s in enumerate(scale):
        a, b = 0.13 * width * s, 0.24 * height * s
        cavity = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1
        wall = (((xx - cx) / (a + 0.05 * width)) ** 2 + ((yy - cy) / (b + 0.05 * height)) ** 2 <= 1) & ~cavity
        image = rng.integers(60, 120, size=(height, width)).astype(np.uint8)
        image[wall] = rng.integers(170, 230, size=int(wall.sum()))
        image[cavity | atrium] = rng.integers(5, 30, size=int((cavity | atrium).sum()))
        frames[i] = np.where(fan, image, 0)
        labels[i][cavity & fan], labels[i][wall & fan], labels[i][atrium & fan & ~cavity & ~wall] = 1, 2, 3
    return frames, labels


def _ellipse_axes(labels: np.ndarray) -> tuple[float, float, float, float]:
    """Centre and semi-axes (x, y) of the LV cavity in one label frame."""
    ys, xs = np.nonzero(labels == 1)
    return float(xs.mean()), float(ys.mean()), (xs.max() - xs.min() + 1) / 2, (ys.max() - ys.min() + 1) / 2


def chord_rows(name: str, frame: int, labels: np.ndarray, n_chords: int = 20) -> list[dict]:
    """EchoNet-Dynamic tracing rows of one frame: the long axis, then chords across the cavity."""
    cx, cy, a, b = _ellipse_axes(labels)
    rows = [dict(FileName=name, X1=cx, Y1=cy - b, X2=cx, Y2=cy + b, Frame=frame)]
    for y in np.linspace(cy - b, cy + b, n_chords + 2)[1:-1]:
        half = a * math.sqrt(max(0.0, 1 - ((y - cy) / b) ** 2))
        rows.append(dict(FileName=name, X1=cx - half, Y1=y, X2=cx + half, Y2=y, Frame=frame))
    return rows


def outline_rows(name: str, frame: int, labels: np.ndarray, n_points: int = 24) -> list[dict]:
    """EchoNet-Pediatric tracing rows of one frame: points of the cavity outline."""
    cx, cy, a, b = _ellipse_axes(labels)
    theta = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    return [dict(FileName=name, X=cx + a * np.cos(u), Y=cy + b * np.sin(u), Frame=frame) for u in theta]


def _write_avi(path: Path, frames: np.ndarray, fps: float = 40.0) -> None:
    from echofm.synth.containers import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps, "avi")


def _echonet_name(i: int) -> str:
    return f"0X{0xA1B2C3D4E5F60000 + i:016X}"


def echonet_dynamic(root: Path, n: int = 6) -> Replica:
    """Videos/, FileList.csv (FileName without .avi, as the release), VolumeTracings.csv (with
    .avi). Plus: a listed row named with PHI, an unlisted video named with PHI, a row without
    its video, and a free-text column."""
    splits = ["TRAIN", "TRAIN", "TRAIN", "VAL", "TEST", "TEST"]
    efs = [30.0, 62.0, 46.0, 54.0, 35.0, 70.0]  # reduced EF (< 40 %) and not, in train and in test
    files, traces, replica = [], [], Replica(root=root)
    for i in range(n):
        name, ef = _echonet_name(i), efs[i % len(efs)]
        frames, labels = heart_cine(i, 32, 112, 112, ef)
        _write_avi(root / "Videos" / f"{name}.avi", frames)
        files.append(dict(FileName=name, EF=ef, ESV=40.0 + i, EDV=100.0 + i, FrameHeight=112, FrameWidth=112, FPS=40,
                          NumberOfFrames=32, Split=splits[i % len(splits)], Comment=FREE_TEXT))
        es = 16  # half the 0.8 s period at 40 fps
        traces += chord_rows(f"{name}.avi", es, labels[es]) + chord_rows(f"{name}.avi", 0, labels[0])
        replica.splits[name] = splits[i % len(splits)].lower()
    frames, _ = heart_cine(99, 32, 112, 112, 50.0)
    _write_avi(root / "Videos" / f"{PHI_NAME}_{PHI_DATE}.avi", frames)  # unlisted: never ingested
    _write_avi(root / "Videos" / f"{PHI_NAME}_{PHI_MRN}.avi", frames)
    files.append(dict(FileName=f"{PHI_NAME}_{PHI_MRN}", EF=50.0, ESV=50, EDV=100, FrameHeight=112, FrameWidth=112,
                      FPS=40, NumberOfFrames=32, Split="TRAIN", Comment=FREE_TEXT))
    missing = _echonet_name(n)
    files.append(dict(FileName=missing, EF=55.0, ESV=45, EDV=100, FrameHeight=112, FrameWidth=112, FPS=40,
                      NumberOfFrames=32, Split="TEST", Comment=""))
    replica.unusable = {missing: "video_missing"}
    pd.DataFrame(files).to_csv(root / "FileList.csv", index=False)
    pd.DataFrame(traces).to_csv(root / "VolumeTracings.csv", index=False)
    return replica


def echonet_pediatric(root: Path, per_view: int = 4) -> Replica:
    """A4C/ and PSAX/ with Videos/, FileList.csv (fold 0-9, demographics) and VolumeTracings.csv."""
    replica = Replica(root=root)
    for v, view in enumerate(("A4C", "PSAX")):
        files, traces = [], []
        for i in range(per_view):
            name = f"CR{v}{i:02d}a7555-CR{v}{i:02d}a7582-{i:06d}"
            fold = (i + v) % 10
            frames, labels = heart_cine(20 + 10 * v + i, 32, 112, 112, 35.0 + 7 * i)
            _write_avi(root / view / "Videos" / f"{name}.avi", frames)
            files.append(dict(FileName=f"{name}.avi", EF=35.0 + 7 * i, Sex="F", Age=7, Weight=24.0, Height=120.0,
                              Split=fold))
            traces += outline_rows(f"{name}.avi", 0, labels[0]) + outline_rows(f"{name}.avi", 16, labels[16])
            if i == 0:  # the release marks frames a sonographer could not trace
                traces.append(dict(FileName=f"{name}.avi", X="", Y="", Frame="No Systolic"))
            replica.splits[name] = fold
        pd.DataFrame(files).to_csv(root / view / "FileList.csv", index=False)
        pd.DataFrame(traces).to_csv(root / view / "VolumeTracings.csv", index=False)
    return replica


def echonet_lvh(root: Path, n: int = 5) -> Replica:
    """Batch1-4/ PLAX videos and MeasurementsList.csv (IVSd, LVIDd, LVIDs, LVPWd rows per video, cm)."""
    splits = ["train", "train", "train", "val", "test"]
    rows, replica = [], Replica(root=root)
    for i in range(n):
        name = _echonet_name(100 + i)
        frames, _ = heart_cine(40 + i, 32, 128, 160, 55.0)
        _write_avi(root / f"Batch{1 + i % 4}" / f"{name}.avi", frames)
        for calc, value in (("IVSd", 0.9 + 0.05 * i), ("LVIDd", 4.5 + 0.1 * i), ("LVIDs", 3.0), ("LVPWd", 1.0 + 0.04 * i)):
            rows.append({"Unnamed: 0": len(rows), "HashedFileName": name, "Calc": calc, "CalcValue": value, "Frame": 3,
                         "X1": 40.0, "X2": 60.0, "Y1": 50.0, "Y2": 70.0, "Frames": 32, "FPS": 40, "Width": 160,
                         "Height": 128, "split": splits[i]})
        replica.splits[name] = splits[i]
    for path in (root / f"Batch{b}" for b in range(1, 5)):
        path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "MeasurementsList.csv", index=False)
    return replica


def write_nifti(path: Path, volume: np.ndarray, spacing: tuple[float, float], frame_s: float | None = None) -> None:
    """`[T, H, W]` as NIfTI with voxel axes (column, row, time), as CAMUS stores its sequences."""
    import nibabel

    image = nibabel.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine=np.diag([*spacing[::-1], 1.0, 1.0]))
    image.header.set_zooms((spacing[1], spacing[0], frame_s or 1.0))
    image.header.set_xyzt_units("mm", "sec" if frame_s else "unknown")
    nibabel.save(image, str(path))


def write_mhd(path: Path, volume: np.ndarray, spacing: tuple[float, float]) -> None:
    """`[T, H, W]` uint8 as MetaImage: a text header and the voxels in `<stem>.raw` (x fastest)."""
    t, h, w = volume.shape
    path.with_suffix(".raw").write_bytes(np.ascontiguousarray(volume, dtype=np.uint8).tobytes())
    path.write_text(f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                    f"ElementSpacing = {spacing[1]} {spacing[0]} 1\nDimSize = {w} {h} {t}\nElementType = MET_UCHAR\n"
                    f"ElementDataFile = {path.with_suffix('.raw').name}\n")


def camus(root: Path, patients: int = 4, *, release: str = "nifti") -> Replica:
    """`release="nifti"`: database_nifti/patientNNNN/ with half sequences and their `_gt`,
    Info_*.cfg (EF, FrameRate) and database_split/. `"mhd"`: training/patientNNNN/ with
    `_sequence.mhd/.raw`, ED/ES `_gt`, Info_*.cfg in the older keys (LVef, LVedv, LVesv), no
    split files. Pixels are 0.3 x 0.15 mm (not square), as CAMUS's are."""
    replica = Replica(root=root)
    base = root / ("database_nifti" if release == "nifti" else "training")
    split_of = {0: "train", 1: "train", 2: "val", 3: "test"}
    for p in range(1, patients + 1):
        patient = f"patient{p:04d}"
        folder = base / patient
        folder.mkdir(parents=True)
        for v, view in enumerate(("2CH", "4CH")):
            n = 20
            frames, labels = heart_cine(60 + 2 * p + v, n, 96, 192, 40.0 + 5 * p, fps=n / 0.4, period_s=0.8)
            record = f"{patient}_{view}"
            ed, es = 1, n  # 1-based, as Info_*.cfg; the cine is ED -> ES
            if release == "nifti":
                write_nifti(folder / f"{record}_half_sequence.nii.gz", frames, (0.3, 0.15))
                write_nifti(folder / f"{record}_half_sequence_gt.nii.gz", labels, (0.3, 0.15))
                info = f"ED: {ed}\nES: {es}\nNbFrame: {n}\nSex: F\nAge: 61\nImageQuality: Good\nEF: {40.0 + 5 * p}\nFrameRate: 50\n"
            else:
                write_mhd(folder / f"{record}_sequence.mhd", frames, (0.3, 0.15))
                write_mhd(folder / f"{record}_ED_gt.mhd", labels[:1], (0.3, 0.15))
                write_mhd(folder / f"{record}_ES_gt.mhd", labels[-1:], (0.3, 0.15))
                info = (f"ED: {ed}\nES: {es}\nNbFrame: {n}\nSex: M\nAge: 70\nImageQuality: Medium\n"
                        f"LVedv: 120.0\nLVesv: 60.0\nLVef: {40.0 + 5 * p}\n")
            (folder / f"Info_{view}.cfg").write_text(info)
            replica.splits[record] = split_of[(p - 1) % 4] if release == "nifti" else None
    if release == "nifti":
        (root / "database_split").mkdir()
        for name, split in (("subgroup_training.txt", "train"), ("subgroup_validation.txt", "val"),
                            ("subgroup_testing.txt", "test")):
            ids = [f"patient{p:04d}" for p in range(1, patients + 1) if split_of[(p - 1) % 4] == split]
            (root / "database_split" / name).write_text("\n".join(ids) + "\n")
    return replica


def tmed2(root: Path, n: int = 9) -> Replica:
    """view_and_diagnosis_labeled_set/labeled/*.png and its CSV (one per fold; fold 0 here)."""
    import cv2

    folder = "view_and_diagnosis_labeled_set/labeled"
    (root / folder).mkdir(parents=True)
    diagnoses = ["no_AS", "mild_AS", "mildtomod_AS", "moderate_AS", "severe_AS", "no_AS", "severe_AS", "mild_AS",
                 "Not_Provided"]
    views = ["PLAX", "PSAX", "A4C", "A2C", "A4CorA2CorOther"]
    splits = ["train", "train", "train", "train", "train", "val", "val", "test", "test"]
    rows, replica = [], Replica(root=root)
    for i in range(n):
        key = f"{1000 + i // 2}s1_{i}.png"
        frames, _ = heart_cine(80 + i, 1, 112, 112, 50.0)
        cv2.imwrite(str(root / folder / key), frames[0])
        rows.append(dict(query_key=key, view_label=views[i % len(views)], diagnosis_label=diagnoses[i % len(diagnoses)],
                         diagnosis_classifier_split=splits[i % len(splits)], SourceFolder=folder, notes=FREE_TEXT))
        replica.splits[key] = splits[i % len(splits)]
    cv2.imwrite(str(root / folder / f"{PHI_NAME}.png"), heart_cine(98, 1, 112, 112, 50.0)[0][0])  # unlisted
    (root / "DEV479").mkdir()
    pd.DataFrame(rows).to_csv(root / "DEV479" / "TMED2_fold0_labeledpart.csv", index=False)
    return replica


def mimic_echo(root: Path, subjects: int = 4) -> Replica:
    """files/pNN/p<subject>/s<study>/<study>_<NNNN>.dcm (two per study, PHI in the headers) and
    echo-study-list.csv with an EF column joined from measurements, dates and note ids."""
    from echofm.synth.containers import VARIANT_BY_NAME, UltrasoundHeader, write_dicom

    rows, replica = [], Replica(root=root)
    replica.phi = (*PHI, "10000032", "90000001")
    for s in range(subjects):
        subject, study = f"{10000032 + s}", f"{90000001 + s}"
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True)
        for k in range(2):
            frames, _ = heart_cine(120 + 2 * s + k, 32, 128, 128, 40.0 + 6 * s)
            header = UltrasoundHeader(
                patient_name=PHI_NAME, patient_id=subject, birth_date=PHI_DATE, sex="F", study_uid=f"1.2.3.{study}",
                series_uid=f"1.2.3.{study}.{k}", sop_uid=f"1.2.3.{study}.{k}.1", study_date="21800101", study_time="101010",
                accession=PHI_MRN, study_description="TTE", institution="Beth Israel", operator="Op^Name",
                referring="Ref^Doc", manufacturer="Philips", model="EPIQ 7C", series_number=k + 1,
                instance_number=1, fps=40.0, fps_tags=("FrameTime",),
            )
            write_dicom(folder / f"{study}_{k + 1:04d}.dcm", frames, VARIANT_BY_NAME["explicit_le_mono2"], header)
        rows.append(dict(subject_id=subject, study_id=study, study_datetime="2180-01-01 10:10:10",
                         note_id=f"{subject}-EC-{s}", note_seq=s, note_charttime="2180-01-01 12:00:00", ef=40.0 + 6 * s))
    rows.append(dict(subject_id="10009999", study_id="99999999", study_datetime="2180-02-02 10:10:10",
                     note_id="x", note_seq=0, note_charttime="", ef=55.0))  # listed, no DICOM
    pd.DataFrame(rows).to_csv(root / "echo-study-list.csv", index=False)
    return replica


BUILDERS = {
    "echonet-dynamic": echonet_dynamic,
    "echonet-pediatric": echonet_pediatric,
    "echonet-lvh": echonet_lvh,
    "camus": camus,
    "camus-mhd": lambda root: camus(root, release="mhd"),
    "tmed-2": tmed2,
    "mimic-iv-echo": mimic_echo,
}
# Ingestion at a small clip size: the tiny test encoder reads 32 x 32 pixels anyway.
REPLICA_INGEST = {"size": 64}


@dataclass
class PreparedReplica:
    """A replica after `prepare_dataset`: its dataset name, root, OUT and the report."""

    name: str
    replica: Replica
    out: Path
    report: object

    @property
    def labels_path(self) -> Path:
        return self.out / "labels.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.parquet"


def dataset_of(replica_name: str) -> str:
    """The registered dataset a replica is of (`camus-mhd` is CAMUS's older release)."""
    return "camus" if replica_name.startswith("camus") else replica_name


def serial_ingest(dataset: str, **given: object):  # noqa: ANN201 - the prepare_dataset ingest callable
    """Ingestion in this process (`ingest_serially`, what the flow's tasks call) with the dataset's
    ingest defaults and `given` on top."""
    from echofm.datasets.catalog import DATASETS
    from echofm.datasets.prepare import ingest_settings
    from echofm.ingest.config import IngestConfig
    from echofm.ingest.run import ingest_serially

    config = IngestConfig(**ingest_settings(DATASETS[dataset], {**REPLICA_INGEST, **given}))
    return lambda source, output: ingest_serially(source, output, config)


def prepare_replica(replica_name: str, base: Path) -> PreparedReplica:
    """Build the replica under `base/root` and prepare it into `base/out`."""
    from echofm.datasets.prepare import prepare_dataset

    replica = BUILDERS[replica_name](base / "root")
    dataset = dataset_of(replica_name)
    report = prepare_dataset(dataset, replica.root, base / "out", ingest=serial_ingest(dataset))
    return PreparedReplica(name=dataset, replica=replica, out=base / "out", report=report)
