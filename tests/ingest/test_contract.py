from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from echofm.data.manifest import MANIFEST_COLUMNS, NO_WINDOW, read_manifest, write_manifest
from echofm.ingest.contract import ContractInputError, load_suite_document, validate_manifest
from tests.factories.manifest import make_row


def test_suite_column_set_is_the_schema():
    document = load_suite_document()
    (columns,) = [e for e in document["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
    assert columns["kwargs"]["column_set"] == list(MANIFEST_COLUMNS)
    assert columns["kwargs"]["exact_match"] is True


def _set(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, name, pa.array(values, table.schema.field(name).type))


def test_contract_passes_on_valid_manifest_and_fails_on_each_corruption(tmp_path):
    rows = [make_row(i) for i in range(3)]
    rows.append(make_row(5, status="rejected", window_index=NO_WINDOW))
    rows.append(make_row(6, status="failed", window_index=NO_WINDOW, reason="corrupt_pixel_data",
                         error_class="CorruptPixelData", error_message="decode: CorruptPixelData"))
    manifest = write_manifest(rows, tmp_path / "good" / "manifest.parquet")

    good = validate_manifest(manifest, tmp_path / "good" / "qc")
    assert good.success, good.failures
    assert good.failures == [] and good.n_expectations == len(load_suite_document()["expectations"])
    assert good.result_path == tmp_path / "good" / "qc" / "validation.json"
    assert json.loads(good.result_path.read_text())["success"] is True
    assert good.docs_path.is_file() and good.docs_path.name == "index.html"
    assert list((good.docs_path.parent / "validations").rglob("*.html"))

    # Corrupted after writing (write_manifest would refuse these), each by a different fault:
    # a repeated clip id, an unknown status, an accepted row without a shard, an identifying column.
    table = read_manifest(manifest)
    bad = pa.concat_tables([table, table.slice(0, 1)])
    bad = _set(bad, "status", ["accepted", "maybe", "accepted", "rejected", "failed", "accepted"])
    bad = _set(bad, "reason", [None, "x", None, "too_few_frames", "corrupt_pixel_data", None])
    bad = _set(bad, "shard", ["b0-000000.tar", "b0-000000.tar", None, None, None, "b0-000000.tar"])
    bad = bad.append_column("PatientName", pa.array(["DOE^JANE"] * bad.num_rows))
    pq.write_table(bad, tmp_path / "bad.parquet")

    result = validate_manifest(tmp_path / "bad.parquet", tmp_path / "bad_qc")
    assert not result.success
    failed = sorted(line.split(":")[0] for line in result.failures)
    assert failed == sorted([
        "expect_column_values_to_be_in_set(status)",
        "expect_column_values_to_be_unique(clip_id)",
        "expect_column_values_to_not_be_null(shard) where status == 'accepted'",
        "expect_table_columns_to_match_set",
    ])
    assert any("PatientName" in line for line in result.failures)
    assert json.loads(result.result_path.read_text())["success"] is False
    assert result.docs_path.is_file()
    # The Data Docs and result name the offending column but never show its values.
    for path in [result.result_path, *result.docs_path.parent.rglob("*.html")]:
        assert "DOE^JANE" not in path.read_text(errors="ignore")


def test_unreadable_manifest_is_an_input_error(tmp_path):
    with pytest.raises(ContractInputError):
        validate_manifest(tmp_path / "missing.parquet", tmp_path / "qc")
