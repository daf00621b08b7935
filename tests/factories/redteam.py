"""A red-team archive: a PACS-style export with a unique marker string in every channel that can
carry patient details, and the text-free twin of every clip.

Channels (see `MARKERS`): the archive's root folder and the folder and file names (PACS layout,
an MP4 named after the patient, a name that is not valid UTF-8); header attributes, sequence
items, private tags, UIDs built from a number, character sets (UTF-8, Latin-1, an unknown one);
MP4 and AVI container tags; a text file; a truncated DICOM; pixels: banner text outside the fan,
labels and calipers inside it, a label across its edge, a region box that takes in the banner,
an ECG drawn one pixel below the fan. `TWIN_ROOT` holds the same files without any burned-in
text, at the same relative paths and with the same headers.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import json
import os
import struct
import tarfile
import urllib.parse
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pydicom import config as dicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset

from echofm.synth.containers import VARIANT_BY_NAME, RegionSpec, UltrasoundHeader
from echofm.synth.plan import SynthConfig
from echofm.synth.render import Overlay
from echofm.synth.twins import TwinClip, plan_for, render_twins, write_twin

MARKERS: dict[str, str] = {
    "root_folder": "RTROOTQZ1",
    "folder": "RTPATHQZ2",
    "video_name": "RTVIDQZ3",
    "latin1_name": "RTLATQZ4",
    "patient_name": "RTNAMEQZ5",
    "patient_id": "RTPIDQZ6",
    "accession": "RTACCQZ7",
    "institution": "RTINSTQZ8",
    "operator": "RTOPQZ9",
    "referring": "RTREFQZ10",
    "study_description": "RTSTDQZ11",
    "series_description": "RTSERQZ12",
    "manufacturer": "RTMANQZ13",
    "model": "RTMODQZ14",
    "sequence": "RTSEQQZ15",
    "private": "RTPRIVQZ16",
    "charset": "RTCSQZ17",
    "uid_number": "771357924680",
    "image_type": "RTITQZ18",
    "view_code": "RTVCQZ19",
    "utf8_name": "RTÆØÅQZ20",
    "mp4_tag": "RTMP4QZ21",
    "avi_tag": "RTAVIQZ22",
    "banner": "RTBANQZ23",
    "in_fan": "RTFANQZ24",
    "edge": "RTEDGEQZ25",
    "notes": "RTNOTEQZ26",
    "broken": "RTBRKQZ27",
}
CONFIG = SynthConfig(n_clips=8, seed=21, sizes=((480, 640),), fps_range=(25, 25), duration_range_s=(1.28, 1.28),
                     max_frames=32)
ROOT = f"DOE^{MARKERS['root_folder']}_12345678"
STUDY = f"DOE^JOHN_{MARKERS['folder']}_12345678/STUDY_20190317"
LATIN1_FOLDER = b"S\xd8REN_" + MARKERS["latin1_name"].encode() + b"_\xc5SE"


@dataclass(frozen=True)
class RedTeamFile:
    """One media file of the archive: where it lies under the root (bytes, any encoding) and the
    rendered clip with its twin."""

    rel_path: bytes
    clip: TwinClip
    patient: str  # the label table's patient key (not PHI)
    ecg_close: bool = False


@dataclass(frozen=True)
class RedTeamArchive:
    source: Path  # the archive root (its own name carries a marker)
    twin_source: Path
    labels: Path  # CSV naming files by path (some with the root folder in front)
    files: tuple[RedTeamFile, ...]
    other_files: tuple[bytes, ...]  # a text file and a truncated DICOM: rows, no clips


def _annotate(extra_fan_label: bool) -> Callable[[Overlay], Overlay]:
    """Banner and side text made of markers, labels and calipers inside the fan."""

    def annotate(overlay: Overlay) -> Overlay:
        labels = (f"{MARKERS['in_fan']} 4.8cm",) + ((f"LA {MARKERS['in_fan']}",) if extra_fan_label else ())
        return replace(
            overlay,
            header_left=(f"{MARKERS['banner']} HOSP", f"{MARKERS['patient_name']}, JOHN"),
            header_right=(f"ID: {MARKERS['patient_id']}", "17/03/2019 10:11:12"),
            annotations=labels,
            edge_label=MARKERS["edge"],
            calipers=True,
        )

    return annotate


def _header(index: int, *, lying_region: bool, clip: TwinClip) -> Callable[[UltrasoundHeader], UltrasoundHeader]:
    def edit(header: UltrasoundHeader) -> UltrasoundHeader:
        regions = header.regions
        if lying_region:
            # The box takes in the banner with the patient's name above the fan (<= 90% of the frame).
            height, width = clip.marked.sector.shape
            regions = (RegionSpec(x0=0, y0=0, x1=width - 1, y1=clip.marked.sector_box[3]),)
        return replace(
            header,
            patient_name=f"{MARKERS['patient_name']}^JOHN{index}",
            patient_id=f"{MARKERS['patient_id']}{index}",
            accession=MARKERS["accession"],
            institution=f"{MARKERS['institution']} HOSPITAL",
            operator=f"{MARKERS['operator']}^ANNA",
            referring=f"{MARKERS['referring']}^BOB",
            study_description=f"TTE {MARKERS['study_description']}",
            series_description=f"A4C {MARKERS['series_description']}",
            manufacturer=f"{MARKERS['manufacturer']} Medical",
            model=MARKERS["model"],
            study_uid=f"1.2.826.0.1.3680043.8.498.{MARKERS['uid_number']}.{index}",
            regions=regions,
        )

    return edit


def _plant_dataset_markers(path: Path, charset: str) -> None:
    """Sequences, private tags, a UID with letters, ImageType and view code terms, and a
    character set: what a header carries beyond the attributes `UltrasoundHeader` knows."""
    mode = dicom_config.settings.writing_validation_mode
    dicom_config.settings.writing_validation_mode = dicom_config.IGNORE
    try:
        ds = dcmread(path)
        ds.SpecificCharacterSet = charset
        if charset == "ISO_IR 192":
            ds.PatientName = f"{MARKERS['utf8_name']}^JOHN"
        elif charset == "ISO_IR 100":
            ds.PatientName = f"{MARKERS['charset']}Ø^JOHN"
        request = Dataset()
        request.RequestedProcedureDescription = f"ECHO {MARKERS['sequence']}"
        request.ScheduledProcedureStepID = MARKERS["sequence"]
        request.ReferencedSOPInstanceUID = f"1.2.826.0.1.{MARKERS['sequence']}"  # letters in a UI
        ds.RequestAttributesSequence = [request]
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = MARKERS["view_code"], "99RT"
        code.CodeMeaning = f"Apical four chamber {MARKERS['view_code']}"
        ds.ViewCodeSequence = [code]
        ds.ImageType = ["ORIGINAL", "PRIMARY", MARKERS["image_type"], "0001"]
        block = ds.private_block(0x0009, f"{MARKERS['private']} CREATOR", create=True)
        block.add_new(0x01, "LO", f"{MARKERS['private']} NOTE")
        ds.save_as(path)
    finally:
        dicom_config.settings.writing_validation_mode = mode


def _tag_mp4(path: Path, text: str) -> None:
    """A QuickTime comment (`moov/udta/©cmt`), where an export puts the patient's name."""
    data = bytearray(path.read_bytes())
    offset, moov = 0, None
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"moov":
            moov = offset
        offset += size
    assert moov is not None and moov + struct.unpack(">I", data[moov : moov + 4])[0] == len(data), "moov last"
    payload = text.encode()
    comment = struct.pack(">I4sHH", 12 + len(payload), b"\xa9cmt", len(payload), 0) + payload
    udta = struct.pack(">I4s", 8 + len(comment), b"udta") + comment
    data += udta
    data[moov : moov + 4] = struct.pack(">I", struct.unpack(">I", data[moov : moov + 4])[0] + len(udta))
    path.write_bytes(bytes(data))


