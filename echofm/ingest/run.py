"""Plan, resume and finish an ingestion run, without any orchestrator.

`plan_ingest` decides what a run has to do: it reads what earlier runs recorded (the manifest and
the batch parts a killed run left), removes what a killed run left half-done (partial shards, and
complete shards no recorded row names), discovers SOURCE, records at once the files that need no
decoding (not media, exact copies of a file already seen), and splits the rest into batches.
`finalize_ingest` merges the parts into `manifest.parquet` atomically, settles duplicates across
batches and validates the manifest contract. `flows/ingest.py` runs the batches in between on a
task runner; `ingest_serially` does the same in-process (tests, debugging).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from echofm.data.manifest import MANIFEST_FILENAME
from echofm.data.storage import glob, is_dir, is_remote, join, location, name, remove, upload, upload_tree
from echofm.ingest.batch import BatchResult, process_batch
from echofm.ingest.config import IngestConfig
from echofm.ingest.discover import DiscoveredFile, SourceError, discover
from echofm.ingest.discovery_cache import DiscoveryCache
from echofm.ingest.lock import exclusive_output
from echofm.ingest.records import PARTS_DIRNAME, discovery_row, write_part
from echofm.errors import IngestError

logger = logging.getLogger(__name__)

QC_DIRNAME = "qc"


class OutputError(IngestError, OSError):
    """OUTPUT cannot be created or written: a systemic failure of a run."""

    reason = "output_unwritable"


class ContractViolation(IngestError, RuntimeError):
    """The merged manifest fails its data contract (the GX suite): a systemic failure."""

    reason = "contract_violation"


class SecretMismatch(IngestError, RuntimeError):
    """OUTPUT holds rows keyed by another secret: new ids would not match the recorded ones."""

    reason = "secret_mismatch"


@dataclass(frozen=True)
class BatchSpec:
    """One unit of parallel work: files to ingest, and the id naming its shards and part."""

    batch_id: str
    run_id: str
    files: tuple[DiscoveredFile, ...]


@dataclass(frozen=True)
class IngestPlan:
    """What a run will do. Small enough to pass between orchestrator tasks (paths, no arrays)."""

    source: Path | str  # a local directory, or an object-store URL
    output: Path | str
    run_id: str
    config: IngestConfig
    batches: tuple[BatchSpec, ...]
    n_discovered: int
    n_already_recorded: int
    removed_shards: tuple[str, ...]
    started_at: float = field(default_factory=time.time)
    n_read: int = 0  # files discovery read and hashed; the rest were known unchanged from its cache

    @property
    def n_to_process(self) -> int:
        return sum(len(batch.files) for batch in self.batches)


@dataclass(frozen=True)
class IngestOutcome:
    """The result of `finalize_ingest`: where the manifest is and what this run added."""

    manifest_path: Path | str
    new_rows: list[dict[str, Any]]
    n_manifest_rows: int
    contract: Any
    seconds: float
    stage_seconds: dict[str, float]


def new_run_id() -> str:
    """A sortable, unique id (letters, digits, dashes: safe in shard names and WebDataset keys)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def ensure_output(output: Path | str) -> None:
    """Create OUTPUT and check it is writable; raises `OutputError` otherwise.

    An object-store OUTPUT also needs the pseudonym key in the environment: batches run on other
    machines, and a key created inside one worker's scratch would differ from the next one's.
    """
    if is_remote(output):
        from echofm.io.deid import DEFAULT_SECRET_ENV

        if not os.environ.get(DEFAULT_SECRET_ENV):
            raise OutputError(f"OUTPUT is on object storage: set {DEFAULT_SECRET_ENV} (the pseudonym key)")
        probe = join(output, f".write-probe-{os.getpid()}")
        try:
            with tempfile.TemporaryDirectory(prefix="echofm-probe-") as scratch:
                (Path(scratch) / "probe").write_bytes(b"")
                upload(Path(scratch) / "probe", probe)
            remove(probe)
        except OSError as exc:
            # Neither the URL (its bucket and prefix may carry identity) nor the error's text.
            raise OutputError(f"OUTPUT cannot be written ({type(exc).__name__})") from exc
        return
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"OUTPUT is not writable ({exc.strerror or type(exc).__name__})") from None


