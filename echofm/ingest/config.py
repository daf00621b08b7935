"""Configuration of an ingestion run: which views to keep, how to cut clips, QC thresholds.

Everything a run decides by number lives here, frozen and validated, so a run is reproducible
from its config alone and the manifest's reasons can be traced to a threshold. `IngestOptions`
adds where batches run; it is the flow's form and the source of `echofm ingest`'s flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from echofm.errors import IngestError
from echofm.ingest.views import CANONICAL_VIEWS, DEFAULT_VIEWS
from echofm.options import Options

View = Literal[CANONICAL_VIEWS]  # type: ignore[valid-type]


@dataclass(frozen=True, kw_only=True)
class QCThresholds:
    """Per-clip quality limits; each violated limit becomes one named reason in the manifest.

    Intensities are uint8 grey levels (0-255) measured inside the sector mask.
    """

    min_frames: int = 16  # frames in the source; fewer -> `too_few_frames`
    min_duration_ms: float = 500.0  # source duration; shorter -> `too_short`
    min_fps: float = 10.0  # outside [min_fps, max_fps] -> `fps_out_of_range`
    max_fps: float = 250.0
    min_height: int = 112  # source pixels; smaller -> `too_small`
    min_width: int = 112
    blank_max_mean: float = 3.0  # sector mean at or below -> `blank` (an empty or black clip)
    blank_max_std: float = 2.0  # ... or spatial std at or below (a uniform grey field)
    frozen_max_motion: float = 0.5  # mean |frame difference| at or below -> `frozen`
    min_sector_area: float = 0.05  # sector area / image area outside the range ->
    max_sector_area: float = 0.98  # `sector_area_implausible`
    max_saturated_fraction: float = 0.25  # sector pixels at 255 above -> `saturated`
    require_sector: bool = True  # a clip whose sector cannot be found -> `no_sector`

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ValueError("min_frames must be >= 1")
        if self.min_duration_ms < 0:
            raise ValueError("min_duration_ms must be >= 0")
        if not 0 < self.min_fps < self.max_fps:
            raise ValueError("need 0 < min_fps < max_fps")
        if self.min_height < 1 or self.min_width < 1:
            raise ValueError("min_height and min_width must be >= 1")
        if not 0.0 <= self.min_sector_area < self.max_sector_area <= 1.0:
            raise ValueError("need 0 <= min_sector_area < max_sector_area <= 1")
        if not 0.0 <= self.max_saturated_fraction <= 1.0:
            raise ValueError("max_saturated_fraction must lie in [0, 1]")
        if self.blank_max_mean < 0 or self.blank_max_std < 0 or self.frozen_max_motion < 0:
            raise ValueError("blank and frozen thresholds must be >= 0")


# The help of every `secret_file` option (ingestion, fine-tuning, evaluation, the pipeline).
SECRET_FILE_HELP = (
    "de-identification secret file, outside every OUTPUT (made by `echofm keygen FILE`); "
    "default: the ECHOFM_DEID_SECRET environment variable"
)


class IngestConfigError(IngestError, ValueError):
    """Ingestion options that cannot run (unknown views, bad sizes, a malformed classifier spec)."""


class IngestConfig(Options):
    """How one ingestion run turns files into clips.

    views: canonical views to keep (see `echofm.ingest.views.CANONICAL_VIEWS`); `unknown` keeps
        files whose view the classifier cannot tell (MP4/AVI carry no view in their header).
    window_ms: duration of one clip window in ms; None lets `plan_windows` use one cardiac cycle
        when the heart rate is known, else its default duration.
    max_windows: most clips cut from one long cine.
    num_frames / size: output clip shape `[num_frames, size, size, C]`.
    batch_size: files per Prefect task (hundreds at scale; one task per batch, never per file).
    codec: shard codec name from `echofm.data.codec.CODECS`; None uses that module's default.
    shard_max_clips: clips per shard before the writer starts the next tar.
    min_sector_frames: distinct frames the sector mask is estimated from; windows holding fewer
        (short windows of low-frame-rate cines) get frames spread over the cine decoded as well.
    view_classifier: "module:callable" spec of a `ViewClassifier` factory; None uses the header
        classifier. A spec (not an object) so every worker process can build its own.
    fast_decode: decode JPEG DICOM frames downscaled in the DCT domain (by 2, 4 or 8, the longer
        side staying >= `size`) before the resize: ~1.4x the clips per core on 800 x 600 cines,
        but the pixels differ from a full decode by more than the source's own JPEG error at the
        output size (docs/benchmarks.md, `--fast-decode`), hence off by default.
    secret_file: the de-identification secret file (outside OUTPUT); None reads the secret from
        `ECHOFM_DEID_SECRET` (in every worker). The path, never the secret, travels to workers.
    path_map: where to write the map from keyed source ids back to paths (outside OUTPUT, mode
        0600); None writes no map.
    rehash: read and hash every file under SOURCE again, ignoring the discovery cache (which
        trusts a file whose size, mtime and inode are unchanged; `echofm.ingest.discovery_cache`).
    """

    error: ClassVar[type[Exception]] = IngestConfigError

    views: tuple[View, ...] = Field(default=DEFAULT_VIEWS, min_length=1, description="canonical views to keep")
    window_ms: float | None = Field(default=None, gt=0, description="clip window in ms (default: one cardiac cycle, else 1280)")
    max_windows: int = Field(default=1, ge=1, le=64, description="most clips cut from one cine")
    num_frames: int = Field(default=32, ge=1, description="frames per output clip")
    size: int = Field(default=224, ge=8, description="output frame side in pixels")
    batch_size: int = Field(default=64, ge=1, le=10_000, description="files per batch task")
    codec: str | None = Field(default=None, description="shard codec (default: the measured default of echofm.data.codec)")
    shard_max_clips: int = Field(default=1000, ge=1, description="clips per shard")
    min_sector_frames: int = Field(default=24, ge=2, description="distinct frames the sector mask is estimated from")
    view_classifier: str | None = Field(default=None, description="'module:callable' building a ViewClassifier")
    fast_decode: bool = Field(
        default=False,
        description="decode JPEG DICOM frames downscaled in the DCT domain before the resize "
                    "(faster; pixels differ from a full decode, see docs/benchmarks.md)",
    )
    secret_file: str | None = Field(default=None, description=SECRET_FILE_HELP)
    path_map: str | None = Field(
        default=None, description="write the map from keyed source ids back to paths to this file (outside OUTPUT, mode 0600)"
    )
    rehash: bool = Field(
        default=False,
        description="read and hash every file again, ignoring the discovery cache (which trusts files whose size, "
                    "mtime and inode are unchanged; use it when files may be rewritten keeping all three)",
    )
    qc: QCThresholds = Field(default_factory=QCThresholds, description="per-clip quality limits")

    @field_validator("views", mode="before")
    @classmethod
    def _known_views(cls, views: Any) -> Any:
        unknown = sorted(set(views) - set(CANONICAL_VIEWS)) if isinstance(views, (list, tuple)) else []
        if unknown:
            raise ValueError(f"unknown views {unknown}; choose from {list(CANONICAL_VIEWS)}")
        return views

    @field_validator("view_classifier")
    @classmethod
    def _spec(cls, spec: str | None) -> str | None:
        if spec is not None and ":" not in spec:
            raise ValueError("view_classifier must be a 'module:callable' spec")
        return spec


class IngestOptions(IngestConfig):
    """The `ingest-archive` flow's form and the flags of `echofm ingest`: the run's config, where
    its batches run, and when its completed event asks for pretraining."""

    workers: int | None = Field(default=None, ge=1, description="local worker processes (default: all cores)")
    dask_address: str | None = Field(default=None, description="run batches on this Dask scheduler, e.g. tcp://host:8786")
    min_new_clips_for_pretraining: int = Field(
        default=1000, ge=0,
        description="the completed event is labelled echofm.enough-new-clips=true (which triggers the "
                    "pretraining deployment) when the run accepted at least this many new clips",
    )

    def to_config(self) -> IngestConfig:
        return self.narrow(IngestConfig)
