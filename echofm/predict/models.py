"""The models an archive is scored with: resolved, checked and pinned before any work starts.

`resolve_models(["models:/echofm-ef@champion", ...], tracking_uri=...)` looks every URI up in the
registry and reads its signature: a URI that names no registered model or no version, an alias
with no version, a model whose outputs are not the `<task>.<field>` columns of registered tasks
(`echofm.downstream.task.column_name`), or two models that answer the same task, each raise one
`PredictError` with the URI in its message. An alias is pinned to the version it names now, so
a run uses one version throughout even when the alias moves meanwhile.

Any registered model whose outputs follow that schema is accepted: a per-task model answers one
task, a multi-task model several, and the prediction table holds one column group per task.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from echofm.downstream.task import task_of_column
from echofm.downstream.tasks import TASKS
from echofm.errors import PredictError
from echofm.store import CHAMPION, ModelURIError, parse_alias_uri, parse_model_uri, tracking_uri_scope, version_uri


class ModelNotFound(PredictError, LookupError):
    """A model URI that names no registered model, or a version it does not have."""


class AliasNotSet(PredictError, LookupError):
    """`models:/NAME@ALIAS` where NAME exists but no version carries ALIAS."""


class UnknownTaskModel(PredictError, ValueError):
    """A registered model whose outputs are not the column groups of registered tasks."""


class ConflictingModels(PredictError, ValueError):
    """Two of the models given answer the same task: its column group would be ambiguous."""


@dataclass(frozen=True)
class OutputColumn:
    """One output of a model's signature: its name, type (an MLflow column type such as
    `double`, or a numpy dtype name for a tensor) and, for a tensor, its shape (-1: any size;
    the first axis is the batch)."""

    name: str
    type: str
    shape: tuple[int, ...] | None = None

    @property
    def per_clip_rank(self) -> int:
        """Axes of one clip's value: 0 for a scalar, 1 for a list per clip, ..."""
        return 0 if self.shape is None else len(self.shape) - 1


@dataclass(frozen=True)
class ScoringModel:
    """A registered model version pinned for one run: `uri` as given, its name and version,
    the tasks it answers (registry order) and its output columns."""

    uri: str
    name: str
    version: str
    tasks: tuple[str, ...]
    outputs: tuple[OutputColumn, ...]

    @property
    def version_uri(self) -> str:
        return version_uri(self.name, self.version)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def columns_of(self, task: str) -> tuple[OutputColumn, ...]:
        return tuple(column for column in self.outputs if task_of_column(column.name) == task)


def _client(tracking_uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def _version(client: Any, uri: str) -> tuple[str, str]:
    """(name, version) that `uri` names now; ModelNotFound / AliasNotSet / ModelURIError."""
    from mlflow.exceptions import MlflowException

    alias = parse_alias_uri(uri)
    try:
        name, version = alias if alias is not None else parse_model_uri(uri)
    except ModelURIError:
        raise ModelURIError(f"{uri!r}: name a model by models:/NAME@ALIAS or models:/NAME/VERSION") from None
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        raise ModelNotFound(f"{uri}: no registered model {name!r} in the registry") from None
    if alias is not None:
        aliases = dict(getattr(registered, "aliases", None) or {})
        if version not in aliases:
            known = ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
            raise AliasNotSet(f"{uri}: no version of {name} has the alias {version!r} (aliases: {known})")
        return name, str(aliases[version])
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise ModelNotFound(f"{uri}: {name} has no version {version}") from None
    return name, version


def _outputs(signature: Any) -> tuple[OutputColumn, ...]:
    from mlflow.types import TensorSpec

    columns = []
    for spec in signature.outputs.inputs:
        if isinstance(spec, TensorSpec):
            columns.append(OutputColumn(spec.name, spec.type.name, tuple(spec.shape)))
        else:
            columns.append(OutputColumn(spec.name, getattr(spec.type, "name", str(spec.type))))
    return tuple(columns)


def _tasks(uri: str, outputs: Sequence[OutputColumn]) -> tuple[str, ...]:
    names = [column.name for column in outputs]
    groups = {task_of_column(name) for name in names}
    if not names or None in groups or not groups <= set(TASKS.names()):
        raise UnknownTaskModel(
            f"{uri} answers no registered task: its outputs {names} are not <task>.<field> columns "
            f"of the tasks {list(TASKS.names())}"
        )
    return tuple(name for name in TASKS.names() if name in groups)


def describe_model(uri: str, *, tracking_uri: str | None) -> ScoringModel:
    """One model URI resolved, pinned and checked (see the module doc)."""
    import mlflow

    name, version = _version(_client(tracking_uri), uri)
    with tracking_uri_scope(tracking_uri):
        signature = mlflow.models.get_model_info(version_uri(name, version)).signature
    if signature is None or signature.outputs is None:
        raise UnknownTaskModel(f"{uri} ({name} v{version}) has no output signature: it answers no task")
    outputs = _outputs(signature)
    return ScoringModel(uri=uri, name=name, version=version, tasks=_tasks(uri, outputs), outputs=outputs)


def resolve_models(uris: Iterable[str], *, tracking_uri: str | None) -> tuple[ScoringModel, ...]:
    """Every URI resolved (`describe_model`); ConflictingModels when two answer one task."""
    models = tuple(describe_model(uri, tracking_uri=tracking_uri) for uri in dict.fromkeys(uris))
    if not models:
        raise PredictError("no model to score with: pass at least one models:/ URI")
    answered: dict[str, ScoringModel] = {}
    for model in models:
        for task in model.tasks:
            if task in answered:
                raise ConflictingModels(f"{answered[task].uri} and {model.uri} both answer the task {task!r}; "
                                        "pass one model per task")
            answered[task] = model
    return models


def champion_uris(*, tracking_uri: str | None) -> list[str]:
    """`models:/<task model>@champion` of every registered task that has a champion now."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    found = []
    for task in TASKS:
        try:
            client.get_model_version_by_alias(task.model_name, CHAMPION)
        except MlflowException:
            continue
        found.append(f"models:/{task.model_name}@{CHAMPION}")
    if not found:
        raise ModelNotFound(f"no task model has a {CHAMPION!r} version in the registry")
    return found
