"""Configuration of an ingestion run: which views to keep, how to cut clips, QC thresholds.

Everything a run decides by number lives here, frozen and validated, so a run is reproducible
from its config alone and the manifest's reasons can be traced to a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from echofm.ingest.views import CANONICAL_VIEWS, DEFAULT_VIEWS


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


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
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
    """

    views: tuple[str, ...] = DEFAULT_VIEWS
    window_ms: float | None = None
    max_windows: int = 1
    num_frames: int = 32
    size: int = 224
    batch_size: int = 64
    codec: str | None = None
    shard_max_clips: int = 1000
    min_sector_frames: int = 24
    view_classifier: str | None = None
    qc: QCThresholds = field(default_factory=QCThresholds)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.views) - set(CANONICAL_VIEWS))
        if unknown:
            raise ValueError(f"unknown views {unknown}; choose from {list(CANONICAL_VIEWS)}")
        if not self.views:
            raise ValueError("views must name at least one view")
        if self.window_ms is not None and self.window_ms <= 0:
            raise ValueError("window_ms must be > 0")
        if self.max_windows < 1:
            raise ValueError("max_windows must be >= 1")
        if self.num_frames < 1 or self.size < 8:
            raise ValueError("num_frames must be >= 1 and size >= 8")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.min_sector_frames < 2:
            raise ValueError("min_sector_frames must be >= 2")
        if self.shard_max_clips < 1:
            raise ValueError("shard_max_clips must be >= 1")
        if self.view_classifier is not None and ":" not in self.view_classifier:
            raise ValueError("view_classifier must be a 'module:callable' spec")
        object.__setattr__(self, "views", tuple(self.views))