def _tag_avi(path: Path, text: str) -> None:
    """A RIFF `LIST INFO` comment (`ICMT`) at the end of the file."""
    payload = text.encode() + b"\x00"
    payload += b"\x00" * (len(payload) % 2)
    info = b"INFO" + b"ICMT" + struct.pack("<I", len(payload)) + payload
    chunk = b"LIST" + struct.pack("<I", len(info)) + info
    data = bytearray(path.read_bytes()) + chunk
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))


# (relative path, container variant, label patient, lying region, ECG one pixel below the fan,
# character set, second label inside the fan)
_LAYOUT: tuple[tuple[bytes, str, str, bool, bool, str, bool], ...] = (
    (f"{STUDY}/IMG0001.dcm".encode(), "explicit_le_mono2", "A", True, True, "ISO_IR 192", True),
    (f"{STUDY}/IMG0002.dcm".encode(), "jpeg_baseline_ybr422", "A", False, False, "ISO_IR 100", False),
    (f"{MARKERS['video_name']}_SMITH_99887766.mp4".encode(), "mp4", "B", False, False, "", True),
    (LATIN1_FOLDER + b"/IMG\xff0001.dcm", "rle_rgb", "C", False, True, "ISO_IR MARKUNKNOWN", False),
    (f"JONES_{MARKERS['avi_tag']}/CLIP.avi".encode(), "avi", "D", False, False, "", False),
    (b"WILLIAMS_77/IMG0001.dcm", "jpegls_mono2", "E", True, False, "ISO_IR 100", False),
    (b"BROWN_88/IMG0001.dcm", "explicit_le_mono2", "F", False, False, "ISO_IR 100", True),
    (b"TAYLOR_99/IMG0001.dcm", "implicit_le_mono1", "G", False, True, "ISO_IR 100", False),
)