def read_recorded_rows(output: Path | str, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows recorded so far: the manifest, then the parts of batches not yet merged (by name).

    With `columns`, only those columns are read and the manifest's schema is not checked again:
    each batch task needs two columns of a manifest that `plan_ingest` has already checked, and
    turning every column of a 300K-row manifest into dicts takes seconds per batch.
    """
    from echofm.data.manifest import read_manifest, read_manifest_columns, read_parquet

    manifest = join(output, MANIFEST_FILENAME)
    table = read_manifest(manifest) if columns is None else read_manifest_columns(manifest, columns)
    rows: list[dict[str, Any]] = table.to_pylist()
    for part in batch_parts(output):
        rows.extend(read_parquet(part, columns).to_pylist())
    return rows


def batch_parts(output: Path | str) -> list[Any]:
    """The batch parts waiting under `OUTPUT/.parts/`, by name."""
    return glob(join(output, PARTS_DIRNAME), "*.parquet")


def known_pixel_hashes(rows: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Keyed content hashes of accepted clips (what a new file must not duplicate)."""
    return frozenset(row["content_hash"] for row in rows if row.get("status") == "accepted" and row.get("content_hash"))


def _remove_unfinished_shards(output: Path | str, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """Delete `*.tar.tmp` left by a killed writer, and complete tars no recorded row names (a batch
    killed after closing a shard but before writing its part: its files are ingested again).
    On object storage shards only ever appear whole, so only the unlisted ones are left."""
    from echofm.data.shards import SHARDS_DIRNAME, SHARD_SUFFIX, remove_partial_shards, remove_unlisted_shards

    listed = {name(str(row["shard"])) for row in rows if row.get("shard")}
    if is_remote(output):
        unlisted_objects = [s for s in glob(join(output, SHARDS_DIRNAME), f"*{SHARD_SUFFIX}") if name(s) not in listed]
        for shard in unlisted_objects:
            remove(shard)
        return tuple(name(s) for s in unlisted_objects)
    shards = Path(output) / SHARDS_DIRNAME
    partial = remove_partial_shards(shards)
    unlisted = remove_unlisted_shards(shards, listed)
    return tuple(path.name for path in [*partial, *unlisted])


def plan_ingest(
    source: str | Path,
    output: str | Path,
    config: IngestConfig | None = None,
    *,
    run_id: str | None = None,
    hash_workers: int = 4,
) -> IngestPlan:
    """Plan a run of SOURCE into OUTPUT (see the module docstring).

    Files whose (source_hash, source_id) is already recorded are skipped, so a re-run adds
    nothing and an archive that grew ingests only the new files. Discovery reads only files
    new or changed since the last plan (`echofm.ingest.discovery_cache`, kept in OUTPUT;
    `config.rehash` reads all). With `config.path_map`, the map
    from the source ids of every discovered file to its path is written there (outside OUTPUT).
    Raises, before anything is written, the `DeidError`s of `echofm.io.deid.load_secret` (no
    secret, or one inside OUTPUT) and `PathMapInsideOutput`; then `SourceError` (SOURCE
    unreadable), `OutputError` (OUTPUT unwritable) or `SecretMismatch` (OUTPUT keyed by another
    secret).
    """
    from echofm.data.manifest import read_manifest
    from echofm.io.deid import Pseudonymizer, check_path_map, load_secret, write_path_map

    config = config or IngestConfig()
    source_dir, output_dir = location(source), location(output)
    run_id = run_id or new_run_id()
    started = time.time()
    pseudonymizer = Pseudonymizer(load_secret(secret_file=config.secret_file, output=output_dir))
    if config.path_map is not None:
        check_path_map(config.path_map, output_dir)
    if not is_dir(source_dir):
        # Before OUTPUT is touched: a mistyped SOURCE leaves nothing behind.
        raise SourceError("SOURCE is not a readable directory")
    ensure_output(output_dir)
    # The whole manifest is schema-checked (as Arrow), but only the columns planning needs become
    # Python rows: 300K full rows as dicts cost seconds and hundreds of MB.
    read_manifest(join(output_dir, MANIFEST_FILENAME))
    recorded_rows = read_recorded_rows(output_dir, columns=("source_hash", "source_id", "status", "shard", "key_id"))
    if any(row.get("key_id") != pseudonymizer.key_id for row in recorded_rows):
        raise SecretMismatch(
            f"OUTPUT was ingested with another de-identification secret (this one is {pseudonymizer.key_id}); "
            "use that secret, or a new OUTPUT"
        )
    removed = _remove_unfinished_shards(output_dir, recorded_rows)
    cache = DiscoveryCache.load(output_dir, pseudonymizer, rehash=config.rehash)
    discovered = discover(source_dir, pseudonymizer, workers=hash_workers, cache=cache)
    cache.save(output_dir)
    logger.info("discovery: %d files known unchanged, %d read and hashed", cache.hits, cache.misses)
    if config.path_map is not None:
        write_path_map(config.path_map, {item.source_id: os.fsencode(item.rel_path) for item in discovered},
                       output=output_dir)

    recorded = {(row["source_hash"] or "", row["source_id"]) for row in recorded_rows}
    seen_content = {row["source_hash"] for row in recorded_rows if row.get("status") != "failed"}
    plan_rows: list[dict[str, Any]] = []
    todo: list[DiscoveredFile] = []
    n_recorded = 0
    ids = {"batch_id": f"{run_id}-plan", "run_id": run_id, "key_id": pseudonymizer.key_id}
    for item in discovered:
        if (item.source_hash, item.source_id) in recorded:
            n_recorded += 1
        elif not item.is_media:
            plan_rows.append(discovery_row(item, **ids))
        elif item.source_hash in seen_content:
            # Byte-identical to a file recorded earlier or listed earlier in this run.
            plan_rows.append(discovery_row(item, **ids, reason="duplicate"))
        else:
            seen_content.add(item.source_hash)
            todo.append(item)
    if plan_rows:
        write_part(output_dir, f"{run_id}-plan", plan_rows)
    size = config.batch_size
    batches = tuple(
        BatchSpec(batch_id=f"{run_id}-b{index:05d}", run_id=run_id, files=tuple(todo[start : start + size]))
        for index, start in enumerate(range(0, len(todo), size))
    )
    logger.info(
        "plan %s: %d files discovered, %d already recorded, %d recorded at plan, %d to process in %d batches",
        run_id, len(discovered), n_recorded, len(plan_rows), len(todo), len(batches),
    )
    return IngestPlan(
        source=source_dir,
        output=output_dir,
        run_id=run_id,
        config=config,
        batches=batches,
        n_discovered=len(discovered),
        n_already_recorded=n_recorded,
        removed_shards=removed,
        started_at=started,
        n_read=cache.misses,
    )


def run_batch(source: str | Path, output: str | Path, config: IngestConfig, batch: BatchSpec) -> BatchResult:
    """Process one batch of a plan (what each orchestrator task calls; takes the batch, not the
    plan, so a task ships its own files only).

    Into an object-store OUTPUT the batch is written to local scratch first, then published:
    every completed shard, and its part last (a part means the batch finished, as on disk).
    """
    hashes = known_pixel_hashes(read_recorded_rows(location(output), columns=("status", "content_hash")))
    if not is_remote(output):
        return process_batch(
            list(batch.files), source, output, config, batch.batch_id, run_id=batch.run_id, known_pixel_hashes=hashes
        )
    from echofm.data.shards import SHARD_SUFFIX, SHARDS_DIRNAME

    with tempfile.TemporaryDirectory(prefix=f"echofm-{batch.batch_id}-") as scratch:
        local = Path(scratch)
        result = process_batch(
            list(batch.files), source, local, config, batch.batch_id, run_id=batch.run_id, known_pixel_hashes=hashes
        )
        for shard in sorted((local / SHARDS_DIRNAME).glob(f"*{SHARD_SUFFIX}")):
            upload(shard, join(output, SHARDS_DIRNAME, shard.name))
        if result.part_path is not None:
            part = join(output, PARTS_DIRNAME, Path(result.part_path).name)
            upload(Path(result.part_path), part)
            result.part_path = part  # type: ignore[assignment]
    return result


def _settle_cross_batch_duplicates(rows: list[dict[str, Any]], owners: dict[str, str]) -> int:
    """Demote accepted rows whose decoded pixels equal those of an earlier file (batches running in
    parallel cannot see each other's clips). Earlier = recorded first (`owners`: content hash ->
    source hash of the recorded accepted clips), then by source id. Their shard samples stay in
    the tar but no accepted row names them. Returns rows demoted."""
    demoted = 0
    for row in rows:
        content = row.get("content_hash")
        if row.get("status") != "accepted" or not content:
            continue
        owner = owners.setdefault(content, row["source_hash"])
        if owner != row["source_hash"]:
            row.update(status="rejected", reason="duplicate", shard=None, key=None)
            demoted += 1
    return demoted


def _recorded_owners(recorded: Any) -> dict[str, str]:
    """Content hash -> source hash of the accepted clips in an Arrow table of the manifest's
    status / content_hash / source_hash columns (first recorded wins)."""
    import pyarrow.compute as pc

    accepted = recorded.filter(pc.and_(pc.equal(recorded["status"], "accepted"), pc.is_valid(recorded["content_hash"])))
    owners: dict[str, str] = {}
    for content, source in zip(accepted["content_hash"].to_pylist(), accepted["source_hash"].to_pylist(), strict=True):
        owners.setdefault(content, source)
    return owners


def merge_batch_parts(output: Path | str, run_id: str) -> tuple[list[dict[str, Any]], int]:
    """Add the batch parts' new rows to `OUTPUT/manifest.parquet/` as one new manifest part
    (atomic) and remove the batch parts. Returns (the new rows, rows recorded before).

    Cost grows with the new rows, not the manifest: recorded rows are consulted as four Arrow
    columns and never rewritten. A run that adds nothing writes nothing.
    """
    from echofm.data.manifest import append_manifest_part, manifest_parts, read_manifest_columns, read_parquet

    manifest_path = join(output, MANIFEST_FILENAME)
    recorded = read_manifest_columns(manifest_path, ["clip_id", "status", "content_hash", "source_hash"])
    parts = batch_parts(output)
    known_ids = set(recorded["clip_id"].to_pylist())
    new_rows: list[dict[str, Any]] = []
    for part in parts:
        for row in read_parquet(part).to_pylist():
            if row["clip_id"] not in known_ids:
                known_ids.add(row["clip_id"])
                new_rows.append(row)
    new_rows.sort(key=lambda row: (row["source_id"], row["window_index"]))
    if new_rows or not manifest_parts(manifest_path):
        demoted = _settle_cross_batch_duplicates(new_rows, _recorded_owners(recorded))
        if demoted:
            logger.info("%d clip(s) identical in pixels to an earlier file marked duplicate", demoted)
        append_manifest_part(new_rows, manifest_path, run_id)
    for part in parts:
        remove(part)
    return new_rows, recorded.num_rows


def finalize_ingest(plan: IngestPlan, results: Iterable[BatchResult] = ()) -> IngestOutcome:
    """Merge the batch parts into the manifest (`merge_batch_parts`), then validate the manifest
    contract, writing the result and Data Docs under `OUTPUT/qc/`. A run that adds nothing
    leaves the manifest byte-identical. Raises `ContractViolation` when the contract fails.
    """
    from echofm.ingest.contract import validate_manifest

    output = plan.output
    manifest_path = join(output, MANIFEST_FILENAME)
    new_rows, n_recorded = merge_batch_parts(output, plan.run_id)
    if is_remote(output):
        # GX writes its result and Data Docs to files: locally, then published under OUTPUT/qc.
        with tempfile.TemporaryDirectory(prefix="echofm-qc-") as scratch:
            contract = validate_manifest(manifest_path, scratch)
            upload_tree(Path(scratch), join(output, QC_DIRNAME))
    else:
        contract = validate_manifest(manifest_path, Path(output) / QC_DIRNAME)
    stage_seconds: dict[str, float] = {}
    for result in results:
        for stage, seconds in result.stage_seconds.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
    outcome = IngestOutcome(
        manifest_path=manifest_path,
        new_rows=new_rows,
        n_manifest_rows=n_recorded + len(new_rows),
        contract=contract,
        seconds=time.time() - plan.started_at,
        stage_seconds=stage_seconds,
    )
    if not contract.success:
        raise ContractViolation(f"the manifest fails its data contract; see OUTPUT/{QC_DIRNAME}/")
    return outcome


@contextlib.contextmanager
def sole_writer(source: str | Path, output: str | Path) -> Iterator[None]:
    """Hold OUTPUT's one-writer lock (`echofm.ingest.lock`) for a whole run: the orchestrating
    process enters this around plan, batches and finalize. SOURCE is checked first, so a mistyped
    SOURCE leaves nothing behind. Raises `SourceError`, `OutputLocked`."""
    if not is_dir(location(source)):
        raise SourceError("SOURCE is not a readable directory")
    with exclusive_output(location(output)):
        yield


def ingest_serially(source: str | Path, output: str | Path, config: IngestConfig | None = None) -> IngestOutcome:
    """Plan, process every batch in this process, and finalize: the whole run without Prefect."""
    with sole_writer(source, output):
        plan = plan_ingest(source, output, config)
        results = [run_batch(plan.source, plan.output, plan.config, batch) for batch in plan.batches]
        return finalize_ingest(plan, results)
