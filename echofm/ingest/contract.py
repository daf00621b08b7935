"""The manifest's data contract: the Great Expectations suite `schemas/manifest_expectations.json`.

`write_manifest` enforces the schema (columns, types, nullability); this suite checks the data
as it lies on disk after a run: unique clip ids, statuses from the allowed set, accepted rows
with a shard and key, frame counts and fps in range, and exactly the schema's columns (so an
identifying column such as PatientName fails the run). It reads the Parquet file as it is, not
through `read_manifest`, so a manifest corrupted after writing is caught too.

GX runs in an ephemeral context (nothing persisted but what is written here) with analytics off:
`OUTPUT/qc/validation.json` holds the validation result, `OUTPUT/qc/data_docs/index.html` the
Data Docs. Importing GX takes seconds, so it happens inside `validate_manifest` only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from echofm.errors import IngestError

SUITE_PATH = Path(__file__).resolve().parents[2] / "schemas" / "manifest_expectations.json"
VALIDATION_FILENAME = "validation.json"
DATA_DOCS_DIRNAME = "data_docs"
_SITE_NAME = "echofm_qc"
_MAX_LISTED_VALUES = 5

logger = logging.getLogger(__name__)


class ContractInputError(IngestError):
    """The manifest or the suite cannot be read, so the contract cannot be checked at all."""


@dataclass(frozen=True)
class ContractResult:
    """Outcome of one validation.

    failures: one line per failed expectation (its type, column and what was wrong); empty when
    `success`. result_path: the validation result JSON; docs_path: the Data Docs index page.
    """

    success: bool
    n_expectations: int
    failures: list[str]
    result_path: Path
    docs_path: Path


def load_suite_document(path: str | Path = SUITE_PATH) -> dict[str, Any]:
    """The suite as declared (GX 1.x suite JSON: name, meta, expectations)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ContractInputError(f"cannot read expectation suite {path}: {error}") from error


def validate_manifest(
    manifest_path: str | Path, qc_dir: str | Path, *, suite_path: str | Path = SUITE_PATH
) -> ContractResult:
    """Validate the manifest (a Parquet file or directory of parts, local or an object-store URL)
    against the suite; write the result and Data Docs under the local `qc_dir`.

    Returns a `ContractResult`; `success` False means the contract failed (the ingestion CLI
    exits non-zero). Raises `ContractInputError` when the manifest or suite cannot be read.
    """
    # Before the first GX import: no usage statistics leave the machine.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    from echofm.data.manifest import read_parquet
    from echofm.data.storage import is_remote

    manifest = manifest_path if is_remote(manifest_path) else Path(manifest_path)
    try:
        frame = read_parquet(manifest).to_pandas()
    except (OSError, ValueError) as error:
        raise ContractInputError(f"cannot read manifest {manifest}: {error}") from error
    document = load_suite_document(suite_path)

    qc = Path(qc_dir)
    docs_dir = qc / DATA_DOCS_DIRNAME
    qc.mkdir(parents=True, exist_ok=True)
    validation = _run_suite(frame, document, docs_dir)

    result_path = qc / VALIDATION_FILENAME
    temporary = result_path.with_name(f".{result_path.name}.tmp")
    temporary.write_text(json.dumps(validation.to_json_dict(), indent=2, sort_keys=True, default=str))
    os.replace(temporary, result_path)

    failures = [_describe_failure(r) for r in validation.results if not r.success]
    result = ContractResult(
        success=bool(validation.success),
        n_expectations=len(validation.results),
        failures=failures,
        result_path=result_path,
        docs_path=docs_dir / "index.html",
    )
    if result.success:
        logger.info("manifest contract: %d expectations met (%s)", result.n_expectations, manifest)
    else:
        logger.error("manifest contract failed (%s):\n  %s", manifest, "\n  ".join(failures))
    return result


def _run_suite(frame: Any, document: dict[str, Any], docs_dir: Path) -> Any:
    """Run the suite on the DataFrame in an ephemeral context; returns the
    ExpectationSuiteValidationResult. Data Docs are built by the checkpoint's action."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Progress bars would interleave with the ingestion logs (and the CI output) for no benefit.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.add_data_docs_site(
        site_name=_SITE_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    batch_definition = (
        context.data_sources.add_pandas("ingestion")
        .add_dataframe_asset("manifest")
        .add_batch_definition_whole_dataframe("whole_manifest")
    )
    try:
        suite = context.suites.add(gx.ExpectationSuite(**document))
    except (TypeError, ValueError) as error:
        raise ContractInputError(f"invalid expectation suite: {error}") from error
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="manifest_contract", data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="manifest_contract",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[_SITE_NAME])],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": _MAX_LISTED_VALUES},
        )
    )
    checkpoint_result = checkpoint.run(batch_parameters={"dataframe": frame})
    (validation,) = checkpoint_result.run_results.values()
    return validation


def _describe_failure(result: Any) -> str:
    """One line: expectation type, its column(s), and the offending values or counts."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    target = kwargs.get("column") or ", ".join(str(kwargs[k]) for k in ("column_A", "column_B") if k in kwargs)
    condition = kwargs.get("row_condition")
    where = f" where {_describe_condition(condition)}" if condition else ""
    details = result.result or {}
    if config.type == "expect_table_columns_to_match_set":
        mismatched = (details.get("details") or {}).get("mismatched") or {}
        unexpected = mismatched.get("unexpected", [])
        missing = mismatched.get("missing", [])
        what = f"unexpected columns {unexpected}, missing columns {missing}"
    elif "unexpected_count" in details:
        values = details.get("partial_unexpected_list") or []
        what = f"{details['unexpected_count']} row(s) fail, e.g. {values[:_MAX_LISTED_VALUES]}"
    elif result.exception_info and result.exception_info.get("raised_exception"):
        what = f"could not be evaluated: {result.exception_info.get('exception_message')}"
    else:
        what = f"observed {details.get('observed_value')!r}"
    column = f"({target})" if target else ""
    return f"{config.type}{column}{where}: {what}"


def _describe_condition(condition: Any) -> str:
    if hasattr(condition, "to_dict"):
        condition = condition.to_dict()
    if isinstance(condition, dict) and {"column", "operator", "parameter"} <= set(condition):
        column = condition["column"]
        name = column.get("name") if isinstance(column, dict) else column
        return f"{name} {condition['operator']} {condition['parameter']!r}"
    return str(condition)
