"""The validation gate on tiny batches built from the real transactions contract."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.spec import REPO_ROOT, load_spec
from pipelines.validate import ValidationResult, validate_batch

pytestmark = pytest.mark.unit

SPEC = load_spec(REPO_ROOT / "models" / "fraud.yaml")
CONTRACT = SPEC.dataset
ROW_ID = CONTRACT.row_id
START = datetime(2026, 1, 5, tzinfo=UTC)
END = START + timedelta(days=7)
KEY = "2026-01-05"
N = 200  # >= validation.min_rows (100); 5% of it is 10 rows


def good_rows(n: int = N) -> pd.DataFrame:
    """n valid rows, one value generator per contract column type."""
    cols: dict[str, list] = {}
    for c in CONTRACT.columns:
        if c.allowed:
            values = [c.allowed[i % len(c.allowed)] for i in range(n)]
        elif c.type == "string":
            values = [f"tx{i:05d}" for i in range(n)]
        elif c.type == "int":
            values = [i + 1 for i in range(n)]
        elif c.type == "float":
            lo = c.min if c.min is not None else 0.0
            values = [round(lo + 1.25 * (i + 1), 2) for i in range(n)]
        else:
            values = [START + timedelta(minutes=30 * i) for i in range(n)]
        cols[c.name] = values
    df = pd.DataFrame(cols)
    df[SPEC.event_timestamp] = pd.to_datetime(df[SPEC.event_timestamp], utc=True)
    return df


def land(tmp_path: Path, df: pd.DataFrame, name: str = f"transactions_{KEY}.parquet") -> Path:
    path = tmp_path / "landing" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def run(tmp_path: Path, batch: Path, spec=SPEC) -> ValidationResult:
    return validate_batch(
        batch, spec, START, END, tmp_path / "validated", tmp_path / "quarantine", tmp_path / "reports"
    )


def failure(result: ValidationResult, rule: str, column: str | None = None):
    found = [f for f in result.failures if f.rule == rule and (column is None or f.column == column)]
    assert found, f"no {rule} failure on {column}: {[(f.rule, f.column) for f in result.failures]}"
    return found[0]


def quarantined(result: ValidationResult) -> pd.DataFrame:
    assert result.quarantine_path is not None
    return pd.read_parquet(result.quarantine_path)


def assert_accounting(result: ValidationResult) -> None:
    assert result.rows_clean + result.rows_quarantined == result.rows_landed
    if result.clean_path:
        assert len(pd.read_parquet(result.clean_path)) == result.rows_clean
    if result.quarantine_path:
        assert len(pd.read_parquet(result.quarantine_path)) == result.rows_quarantined


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- accepted ----------------------------------------------------------------------------------


def test_clean_batch_is_accepted_with_contract_columns_and_dtypes(tmp_path):
    df = good_rows()
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted", result.summary
    assert (result.rows_landed, result.rows_clean, result.rows_quarantined) == (N, N, 0)
    assert result.failures == ()
    assert result.clean_path == str(tmp_path / "validated" / f"{KEY}.parquet")
    assert result.quarantine_path is None and not (tmp_path / "quarantine" / f"{KEY}.parquet").exists()
    clean = pd.read_parquet(result.clean_path)
    assert list(clean.columns) == CONTRACT.column_names
    expected = {"string": "object", "int": "int64", "float": "float64", "timestamp": "datetime64[ns, UTC]"}
    assert {c: str(t) for c, t in clean.dtypes.items()} == {c.name: expected[c.type] for c in CONTRACT.columns}
    pd.testing.assert_frame_equal(clean, df, check_dtype=False)
    report = json.loads(Path(result.report_path).read_text())
    assert report["verdict"] == "accepted" and report["rows_clean"] == N
    assert report == json.loads(json.dumps(result.to_dict()))
    assert "ACCEPTED" in result.summary and result.clean_path in result.summary


def test_csv_batch_is_read_with_contract_types(tmp_path):
    df = good_rows()
    result = run(tmp_path, land(tmp_path, df, f"transactions_{KEY}.csv"))

    assert result.verdict == "accepted", result.summary
    clean = pd.read_parquet(result.clean_path)
    assert str(clean[SPEC.event_timestamp].dtype) == "datetime64[ns, UTC]"
    assert clean[ROW_ID].tolist() == df[ROW_ID].tolist()


def test_naive_timestamps_are_taken_as_utc(tmp_path):
    df = good_rows()
    df[SPEC.event_timestamp] = df[SPEC.event_timestamp].dt.tz_localize(None)
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted", result.summary
    clean = pd.read_parquet(result.clean_path)
    assert clean[SPEC.event_timestamp].iloc[0] == pd.Timestamp(START)


# -- blocked by batch rules --------------------------------------------------------------------


def test_renamed_column_blocks_with_rename_hint(tmp_path):
    result = run(tmp_path, land(tmp_path, good_rows().rename(columns={"amount": "amt"})))

    assert result.verdict == "blocked"
    f = failure(result, "expect_table_columns_to_match_set", "amount")
    assert f.severity == "batch"
    assert "column `amount` missing; found `amt`" in f.message
    assert "datasets/transactions.yaml" in f.message
    assert f"transactions_{KEY}.parquet" in f.message
    # `amt` is explained by the hint, not reported a second time as an unknown column
    assert not [x for x in result.failures if x.column == "amt"]
    assert result.clean_path is None and not (tmp_path / "validated" / f"{KEY}.parquet").exists()
    assert json.loads(Path(result.report_path).read_text())["verdict"] == "blocked"
    assert "found `amt`" in result.summary


def test_missing_and_extra_columns_are_named(tmp_path):
    df = good_rows().drop(columns=["country"]).assign(loyalty_tier="gold")
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "blocked"
    missing = failure(result, "expect_table_columns_to_match_set", "country")
    assert "column `country` missing" in missing.message and "found" not in missing.message
    extra = failure(result, "expect_table_columns_to_match_set", "loyalty_tier")
    assert "not in the contract datasets/transactions.yaml" in extra.message


def test_wrong_column_type_blocks(tmp_path):
    df = good_rows()
    df["amount"] = df["amount"].map(lambda v: f"{v:.2f}")
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "blocked"
    f = failure(result, "expect_column_values_to_be_in_type_list", "amount")
    assert f.severity == "batch"
    first = f"{df.loc[0, 'amount']}"
    assert "says float" in f.message and f"'{first}'" in f.message
    assert f.sample == df["amount"].head(5).tolist()


def test_too_few_rows_blocks(tmp_path):
    result = run(tmp_path, land(tmp_path, good_rows(SPEC.min_rows - 1)))

    assert result.verdict == "blocked"
    f = failure(result, "expect_table_row_count_to_be_between")
    assert f"{SPEC.min_rows - 1} rows, below validation.min_rows={SPEC.min_rows}" in f.message
    assert "models/fraud.yaml" in f.message


def test_zero_byte_file_blocks_without_raising(tmp_path):
    path = tmp_path / "landing" / f"transactions_{KEY}.parquet"
    path.parent.mkdir()
    path.write_bytes(b"")
    result = run(tmp_path, path)

    assert result.verdict == "blocked" and result.rows_landed == 0
    f = failure(result, "readable_file")
    assert "empty (0 bytes)" in f.message and path.name in f.message
    assert json.loads(Path(result.report_path).read_text())["failures"][0]["rule"] == "readable_file"


def test_corrupt_file_blocks_without_raising(tmp_path):
    path = tmp_path / "landing" / f"transactions_{KEY}.parquet"
    path.parent.mkdir()
    path.write_bytes(b"this is not parquet")
    result = run(tmp_path, path)

    assert result.verdict == "blocked"
    assert "cannot be read as parquet" in failure(result, "readable_file").message


def test_empty_parquet_blocks_on_row_count(tmp_path):
    result = run(tmp_path, land(tmp_path, good_rows().iloc[:0]))

    assert result.verdict == "blocked" and result.rows_landed == 0
    assert "0 rows, below" in failure(result, "expect_table_row_count_to_be_between").message


# -- rows quarantined --------------------------------------------------------------------------


def test_out_of_range_amounts_are_quarantined(tmp_path):
    df = good_rows()
    df.loc[[3, 7, 9], "amount"] = [-5.0, 0.0, 25000.0]
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted", result.summary
    assert (result.rows_clean, result.rows_quarantined) == (N - 3, 3)
    q = quarantined(result)
    assert q[ROW_ID].tolist() == df[ROW_ID].iloc[[3, 7, 9]].tolist()
    assert set(q["_quarantine_reasons"]) == {"expect_column_values_to_be_between(amount)"}
    assert q["amount"].tolist() == [-5.0, 0.0, 25000.0]  # quarantined as landed
    f = failure(result, "expect_column_values_to_be_between", "amount")
    assert (f.severity, f.count, f.sample) == ("row", 3, [-5.0, 0.0, 25000.0])
    assert "between 0.01 and 20000" in f.message and f"transactions_{KEY}.parquet" in f.message
    clean = pd.read_parquet(result.clean_path)
    assert not set(q[ROW_ID]) & set(clean[ROW_ID])
    assert_accounting(result)


def test_unknown_category_is_quarantined(tmp_path):
    df = good_rows()
    df.loc[5, "category"] = "casino"
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted"
    q = quarantined(result)
    assert q[ROW_ID].tolist() == [df.loc[5, ROW_ID]]
    assert q["_quarantine_reasons"].tolist() == ["expect_column_values_to_be_in_set(category)"]
    f = failure(result, "expect_column_values_to_be_in_set", "category")
    assert f.sample == ["casino"] and "'grocery'" in f.message
    assert_accounting(result)


def test_null_key_is_quarantined(tmp_path):
    df = good_rows()
    df.loc[4, ROW_ID] = None
    df.loc[8, "customer_id"] = None  # int column with a null: still a row problem, not a type one
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted", result.summary
    q = quarantined(result)
    assert q["_quarantine_reasons"].tolist() == [
        f"expect_column_values_to_not_be_null({ROW_ID})",
        "expect_column_values_to_not_be_null(customer_id)",
    ]
    assert q["merchant_id"].tolist() == df.loc[[4, 8], "merchant_id"].tolist()
    f = failure(result, "expect_column_values_to_not_be_null", "customer_id")
    assert f.sample == [df.loc[8, ROW_ID]] and df.loc[8, ROW_ID] in f.message
    assert str(pd.read_parquet(result.clean_path)["customer_id"].dtype) == "int64"
    assert_accounting(result)


def test_timestamps_outside_the_interval_are_quarantined(tmp_path):
    df = good_rows()
    ts = SPEC.event_timestamp
    df.loc[0, ts] = pd.Timestamp(START)  # start is inside
    df.loc[1, ts] = pd.Timestamp(START) - pd.Timedelta(seconds=1)
    df.loc[2, ts] = pd.Timestamp(END)  # end is outside: intervals are half-open
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted"
    q = quarantined(result)
    assert q[ROW_ID].tolist() == df[ROW_ID].iloc[[1, 2]].tolist()
    assert set(q["_quarantine_reasons"]) == {f"expect_column_values_to_be_between({ts})"}
    f = failure(result, "expect_column_values_to_be_between", ts)
    assert "2026-01-04T23:59:59+00:00" in f.sample and "2026-01-12T00:00:00+00:00" in f.sample
    assert "data interval" in f.message
    assert_accounting(result)


def test_every_copy_of_a_duplicated_id_is_quarantined(tmp_path):
    df = good_rows()
    df.loc[10, ROW_ID] = df.loc[11, ROW_ID]
    result = run(tmp_path, land(tmp_path, df))

    q = quarantined(result)
    assert q[ROW_ID].tolist() == [df.loc[11, ROW_ID]] * 2
    assert set(q["_quarantine_reasons"]) == {f"expect_column_values_to_be_unique({ROW_ID})"}
    assert df.loc[11, ROW_ID] not in set(pd.read_parquet(result.clean_path)[ROW_ID])
    assert_accounting(result)


def test_a_row_breaking_two_rules_lists_both(tmp_path):
    df = good_rows()
    df.loc[6, ["amount", "channel"]] = [-1.0, "fax"]
    result = run(tmp_path, land(tmp_path, df))

    reasons = quarantined(result)["_quarantine_reasons"].tolist()
    assert len(reasons) == 1
    assert sorted(reasons[0].split("; ")) == [
        "expect_column_values_to_be_between(amount)",
        "expect_column_values_to_be_in_set(channel)",
    ]


def test_quarantine_share_above_limit_blocks(tmp_path):
    df = good_rows()
    bad = int(N * SPEC.max_quarantine_share) + 1  # 11 of 200 = 5.5% > 5%
    df.loc[: bad - 1, "amount"] = -1.0
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "blocked"
    assert (result.rows_clean, result.rows_quarantined) == (0, bad)
    f = failure(result, "max_quarantine_share")
    assert f.severity == "batch" and f.count == bad
    assert f"{bad} of {N} rows (5.5%)" in f.message and "max_quarantine_share=0.05" in f.message
    assert result.clean_path is None and not (tmp_path / "validated" / f"{KEY}.parquet").exists()
    assert len(quarantined(result)) == bad  # still written, so people can see the rows


def test_share_at_the_limit_is_accepted(tmp_path):
    df = good_rows()
    bad = int(N * SPEC.max_quarantine_share)  # exactly 5%
    df.loc[: bad - 1, "amount"] = -1.0
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted" and result.rows_quarantined == bad


def test_limits_come_from_the_model_spec(tmp_path):
    df = good_rows()
    df.loc[:29, "amount"] = -1.0  # 15%
    lenient = dataclasses.replace(SPEC, max_quarantine_share=0.2)
    assert run(tmp_path, land(tmp_path, df), lenient).verdict == "accepted"
    assert run(tmp_path, land(tmp_path, df), SPEC).verdict == "blocked"


# -- outputs -----------------------------------------------------------------------------------


def test_rerun_is_idempotent_and_the_landed_file_is_untouched(tmp_path):
    df = good_rows()
    df.loc[[2, 3], "amount"] = -1.0
    batch = land(tmp_path, df)
    landed_hash = sha256(batch)

    first = run(tmp_path, batch)
    outputs = [Path(first.clean_path), Path(first.quarantine_path), Path(first.report_path)]
    before = {p: sha256(p) for p in outputs}
    second = run(tmp_path, batch)

    assert second == first
    assert {p: sha256(p) for p in outputs} == before
    assert sha256(batch) == landed_hash
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".tmp"]
    assert leftovers == []


def test_blocked_rerun_removes_stale_outputs(tmp_path):
    df = good_rows()
    df.loc[0, "amount"] = -1.0
    first = run(tmp_path, land(tmp_path, df))
    assert Path(first.clean_path).exists() and Path(first.quarantine_path).exists()

    # the producer re-lands the interval, now with a renamed column and no bad rows
    second = run(tmp_path, land(tmp_path, good_rows().rename(columns={"amount": "amt"})))

    assert second.verdict == "blocked"
    assert not Path(first.clean_path).exists()
    assert not Path(first.quarantine_path).exists()
    assert json.loads(Path(second.report_path).read_text())["verdict"] == "blocked"


def test_report_is_json_and_messages_say_what_to_do(tmp_path):
    df = good_rows()
    df.loc[1, "country"] = "XX"
    result = run(tmp_path, land(tmp_path, df))

    report = json.loads(Path(result.report_path).read_text())
    (f,) = report["failures"]
    assert f["rule"] == "expect_column_values_to_be_in_set" and f["column"] == "country"
    assert f["count"] == 1 and f["sample"] == ["XX"]
    for part in (
        f"transactions_{KEY}.parquet",
        "`country`",
        "expect_column_values_to_be_in_set",
        "XX",
        "1 row(s)",
        "quarantined to",
        "re-land",
    ):
        assert part in f["message"]
