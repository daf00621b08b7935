"""A small generated downstream archive: shards, a manifest, labels, LV masks and a tiny encoder.

The `downstream_archive` fixture (tests/conftest.py) builds one per test session.

Each source cine is a bright disk (the "LV") on a dark background whose radius follows a cardiac
cycle; EF follows from the smallest and largest disk areas, and the disk's horizontal position
encodes the view, so every task has a learnable signal. The shard clips are made exactly the way
ingestion makes them (timestamp windows, resize_pad), so the masks' alignment can be checked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from echofm.data.manifest import MANIFEST_COLUMNS, make_clip_id, read_manifest, write_manifest
from echofm.io.deid import Pseudonymizer, load_secret
from echofm.preprocess.resample import plan_windows, resize_pad, window_span_ms

VIEWS = ("A2C", "A4C", "PLAX")
SHARD_FRAMES = 32
SHARD_SIZE = 64
ENCODER_OVERRIDES = dict(img_size=32, num_frames=8, patch_size=8, t_patch_size=4, embed_dim=32,
                         depth=2, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
                         decoder_num_heads=2)
# The session's secret (tests/conftest.py sets ECHOFM_DEID_SECRET): manifest ids as ingestion makes them.
KEYED = Pseudonymizer(load_secret())


@dataclass(frozen=True)
class DownstreamArchive:
    root: Path
    shards: Path
    manifest: pd.DataFrame
    manifest_path: Path
    labels: pd.DataFrame
    labels_path: Path
    encoder_path: Path


def source_cine(rng: np.random.Generator, n_frames: int, height: int, width: int, ef: float,
                view_index: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames `[T, H, W, 1]` and LV masks `[T, H, W]` of one synthetic cine at 25 fps."""
    t = np.arange(n_frames) / 25.0
    r_max = 0.28 * min(height, width)
    # Area ratio ES/ED = 1 - EF, so the radius ratio is its square root.
    r_min = r_max * np.sqrt(1.0 - ef / 100.0)
    radius = r_min + (r_max - r_min) * 0.5 * (1 + np.cos(2 * np.pi * t / 1.0))
    cy, cx = height / 2, width * (0.3 + 0.2 * view_index)
    yy, xx = np.mgrid[:height, :width]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    masks = (dist[None] <= radius[:, None, None]).astype(np.uint8)
    noise = rng.integers(0, 30, size=(n_frames, height, width), dtype=np.uint8)
    frames = np.where(masks == 1, 200, 40).astype(np.uint8) + noise
    return frames[..., None], masks


def _manifest_row(**values: object) -> dict:
    row = {name: None for name in MANIFEST_COLUMNS}
    row.update(source_format="avi", ingest_run_id="test-run", key_id=KEYED.key_id,
               ingested_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    row.update(values)
    return row


def make_archive(root: Path, n_patients: int = 12, clips_per_patient: int = 2, seed: int = 0) -> DownstreamArchive:
    from echofm.data.shards import ShardWriter
    from echofm.model import build_model, save_checkpoint

    rng = np.random.default_rng(seed)
    rows, labels = [], []
    (root / "archive").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "masks").mkdir(parents=True, exist_ok=True)
    with ShardWriter(root, prefix="b0", max_count=10) as writer:
        for p in range(n_patients):
            for c in range(clips_per_patient):
                n_src, height, width, fps = 40, 48, 60, 25.0
                ef = float(rng.uniform(20, 70))
                view_index = int(rng.integers(len(VIEWS)))
                frames, masks = source_cine(rng, n_src, height, width, ef, view_index)
                rel = f"p{p:02d}/clip{c}.avi"
                window = plan_windows(n_src, fps, num_frames=SHARD_FRAMES)[0]
                clip = resize_pad(frames[window], SHARD_SIZE)
                clip_id = make_clip_id(hashlib.sha256(rel.encode()).hexdigest(), 0)
                shard, key = writer.write(clip_id, clip, {"clip_id": clip_id})
                start, end = window_span_ms(window, fps)
                mask_file = f"labels/masks/{p:02d}_{c}.npz"
                labelled = np.array([0, 13])  # ED and ES-like frames only, as tracings label them
                np.savez_compressed(root / mask_file, masks=masks[labelled], frame_indices=labelled)
                rows.append(_manifest_row(clip_id=clip_id, source_id=KEYED.source_id(rel), status="accepted",
                                          patient_id=f"pt{p:02d}", shard=shard, key=key, window_index=0,
                                          window_start_ms=start, window_end_ms=end, fps=fps,
                                          n_frames_source=n_src, channels=1))
                # Named by keyed id (as a public-dataset import writes them) and by path too.
                labels.append(dict(source_id=KEYED.source_id(rel), file=rel, patient=f"P{p}", view=VIEWS[view_index], ef=ef,
                                   mask_file=mask_file, heart_rate_bpm=60.0))
    rows.append(_manifest_row(clip_id=make_clip_id("0" * 64, -1), source_id=KEYED.source_id("bad.dcm"),
                              status="rejected", reason="not_dicom", window_index=-1))
    manifest_path = write_manifest(rows, root / "manifest.parquet")
    manifest = read_manifest(manifest_path).to_pandas()
    label_frame = pd.DataFrame(labels)
    labels_path = root / "labels.csv"
    label_frame.to_csv(labels_path, index=False)
    encoder = pretrain_briefly(build_model("tiny", **ENCODER_OVERRIDES), root / "shards", seed)
    encoder_path = save_checkpoint(root / "pretrain" / "checkpoint.pt", encoder,
                                   extra={"normalization": {"mean": [0.3] * 3, "std": [0.25] * 3}})
    return DownstreamArchive(root=root, shards=root / "shards", manifest=manifest,
                             manifest_path=manifest_path, labels=label_frame, labels_path=labels_path,
                             encoder_path=encoder_path)


def pretrain_briefly(model, shards: Path, seed: int, steps: int = 8):
    """A few MAE steps on the archive's clips, so "pretrained" differs from a random init."""
    import torch

    from echofm.preprocess.clips import InputSpec, fit_clip, to_model_input
    from echofm.data.shards import iter_shard

    spec = InputSpec(num_frames=8, img_size=32, mean=(0.3,), std=(0.25,))
    clips = np.stack([fit_clip(frames, spec) for path in sorted(shards.glob("*.tar"))
                      for _, frames, _ in iter_shard(path)])
    video = to_model_input(clips, spec)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        batch = video[(np.arange(8) + 8 * step) % len(video)]
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()

# The tasks of the joint run the multi-task tests share (`multitask_run` in tests/conftest.py).
MULTITASK_TASKS = ("ef", "view", "reduced_ef", "segmentation")


def partial_labels(archive: DownstreamArchive) -> Path:
    """The archive's labels as they usually come: EF missing for every third clip, LV masks on
    every fourth clip only; written beside the full table (mask paths stay relative to it)."""
    labels = archive.labels.copy()
    labels.loc[labels.index % 3 == 0, "ef"] = np.nan
    labels.loc[labels.index % 4 != 0, "mask_file"] = ""
    path = archive.root / "labels-partial.csv"
    labels.to_csv(path, index=False)
    return path
