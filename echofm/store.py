"""Where MLflow lives and what names mean there: the one module that knows the tracking store.

- Tracking URI: `MLFLOW_TRACKING_URI` when set (an `mlflow server` at scale), else a SQLite file
  `sqlite:///<RUN_DIR>/mlflow.db` with artifacts in `<RUN_DIR>/mlartifacts/`, so a run on one
  machine needs no server. The URI is passed to each MLflow call (`MlflowClient(uri)`); the
  MLflow APIs that only read the process-wide URI (logging a model, downloading a `models:/`
  URI) get it for one block through `tracking_uri_scope`, never for good.
- Names: the encoder's registered name, the aliases every version moves through, and the
  `models:/` URI forms. Downstream model names come from the task registry
  (`echofm.downstream.tasks`).
- Versions: what code produced a record (`code_version`) and which package a model needs.

Torch-free and free of the rest of the project (only the error base), so every layer can use it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from echofm.errors import StoreError

ENCODER_MODEL_NAME = "echofm-encoder"
# Every new version gets CHALLENGER; CHAMPION moves by the promotion rules (echofm.registry.promote).
CHALLENGER = "challenger"
CHAMPION = "champion"
STORE_FILE = "mlflow.db"
PACKAGE = "echofm-pipeline"

_VERSION_URI = re.compile(r"models:/([^/@]+)/(\d+)")
_ALIAS_URI = re.compile(r"models:/([^@/]+)@(.+)")


class ModelURIError(StoreError, ValueError):
    """A string that is not the `models:/` URI form a step needs."""


class NoTrackingStore(StoreError):
    """No tracking URI was given, none is set, and there is no run directory to keep one in."""


def resolve_tracking_uri(run_dir: str | os.PathLike[str]) -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite file in `run_dir` (created on first use)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(run_dir).resolve() / STORE_FILE}"


def required_tracking_uri(uri: str | None) -> str:
    """`uri`, else `MLFLOW_TRACKING_URI`: a step that reads models from a registry has no run
    directory to fall back on. NoTrackingStore when neither is set."""
    found = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not found:
        raise NoTrackingStore("no model registry: pass a tracking URI or set MLFLOW_TRACKING_URI")
    return found


def default_tracking_uri(encoder: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str] | None) -> str:
    """Where fine-tuning records go when not told: `MLFLOW_TRACKING_URI`; else the pretraining
    run's own store (`<RUN_DIR>/mlflow.db` beside the encoder), so the downstream models sit in
    the same registry as `echofm-encoder`; else `<out_dir>/mlflow.db`."""
    if encoder is not None and not is_registry_uri(str(encoder)):
        path = Path(encoder)
        for directory in (path, path.parent, path.parent.parent):
            if (directory / STORE_FILE).is_file():
                return resolve_tracking_uri(directory)
    if out_dir is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise NoTrackingStore("no tracking URI: set MLFLOW_TRACKING_URI or pass one")
    return resolve_tracking_uri(out_dir)


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite store (`mlartifacts/` next to the file); a server decides its own."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None


@contextmanager
def tracking_uri_scope(uri: str | None) -> Iterator[None]:
    """Use `uri` (when given) as MLflow's tracking URI inside the block, then put back exactly
    what was there: MLflow's own setting (none, or one set in code) and MLFLOW_TRACKING_URI,
    which `mlflow.set_tracking_uri` rewrites. Setting it for good would redirect every later
    MLflow user in the process, and its subprocesses."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_state  # the setting MLflow keeps

    if not uri:
        yield
        return
    previous, previous_env = tracking_state._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def is_registry_uri(text: str) -> bool:
    """Whether `text` names a registered model or a run's artifacts rather than a local path."""
    return text.startswith(("models:/", "runs:/"))


def version_uri(name: str, version: str | int) -> str:
    return f"models:/{name}/{version}"


def parse_model_uri(uri: str) -> tuple[str, str]:
    """`models:/NAME/VERSION` -> (NAME, VERSION); ModelURIError for other forms."""
    match = _VERSION_URI.fullmatch(uri)
    if not match:
        raise ModelURIError(f"{uri!r} is not a models:/NAME/VERSION URI")
    return match.group(1), match.group(2)


def parse_alias_uri(uri: str) -> tuple[str, str] | None:
    """`models:/NAME@ALIAS` -> (NAME, ALIAS); None for any other form."""
    match = _ALIAS_URI.fullmatch(uri)
    return (match.group(1), match.group(2)) if match else None


@contextmanager
def downloaded(uri: str, tracking_uri: str | None) -> Iterator[Path]:
    """The artifacts of a `models:/` or `runs:/` URI in a temporary directory, for the block.

    Yields the downloaded directory (the parent, when the URI names one file). Callers read what
    they need into memory inside the block; the copy is deleted after it.
    """
    import mlflow

    # MLflow resolves `models:/` URIs against the process-wide registry whatever URI the call
    # is given, so the store is borrowed for the download.
    with tempfile.TemporaryDirectory(prefix="echofm-download-") as target, tracking_uri_scope(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=target))
        yield local if local.is_dir() else local.parent


def package_version() -> str:
    """The installed `echofm-pipeline` distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def code_version() -> str:
    """`git describe` of the source tree when it is a checkout, else the package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        described = ""
    return described or package_version()


def pip_requirements() -> list[str]:
    """What a logged model needs installed: this torch release and this package version."""
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}", f"{PACKAGE}=={package_version()}"]