def build_redteam(root: Path) -> RedTeamArchive:
    """Write the archive under `root / ROOT`, its twin under `root / "twin"`, and a label table."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings about the values planted here
        return _build(root)


def _build(root: Path) -> RedTeamArchive:
    source, twin_source = root / ROOT, root / "twin"
    files: list[RedTeamFile] = []
    labels: list[dict[str, object]] = []
    for index, (rel, variant, patient, lying, ecg_close, charset, extra) in enumerate(_LAYOUT):
        plan = replace(plan_for(CONFIG, index), variant=VARIANT_BY_NAME[variant], has_regions=variant not in ("mp4", "avi"))
        clip = render_twins(CONFIG, plan, annotate=_annotate(extra), ecg_gap=1 if ecg_close else None)
        for base, text in ((source, True), (twin_source, False)):
            path = base / os.fsdecode(rel)
            write_twin(CONFIG, clip, path, text=text, edit_header=_header(index, lying_region=lying, clip=clip))
            if variant == "mp4":
                _tag_mp4(path, f"{MARKERS['mp4_tag']} {MARKERS['patient_name']}")
            elif variant == "avi":
                _tag_avi(path, f"{MARKERS['avi_tag']} {MARKERS['patient_name']}")
            else:
                _plant_dataset_markers(path, charset)
        files.append(RedTeamFile(rel_path=rel, clip=clip, patient=patient, ecg_close=ecg_close))
        if b"\xd8" not in rel:  # a CSV holds text: the Latin-1 name stays out of the table
            # Every other label path carries the archive's root folder in front of it.
            name = os.fsdecode(rel)
            labels.append({"file": f"{ROOT}/{name}" if index % 2 else name, "patient": patient,
                           "ef": float(plan.heart.ef), "view": plan.view})
    notes = f"notes/{MARKERS['notes']}.txt".encode()
    (source / "notes").mkdir()
    (source / os.fsdecode(notes)).write_text(f"follow-up for {MARKERS['patient_name']} {MARKERS['notes']}\n")
    broken = f"{STUDY}/{MARKERS['broken']}.dcm".encode()
    whole = (source / os.fsdecode(files[0].rel_path)).read_bytes()
    (source / os.fsdecode(broken)).write_bytes(whole[: len(whole) // 2])  # header intact, pixels cut
    table = root / "labels.csv"
    pd.DataFrame(labels).to_csv(table, index=False)
    return RedTeamArchive(source=source, twin_source=twin_source, labels=table, files=tuple(files),
                          other_files=(notes, broken))


def needles(marker: str) -> set[bytes]:
    """`marker` as it could appear in bytes: as written, lower- and upper-cased; raw and escaped
    for JSON (`\\u00c6`), HTML and URLs; each in UTF-8, Latin-1 and UTF-16 (both byte orders).
    Returned with ASCII letters lower-cased (`bytes.lower`): look for them in `blob.lower()`."""
    out: set[bytes] = set()
    for cased in {marker, marker.lower(), marker.upper()}:
        forms = {cased, json.dumps(cased)[1:-1], json.dumps(cased, ensure_ascii=False)[1:-1], html.escape(cased),
                 urllib.parse.quote(cased), urllib.parse.quote_plus(cased), "".join(f"&#{ord(c)};" for c in cased)}
        for form in forms:
            for encoding in ("utf-8", "latin-1", "utf-16-le", "utf-16-be"):
                try:
                    out.add(form.encode(encoding).lower())
                except UnicodeEncodeError:
                    continue
    return out


def _parquet_text(blob: bytes) -> bytes:
    """Every cell of a Parquet file, as bytes (its pages are compressed, its strings dictionary-coded)."""
    cells = pq.read_table(io.BytesIO(blob)).to_pylist()
    return b"\n".join(value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
                      for row in cells for value in row.values())


def _png_text(blob: bytes) -> bytes:
    """The compressed text chunks of a PNG (zTXt, and iTXt with its compression flag set)."""
    out, offset = [], 8
    while offset + 8 <= len(blob):
        size, kind = struct.unpack(">I4s", blob[offset : offset + 8])
        data = blob[offset + 8 : offset + 8 + size]
        if kind == b"zTXt":
            out.append(zlib.decompress(data[data.index(b"\0") + 2 :]))
        elif kind == b"iTXt" and data[data.index(b"\0") + 1] == 1:
            keyword_end = data.index(b"\0")
            rest = data[keyword_end + 3 :]
            rest = rest[rest.index(b"\0") + 1 :]  # language tag
            out.append(zlib.decompress(rest[rest.index(b"\0") + 1 :]))  # translated keyword
        offset += 12 + size
    return b"\n".join(out)


def unpacked(where: str, blob: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """`blob` and, for every container that compresses or nests (Parquet, zip (torch checkpoints,
    npz), tar (shards), gzip, PNG text), what it holds, recursively."""
    yield where, blob
    if depth > 4:
        return
    inner: list[tuple[str, bytes]] = []
    if blob[:4] == b"PAR1":
        inner.append(("parquet", _parquet_text(blob)))
    elif blob[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            # A stored member (the tensors of a torch checkpoint) is in `blob` byte for byte already.
            inner += [(info.filename, archive.read(info)) for info in archive.infolist()
                      if info.compress_type != zipfile.ZIP_STORED]
    elif blob[:2] == b"\x1f\x8b":
        inner.append(("gzip", gzip.decompress(blob)))
    elif blob[:8] == b"\x89PNG\r\n\x1a\n":
        inner.append(("png text", _png_text(blob)))
    elif len(blob) > 262 and blob[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
            inner += [(m.name, archive.extractfile(m).read()) for m in archive.getmembers() if m.isfile()]
    for name, content in inner:
        yield from unpacked(f"{where}!{name}", content, depth + 1)


def find_markers(folders: list[Path], printed: list[str], secrets: set[bytes]) -> list[tuple[str, str]]:
    """(channel, where) for every marker (and secret form) found in any file under `folders`, any
    thing inside those files, or any of the `printed` texts; empty when none leaked."""
    wanted = {name: needles(marker) for name, marker in MARKERS.items()} | {"secret": {form.lower() for form in secrets}}
    blobs = [item for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()
             for item in unpacked(str(path), path.read_bytes())]
    blobs += [(f"printed {i}", text.encode("utf-8", "surrogateescape")) for i, text in enumerate(printed)]
    found, seen = set(), set()
    for where, blob in blobs:
        digest = hashlib.sha256(blob).digest()
        if digest in seen:  # the same model file in the run, the registry and the artifacts
            continue
        seen.add(digest)
        hay = blob.lower()
        found |= {(channel, where) for channel, forms in wanted.items() if any(form in hay for form in forms)}
    return sorted(found)
