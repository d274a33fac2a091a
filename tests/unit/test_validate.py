"""The validation gate on tiny batches built from the real transactions contract (and one of another shape)."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.spec import REPO_ROOT, load_contract, load_spec, load_specs, readers
from pipelines.validate import ValidationResult, validate_batch

pytestmark = pytest.mark.unit

CONTRACT = load_contract(REPO_ROOT / "datasets" / "transactions.yaml")
FRAUD = load_spec(REPO_ROOT / "models" / "fraud.yaml")
SPEND = load_spec(REPO_ROOT / "models" / "spend.yaml")
READERS = tuple(readers(CONTRACT.name, load_specs()))  # fraud and spend, as ingest_validate__transactions
ROW_ID = CONTRACT.row_id
TS = CONTRACT.timestamp
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
    df[TS] = pd.to_datetime(df[TS], utc=True)
    return df


def land(tmp_path: Path, df: pd.DataFrame, name: str = f"transactions_{KEY}.parquet") -> Path:
    path = tmp_path / "landing" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def run(tmp_path: Path, batch: Path, contract=CONTRACT, models=READERS) -> ValidationResult:
    return validate_batch(
        batch, contract, START, END, tmp_path / "validated", tmp_path / "quarantine", tmp_path / "reports",
        readers=models,
    )


def failure(result: ValidationResult, rule: str, column: str | None = None, check: str | None = None):
    found = [f for f in result.failures
             if f.rule == rule and (column is None or f.column == column) and (check is None or f.check == check)]
    assert found, f"no {rule} failure on {column}: {[(f.rule, f.column, f.check) for f in result.failures]}"
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
    assert str(clean[TS].dtype) == "datetime64[ns, UTC]"
    assert clean[ROW_ID].tolist() == df[ROW_ID].tolist()


def test_naive_timestamps_are_taken_as_utc(tmp_path):
    df = good_rows()
    df[TS] = df[TS].dt.tz_localize(None)
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted", result.summary
    clean = pd.read_parquet(result.clean_path)
    assert clean[TS].iloc[0] == pd.Timestamp(START)


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
    result = run(tmp_path, land(tmp_path, good_rows(CONTRACT.min_rows - 1)))

    assert result.verdict == "blocked"
    f = failure(result, "expect_table_row_count_to_be_between")
    assert (f"{CONTRACT.min_rows - 1} rows, below validation.min_rows={CONTRACT.min_rows} in "
            "datasets/transactions.yaml") in f.message


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
    ts = TS
    df.loc[0, ts] = pd.Timestamp(START)  # start is inside
    df.loc[1, ts] = pd.Timestamp(START) - pd.Timedelta(seconds=1)
    df.loc[2, ts] = pd.Timestamp(END)  # end is outside: intervals are half-open
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted"
    q = quarantined(result)
    assert q[ROW_ID].tolist() == df[ROW_ID].iloc[[1, 2]].tolist()
    assert q["_quarantine_reasons"].tolist() == [
        f"expect_column_values_to_be_between({ts}, in_interval)",  # before the start: a late row
        f"expect_column_values_to_be_between({ts}, not_in_future)",  # at the end: the batch's future
    ]
    late = failure(result, "expect_column_values_to_be_between", ts, check="in_interval")
    assert late.sample == ["2026-01-04T23:59:59+00:00"] and "data interval" in late.message
    future = failure(result, "expect_column_values_to_be_between", ts, check="not_in_future")
    assert future.sample == ["2026-01-12T00:00:00+00:00"] and "future" in future.message
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
    bad = int(N * CONTRACT.max_quarantine_share) + 1  # 11 of 200 = 5.5% > 5%
    df.loc[: bad - 1, "amount"] = -1.0
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "blocked"
    assert (result.rows_clean, result.rows_quarantined) == (0, 0)  # blocked whole: nothing published or quarantined
    f = failure(result, "max_quarantine_share")
    assert f.severity == "batch" and f.count == bad
    assert f"{bad} of {N} rows (5.5%)" in f.message
    assert "validation.max_quarantine_share=0.05 in datasets/transactions.yaml" in f.message
    assert "nothing is quarantined" in f.message
    assert result.clean_path is None and not (tmp_path / "validated" / f"{KEY}.parquet").exists()
    # the report still says how many rows broke which rule; the quarantine holds accepted batches' rows only
    assert failure(result, "expect_column_values_to_be_between", "amount").count == bad
    assert result.quarantine_path is None and not (tmp_path / "quarantine" / f"{KEY}.parquet").exists()


def test_a_blocked_batch_quarantines_nothing_and_removes_the_intervals_stale_quarantine(tmp_path):
    df = good_rows()
    df.loc[[0, 1], "amount"] = -1.0
    first = run(tmp_path, land(tmp_path, df))
    assert first.verdict == "accepted" and len(quarantined(first)) == 2

    # the interval is re-landed with too many bad rows: blocked, and its earlier quarantine is stale
    worse = good_rows()
    worse.loc[:11, "amount"] = -1.0  # 12 of 200 = 6% > 5%
    worse.loc[20, "channel"] = "fax"
    result = run(tmp_path, land(tmp_path, worse))

    assert result.verdict == "blocked"
    assert (result.rows_clean, result.rows_quarantined, result.quarantine_path) == (0, 0, None)
    assert not (tmp_path / "quarantine" / f"{KEY}.parquet").exists()
    amount = failure(result, "expect_column_values_to_be_between", "amount")
    channel = failure(result, "expect_column_values_to_be_in_set", "channel")
    assert (amount.severity, amount.count, channel.count) == ("row", 12, 1)  # still counted
    assert "quarantined to" not in amount.message and "not quarantined" in amount.message
    assert "13 of 200 rows" in failure(result, "max_quarantine_share").message
    assert "0 quarantined" in result.summary and "nothing quarantined: the batch is blocked whole" in result.summary
    report = json.loads(Path(result.report_path).read_text())
    assert report["rows_quarantined"] == 0 and report["quarantine_path"] is None


def test_share_at_the_limit_is_accepted(tmp_path):
    df = good_rows()
    bad = int(N * CONTRACT.max_quarantine_share)  # exactly 5%
    df.loc[: bad - 1, "amount"] = -1.0
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted" and result.rows_quarantined == bad


def test_limits_come_from_the_contract(tmp_path):
    df = good_rows()
    df.loc[:29, "amount"] = -1.0  # 15%
    lenient = dataclasses.replace(CONTRACT, max_quarantine_share=0.2)
    assert run(tmp_path, land(tmp_path, df), lenient).verdict == "accepted"
    assert run(tmp_path, land(tmp_path, df), CONTRACT).verdict == "blocked"


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


# -- row count, duplicate batches, re-landing ---------------------------------------------------


def run_at(tmp_path: Path, batch: Path, start: datetime, contract=CONTRACT, docs: bool = False) -> ValidationResult:
    return validate_batch(batch, contract, start, start + timedelta(days=7), tmp_path / "validated",
                          tmp_path / "quarantine", tmp_path / "reports",
                          docs_dir=tmp_path / "docs" if docs else None, readers=READERS)


def shifted(df: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """The same rows one or more weeks later, with their own ids."""
    out = df.copy()
    out[TS] = out[TS] + pd.Timedelta(weeks=weeks)
    out[ROW_ID] = f"w{weeks}-" + out[ROW_ID]
    return out


def test_too_many_rows_blocks(tmp_path):
    capped = dataclasses.replace(CONTRACT, max_rows=150)
    result = run(tmp_path, land(tmp_path, good_rows()), capped)

    assert result.verdict == "blocked"
    f = failure(result, "expect_table_row_count_to_be_between", check="row_count")
    assert f"{N} rows, above validation.max_rows=150 in datasets/transactions.yaml" in f.message


def test_the_same_bytes_for_another_interval_block_as_a_duplicate(tmp_path):
    first = run(tmp_path, land(tmp_path, good_rows()))
    assert first.verdict == "accepted"
    registry = json.loads((tmp_path / "reports" / "accepted_batches.json").read_text())
    assert registry[KEY]["sha256"] == first.batch_sha256 == sha256(Path(first.batch_file))

    later = END
    copy = land(tmp_path, good_rows(), f"transactions_{later:%Y-%m-%d}.parquet")  # last week's file, re-sent
    result = run_at(tmp_path, copy, later)

    assert result.verdict == "blocked" and result.rows_clean == 0
    f = result.failures[0]  # said first: it explains the rest (every timestamp is out of the interval)
    assert (f.rule, f.check, f.sample) == ("duplicate_batch", "duplicate_batch", [KEY])
    assert f"already accepted for the interval starting {KEY}" in f.message and copy.name in f.message
    assert f"transactions_{KEY}.parquet" in f.message
    assert not (tmp_path / "validated" / f"{later:%Y-%m-%d}.parquet").exists()


def test_revalidating_the_same_bytes_for_the_same_interval_is_a_rerun(tmp_path):
    batch = land(tmp_path, good_rows())
    first, second = run(tmp_path, batch), run(tmp_path, batch)

    assert first.verdict == second.verdict == "accepted"
    assert second == first
    assert not [f for f in second.failures if f.rule == "duplicate_batch"]


def test_a_fixed_batch_relanded_after_a_block_is_accepted_and_registered(tmp_path):
    broken = run(tmp_path, land(tmp_path, good_rows().rename(columns={"amount": "amt"})))
    assert broken.verdict == "blocked"
    assert not (tmp_path / "reports" / "accepted_batches.json").exists()

    fixed = run(tmp_path, land(tmp_path, good_rows()))  # same file name, fixed content

    assert fixed.verdict == "accepted" and fixed.rows_clean == N
    assert fixed.batch_sha256 != broken.batch_sha256
    registry = json.loads((tmp_path / "reports" / "accepted_batches.json").read_text())
    assert registry[KEY]["sha256"] == fixed.batch_sha256
    # and when an accepted interval is re-landed broken, it is no longer accepted anywhere
    again = run(tmp_path, land(tmp_path, good_rows().drop(columns=["country"])))
    assert again.verdict == "blocked"
    assert KEY not in json.loads((tmp_path / "reports" / "accepted_batches.json").read_text())
    assert not (tmp_path / "reports" / "profiles" / f"{KEY}.json").exists()


# -- row identity across batches -----------------------------------------------------------------


def resent(df: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """The same rows, ids included, one or more weeks later: old rows sent again with shifted timestamps."""
    out = df.copy()
    out[TS] = out[TS] + pd.Timedelta(weeks=weeks)
    return out


def week(n: int) -> tuple[datetime, str]:
    start = START + timedelta(weeks=n)
    return start, f"transactions_{start:%Y-%m-%d}.parquet"


def index_of(tmp_path: Path, key: str) -> np.ndarray:
    return pq.read_table(tmp_path / "reports" / "row_ids" / f"{key}.parquet").column("id_hash").to_numpy()


def test_rows_accepted_for_another_interval_are_quarantined(tmp_path):
    first = run(tmp_path, land(tmp_path, good_rows()))
    start2, name2 = week(1)
    df2 = shifted(good_rows(), 1)
    df2.loc[[3, 7, 9], ROW_ID] = ["tx00003", "tx00007", "tx00009"]  # three of last week's rows, sent again
    second = run_at(tmp_path, land(tmp_path, df2, name2), start2)

    assert second.verdict == "accepted", second.summary
    assert (second.rows_clean, second.rows_quarantined) == (N - 3, 3)
    q = quarantined(second)
    assert q[ROW_ID].tolist() == ["tx00003", "tx00007", "tx00009"]
    assert set(q["_quarantine_reasons"]) == {f"unique_across_batches({ROW_ID}, {KEY})"}
    f = failure(second, "unique_across_batches", ROW_ID, check="unique_across_batches")
    assert (f.severity, f.count, f.sample) == ("row", 3, ["tx00003", "tx00007", "tx00009"])
    for part in (name2, f"`{ROW_ID}`", "unique across every accepted batch", "tx00003",
                 f"3 accepted for the interval starting {KEY} (file `transactions_{KEY}.parquet`)",
                 "quarantined to", "re-sent old rows", "drop them", f"re-land the interval(s) {KEY}"):
        assert part in f.message, f.message
    assert "unique_across_batches(transaction_id) x3" in second.summary
    clean2 = pd.read_parquet(second.clean_path)
    assert not set(clean2[ROW_ID]) & set(pd.read_parquet(first.clean_path)[ROW_ID])
    assert_accounting(second)
    # the index: one file per accepted interval, the sorted distinct 64-bit hashes of its clean ids
    index2 = index_of(tmp_path, f"{start2:%Y-%m-%d}")
    assert index2.dtype == np.uint64 and len(index2) == N - 3 and bool((np.diff(index2) > 0).all())

    # a third week re-sends rows of both: each row names the interval that accepted it
    start3, name3 = week(2)
    df3 = shifted(good_rows(), 2)
    df3.loc[[0, 1], ROW_ID] = ["tx00001", "w1-tx00050"]
    third = run_at(tmp_path, land(tmp_path, df3, name3), start3)

    assert third.verdict == "accepted" and third.rows_quarantined == 2
    reasons = dict(zip(quarantined(third)[ROW_ID], quarantined(third)["_quarantine_reasons"], strict=True))
    assert reasons == {"tx00001": f"unique_across_batches({ROW_ID}, {KEY})",
                       "w1-tx00050": f"unique_across_batches({ROW_ID}, {start2:%Y-%m-%d})"}
    f = failure(third, "unique_across_batches")
    assert f"1 accepted for the interval starting {KEY}" in f.message
    assert f"1 accepted for the interval starting {start2:%Y-%m-%d} (file `{name2}`)" in f.message


def test_last_weeks_rows_with_new_timestamps_block_on_the_quarantine_share(tmp_path):
    run(tmp_path, land(tmp_path, good_rows()))
    start2, name2 = week(1)
    result = run_at(tmp_path, land(tmp_path, resent(good_rows(), 1), name2), start2)  # other bytes, the same rows

    assert result.verdict == "blocked", result.summary
    assert not [f for f in result.failures if f.rule == "duplicate_batch"]  # not the same file: the ids say it
    f = failure(result, "unique_across_batches", ROW_ID)
    assert f.count == N and "not quarantined" in f.message
    assert f"{N} of {N} rows (100.0%)" in failure(result, "max_quarantine_share").message
    assert (result.rows_clean, result.rows_quarantined, result.clean_path, result.quarantine_path) == (0, 0, None, None)
    key2 = f"{start2:%Y-%m-%d}"
    assert not (tmp_path / "validated" / f"{key2}.parquet").exists()
    assert not (tmp_path / "quarantine" / f"{key2}.parquet").exists()
    assert not (tmp_path / "reports" / "row_ids" / f"{key2}.parquet").exists()
    assert key2 not in json.loads((tmp_path / "reports" / "accepted_batches.json").read_text())


def test_revalidating_an_interval_replaces_its_ids_and_never_flags_its_own_rows(tmp_path):
    batch = land(tmp_path, good_rows())
    first, again = run(tmp_path, batch), run(tmp_path, batch)  # a rerun
    assert first.verdict == again.verdict == "accepted" and again.rows_clean == N
    before = index_of(tmp_path, KEY)

    # a fixed file re-landed for the same interval: half the ids kept, half new
    fixed = good_rows()
    fixed.loc[100:, ROW_ID] = [f"fx{i:05d}" for i in range(100, N)]
    relanded = run(tmp_path, land(tmp_path, fixed))

    assert relanded.verdict == "accepted" and relanded.rows_clean == N
    assert not [f for f in relanded.failures if f.rule == "unique_across_batches"]
    assert len(index_of(tmp_path, KEY)) == N and not np.array_equal(index_of(tmp_path, KEY), before)
    # the interval's ids are now the re-landed ones: the replaced ids are free, the kept and new ones are taken
    start2, name2 = week(1)
    df2 = shifted(good_rows(), 1)
    df2.loc[[0, 1, 2], ROW_ID] = ["tx00150", "tx00050", "fx00150"]  # replaced, kept, new
    second = run_at(tmp_path, land(tmp_path, df2, name2), start2)

    assert second.verdict == "accepted"
    assert quarantined(second)[ROW_ID].tolist() == ["tx00050", "fx00150"]


def test_an_interval_that_becomes_blocked_releases_its_ids(tmp_path):
    run(tmp_path, land(tmp_path, good_rows()))
    assert len(index_of(tmp_path, KEY)) == N
    blocked = run(tmp_path, land(tmp_path, good_rows().drop(columns=["country"])))  # re-landed broken
    assert blocked.verdict == "blocked"
    assert not (tmp_path / "reports" / "row_ids" / f"{KEY}.parquet").exists()

    start2, name2 = week(1)
    result = run_at(tmp_path, land(tmp_path, resent(good_rows(), 1), name2), start2)

    assert result.verdict == "accepted" and (result.rows_clean, result.rows_quarantined) == (N, 0)


def test_a_hash_collision_never_quarantines_a_good_row(tmp_path, monkeypatch):
    from pipelines.validate import row_ids

    # the worst hash there is: every id collides with every other one
    monkeypatch.setattr(row_ids, "id_hashes", lambda values: np.zeros(len(values), dtype=np.uint64))
    run(tmp_path, land(tmp_path, good_rows()))
    start2, name2 = week(1)
    df2 = shifted(good_rows(), 1)
    df2.loc[[5, 6], ROW_ID] = ["tx00005", "tx00006"]  # two real duplicates among 198 colliding new ids
    result = run_at(tmp_path, land(tmp_path, df2, name2), start2)

    assert result.verdict == "accepted", result.summary
    assert (result.rows_clean, result.rows_quarantined) == (N - 2, 2)
    assert quarantined(result)[ROW_ID].tolist() == ["tx00005", "tx00006"]


def test_intervals_accepted_before_the_index_existed_are_read_from_their_validated_files(tmp_path):
    run(tmp_path, land(tmp_path, good_rows()))
    written = index_of(tmp_path, KEY)
    (tmp_path / "reports" / "row_ids" / f"{KEY}.parquet").unlink()  # data accepted before this index
    start2, name2 = week(1)
    df2 = shifted(good_rows(), 1)
    df2.loc[[1, 2], ROW_ID] = ["tx00001", "tx00002"]
    second = run_at(tmp_path, land(tmp_path, df2, name2), start2)

    assert second.verdict == "accepted" and quarantined(second)[ROW_ID].tolist() == ["tx00001", "tx00002"]
    assert np.array_equal(index_of(tmp_path, KEY), written)  # rebuilt from the validated file, once
    # a damaged index (or one of another hash) is never trusted: rebuilt the same way
    (tmp_path / "reports" / "row_ids" / f"{KEY}.parquet").write_bytes(b"not parquet")
    start3, name3 = week(2)
    df3 = shifted(good_rows(), 2)
    df3.loc[0, ROW_ID] = "tx00003"
    third = run_at(tmp_path, land(tmp_path, df3, name3), start3)

    assert quarantined(third)[ROW_ID].tolist() == ["tx00003"]
    assert np.array_equal(index_of(tmp_path, KEY), written)


def test_row_ids_on_s3(tmp_path, s3_bucket):
    bucket, client = s3_bucket
    root = f"s3://{bucket}/data"

    def at(start: datetime, df: pd.DataFrame) -> ValidationResult:
        batch = land(tmp_path, df, f"transactions_{start:%Y-%m-%d}.parquet")
        return validate_batch(batch, CONTRACT, start, start + timedelta(days=7), f"{root}/validated",
                              f"{root}/quarantine", f"{root}/reports", readers=READERS)

    assert at(START, good_rows()).verdict == "accepted"
    start2, _ = week(1)
    df2 = shifted(good_rows(), 1)
    df2.loc[4, ROW_ID] = "tx00004"
    result = at(start2, df2)

    assert result.verdict == "accepted" and result.rows_quarantined == 1
    assert result.quarantine_path == f"{root}/quarantine/{start2:%Y-%m-%d}.parquet"
    def index_files() -> set[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="data/reports/row_ids/")["Contents"]
        return {o["Key"].rsplit("/", 1)[1] for o in listed} - {""}  # pyarrow may leave a folder marker

    assert index_files() == {f"{KEY}.parquet", f"{start2:%Y-%m-%d}.parquet"}
    # re-landed broken: blocked, its ids released on S3 too
    assert at(start2, good_rows().drop(columns=["country"])).verdict == "blocked"
    assert index_files() == {f"{KEY}.parquet"}


def test_row_ids_of_another_shape_int_ids_in_daily_csv(tmp_path):
    """Int ids, a daily CSV feed, no model reading it: the rule is the platform's, not the demo's."""
    path = tmp_path / "datasets" / "meter_readings.yaml"
    path.parent.mkdir()
    path.write_text(METERS_YAML.replace("reading_id: {type: string", "reading_id: {type: int"))
    readings = load_contract(path)
    day = timedelta(days=1)

    def at(start: datetime, df: pd.DataFrame) -> ValidationResult:
        batch = land(tmp_path, df, f"meter_readings_{start:%Y-%m-%d}.csv")
        return validate_batch(batch, readings, start, start + day, tmp_path / "validated", tmp_path / "quarantine",
                              tmp_path / "reports")

    first = meter_rows().assign(reading_id=range(1000, 1100))
    assert at(START, first).verdict == "accepted"
    second = meter_rows().assign(reading_id=range(2000, 2100), read_at=lambda d: d["read_at"] + day)
    second.loc[[10, 20], "reading_id"] = [1010, 1099]
    result = at(START + day, second)

    assert result.verdict == "accepted", result.summary
    q = quarantined(result)
    assert q["reading_id"].tolist() == [1010, 1099]
    assert set(q["_quarantine_reasons"]) == {f"unique_across_batches(reading_id, {KEY})"}
    assert failure(result, "unique_across_batches", "reading_id").sample == [1010, 1099]
    assert "meter_readings_2026-01-06.csv" in failure(result, "unique_across_batches").message


# -- null shares ---------------------------------------------------------------------------------


METERS_YAML = """\
name: meter_readings
description: Smart-meter readings, one row per meter and read, exported daily.
owners: [grid-data@example.com]
file_pattern: "meter_readings_{start:%Y-%m-%d}.csv"
row_id: reading_id
timestamp: read_at
cadence: "@daily"
columns:
  reading_id: {type: string, nullable: false, unique: true}
  meter: {type: int, nullable: false, min: 1}
  kwh: {type: float, nullable: true, min: 0, max_null_share: 0.1}
  voltage: {type: float, nullable: true}
  read_at: {type: timestamp, nullable: false}
validation:
  min_rows: 50
"""


@pytest.fixture
def meters(tmp_path):
    """A second contract of another shape: daily, CSV, nullable measures, no model reading it."""
    path = tmp_path / "datasets" / "meter_readings.yaml"
    path.parent.mkdir()
    path.write_text(METERS_YAML)
    return load_contract(path)


def meter_rows(n: int = 100, null_kwh: int = 0) -> pd.DataFrame:
    df = pd.DataFrame({
        "reading_id": [f"r{i:04d}" for i in range(n)],
        "meter": [1 + i % 7 for i in range(n)],
        "kwh": [0.5 + i / 10 for i in range(n)],
        "voltage": [None if i % 2 else 230.0 for i in range(n)],  # half null: no limit declared, accepted
        "read_at": pd.to_datetime([START + timedelta(minutes=10 * i) for i in range(n)], utc=True),
    })
    df.loc[: null_kwh - 1, "kwh"] = None
    return df


def run_meters(tmp_path: Path, contract, df: pd.DataFrame) -> ValidationResult:
    batch = land(tmp_path, df, f"meter_readings_{KEY}.csv")
    return validate_batch(batch, contract, START, START + timedelta(days=1), tmp_path / "validated",
                          tmp_path / "quarantine", tmp_path / "reports")


def test_more_nulls_than_max_null_share_block_the_batch(tmp_path, meters):
    result = run_meters(tmp_path, meters, meter_rows(null_kwh=11))  # 11% > 10%

    assert result.verdict == "blocked" and result.rows_clean == 0 and result.clean_path is None
    f = failure(result, "expect_column_values_to_not_be_null", "kwh", check="null_share")
    assert (f.severity, f.count, f.sample) == ("batch", 11, ["r0000", "r0001", "r0002", "r0003", "r0004"])
    for part in (f"meter_readings_{KEY}.csv", "`kwh`", "null in 11 of 100 rows (11.0%)",
                 "columns.kwh.max_null_share=0.1 in", "meter_readings.yaml", "re-land", "raise max_null_share"):
        assert part in f.message, f.message
    assert result.rows_quarantined == 0  # nulls in a nullable column are not row problems
    assert [x.check for x in result.failures] == ["null_share"]


def test_nulls_up_to_max_null_share_pass(tmp_path, meters):
    result = run_meters(tmp_path, meters, meter_rows(null_kwh=10))  # exactly 10%

    assert result.verdict == "accepted", result.summary
    assert (result.rows_clean, result.rows_quarantined, result.failures) == (100, 0, ())
    clean = pd.read_parquet(result.clean_path)
    assert list(clean.columns) == meters.column_names
    assert int(clean["kwh"].isna().sum()) == 10 and int(clean["voltage"].isna().sum()) == 50


def test_max_null_share_is_read_from_the_contract(tmp_path, meters):
    lenient = dataclasses.replace(meters, columns=tuple(
        dataclasses.replace(c, max_null_share=0.2) if c.name == "kwh" else c for c in meters.columns))
    assert run_meters(tmp_path, lenient, meter_rows(null_kwh=15)).verdict == "accepted"
    assert run_meters(tmp_path, meters, meter_rows(null_kwh=15)).verdict == "blocked"


# -- all-null columns, labels --------------------------------------------------------------------


def test_an_all_null_column_blocks(tmp_path):
    df = good_rows()
    df["merchant_id"] = None  # parquet writes a column of type null
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "blocked"
    f = failure(result, "expect_column_values_to_not_be_null", "merchant_id", check="all_null")
    assert f.severity == "batch" and f"null in all {N} rows" in f.message


def test_a_nullable_column_null_in_every_row_blocks(tmp_path, meters):
    """`voltage` is nullable with no declared share: half null passes (meter_rows), but a batch where it is null
    in every row is a broken export (the field was dropped upstream), not nullable data."""
    df = meter_rows()
    df["voltage"] = None
    result = run_meters(tmp_path, meters, df)

    assert result.verdict == "blocked" and result.rows_clean == 0
    f = failure(result, "expect_column_values_to_not_be_null", "voltage", check="all_null")
    assert f.severity == "batch" and f.count == 100
    for part in ("`voltage` is null in all 100 rows", "nullable: true", "broken export", "meter_readings.yaml",
                 "re-land"):
        assert part in f.message, f.message
    one = meter_rows()
    one["voltage"] = None
    one.loc[7, "voltage"] = 231.0  # one value present: nullable data, accepted
    assert run_meters(tmp_path, meters, one).verdict == "accepted"


def test_a_label_outside_its_allowed_values_is_quarantined_by_the_contract_rule(tmp_path):
    df = good_rows()
    df.loc[3, "is_fraud"] = 2
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted"
    f = failure(result, "expect_column_values_to_be_in_set", "is_fraud", check="allowed")
    assert f.sample == [2] and "must be one of [0, 1]" in f.message and "datasets/transactions.yaml" in f.message
    assert quarantined(result)[ROW_ID].tolist() == [df.loc[3, ROW_ID]]
    assert not [x for x in result.failures if x.check == "label"]  # the label rules of a model run elsewhere


def test_a_copy_of_the_label_under_another_name_is_a_leak(tmp_path):
    df = good_rows().assign(chargeback=lambda d: d["is_fraud"])  # innocent name, the label's values
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "blocked"
    f = failure(result, "leaked_label", "chargeback")
    assert "values equal the label `is_fraud` in 100% of rows (the label of model fraud)" in f.message
    assert "model fraud's label comes only from the contract column `is_fraud`" in f.message
    assert not [x for x in result.failures if x.rule == "expect_table_columns_to_match_set"]


def test_a_label_named_column_is_a_leak_for_a_computed_label(tmp_path):
    df = good_rows().assign(spend_next_7d=1.0)
    result = run(tmp_path, land(tmp_path, df), models=(SPEND,))

    assert result.verdict == "blocked"
    f = failure(result, "leaked_label", "spend_next_7d")
    assert "looks like the label of model spend" in f.message and "next" in f.message
    assert "sum of `amount` over the next 7 day(s)" in f.message


def test_a_column_called_like_any_label_is_a_leak_for_every_reader(tmp_path):
    result = run(tmp_path, land(tmp_path, good_rows().assign(target=0)))

    f = failure(result, "leaked_label", "target")
    assert "its name says it is a label (`target`)" in f.message
    assert "model fraud's label" in f.message and "model spend's label" in f.message


def test_without_readers_there_is_no_label_to_leak(tmp_path):
    df = good_rows().assign(chargeback=lambda d: d["is_fraud"], fraud_label=lambda d: d["is_fraud"], target=0)
    result = run(tmp_path, land(tmp_path, df), models=())

    assert result.verdict == "blocked"  # still columns the contract does not know
    assert not [f for f in result.failures if f.rule == "leaked_label"]
    assert {(f.rule, f.column) for f in result.failures} == {
        ("expect_table_columns_to_match_set", c) for c in ("chargeback", "fraud_label", "target")
    }


def test_an_unrelated_extra_column_is_not_called_a_leak(tmp_path):
    result = run(tmp_path, land(tmp_path, good_rows().assign(loyalty_tier="gold")))

    assert [f.rule for f in result.failures] == ["expect_table_columns_to_match_set"]


def test_dictionary_encoded_strings_are_strings(tmp_path):
    df = good_rows()
    df["channel"] = df["channel"].astype("category")  # parquet: dictionary<string>
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted", result.summary


# -- distribution against the accepted batches ---------------------------------------------------


def test_distribution_warns_against_the_accepted_batches_before_it(tmp_path):
    first = run(tmp_path, land(tmp_path, good_rows()))
    assert first.reference_batches == ()  # nothing accepted before: no reference, no check
    profile = json.loads((tmp_path / "reports" / "profiles" / f"{KEY}.json").read_text())
    assert set(profile["columns"]) == {"amount", "is_fraud"} and profile["rows"] == N

    cents = shifted(good_rows(), 1)
    cents["amount"] = cents["amount"] * 30  # units changed upstream; still inside the contract's range
    later = END
    result = run_at(tmp_path, land(tmp_path, cents, f"transactions_{later:%Y-%m-%d}.parquet"), later)

    assert result.verdict == "accepted" and result.rows_clean == N
    assert result.reference_batches == (KEY,)
    warnings = [f for f in result.failures if f.severity == "warn"]
    assert {(f.rule, f.column) for f in warnings} == {
        ("expect_column_mean_to_be_between", "amount"),
        ("expect_column_quantile_values_to_be_between", "amount"),
    }
    mean = failure(result, "expect_column_mean_to_be_between", "amount")
    assert "max_ratio=3" in mean.message and KEY in mean.message and "proceeds" in mean.message
    assert "validation.distribution.max_ratio=3 in datasets/transactions.yaml" in mean.message
    assert "Warnings:" in result.summary


def test_distribution_blocks_when_the_contract_says_so(tmp_path):
    strict = dataclasses.replace(CONTRACT, distribution=dataclasses.replace(CONTRACT.distribution, severity="block"))
    run_at(tmp_path, land(tmp_path, good_rows()), START, strict)
    same = shifted(good_rows(), 1)
    assert run_at(tmp_path, land(tmp_path, same, "next.parquet"), END, strict).verdict == "accepted"
    cents = shifted(good_rows(), 2)
    cents["amount"] = cents["amount"] * 30
    later = END + timedelta(days=7)
    result = run_at(tmp_path, land(tmp_path, cents, "third.parquet"), later, strict)

    assert result.verdict == "blocked"
    assert result.reference_batches == (KEY, f"{END:%Y-%m-%d}")
    f = failure(result, "expect_column_mean_to_be_between", "amount")
    assert f.severity == "batch" and "validation.distribution.severity: block" in f.message


# -- Data Docs and the email ---------------------------------------------------------------------


def test_data_docs_page_per_run_and_in_the_report(tmp_path):
    df = good_rows()
    df.loc[1, "amount"] = -1.0
    batch = land(tmp_path, df)
    result = run_at(tmp_path, batch, START, docs=True)

    page = Path(result.data_docs_path)
    assert page.is_file() and page.suffix == ".html"
    validations = tmp_path / "docs" / "site" / "validations"
    assert page.is_relative_to(validations)
    assert page.relative_to(validations).parts[0] == "transactions"  # the suite is the dataset's
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text())).split())  # the page as read
    # rendered for people: the range rule in words, with the offending value and its count
    assert "greater than or equal to 0.01 and less than or equal to 20000.0" in text
    assert "1 unexpected values found" in text and "-1.0" in text
    assert (tmp_path / "docs" / "site" / "index.html").is_file()
    assert json.loads(Path(result.report_path).read_text())["data_docs_path"] == str(page)
    assert str(page) in result.summary
    # a rerun of the same bytes keeps its page; another content for the interval gets its own
    assert run_at(tmp_path, batch, START, docs=True).data_docs_path == str(page)
    other = run_at(tmp_path, land(tmp_path, good_rows().rename(columns={"amount": "amt"})), START, docs=True)
    assert other.data_docs_path != str(page) and Path(other.data_docs_path).is_file()
    index = (tmp_path / "docs" / "site" / "index.html").read_text()
    assert page.name in index and Path(other.data_docs_path).name in index


def test_blocked_email_names_the_dataset_the_models_and_the_rule(tmp_path):
    from pipelines.notify import blocked_batch_email

    result = run_at(tmp_path, land(tmp_path, good_rows().rename(columns={"amount": "amt"})), START, docs=True)
    payload = {**result.to_dict(), "summary": result.summary}
    mail = blocked_batch_email(CONTRACT, READERS, payload, "http://airflow/run")

    # the dataset's owners first, then each reader's, each address once
    assert mail.to == ("payments-data@example.com", "fraud-ml@example.com", "risk-oncall@example.com",
                       "growth-analytics@example.com")
    assert mail.to == (*CONTRACT.owners, *FRAUD.owners, *SPEND.owners)
    assert "BLOCKED" in mail.subject and "transactions" in mail.subject
    assert "expect_table_columns_to_match_set" in mail.subject and "fraud, spend" in mail.subject
    assert "found `amt`" in mail.html and f"transactions_{KEY}.parquet" in mail.html
    assert "dataset <code>transactions</code>" in mail.html
    assert "<code>fraud</code>" in mail.html and "<code>spend</code>" in mail.html
    assert Path(result.data_docs_path).as_uri() in mail.html
    assert "flywheel validate --dataset transactions &lt;file&gt;" in mail.html and "--model" not in mail.html
    assert mail.attachments == (result.report_path,)
    # no base URL to link the page: the runbook's file is named; a renamed column is no quarantine spike
    assert "docs/runbooks/blocked-batch.md" in mail.html and "quarantine-spike" not in mail.html


def test_blocked_email_shows_the_failed_rules_links_the_pages_and_attaches_the_report(tmp_path):
    """As a mail client gets it: a picture of the failed rules inline (its Content-ID named by the HTML), the
    dataset's and the models' Flywheel pages and the full report linked, the JSON report attached as it is."""
    import email
    import email.policy
    import io

    from PIL import Image

    from pipelines.mail import Pages, build_message
    from pipelines.notify import blocked_batch_email

    rows = good_rows()
    rows.loc[rows.index[: len(rows) // 4], "amount"] = -5.0          # a quarter of the rows: over the 5% allowed
    result = run(tmp_path, land(tmp_path, rows))
    assert result.verdict == "blocked"
    pages = Pages(base_url="http://127.0.0.1:8080/", folders=((str(tmp_path / "reports"), "validation/transactions"),))
    mail = blocked_batch_email(CONTRACT, READERS, result.to_dict(), "http://airflow/run", pages=pages)
    msg = email.message_from_bytes(build_message(mail, "flywheel@localhost").as_bytes(), policy=email.policy.default)
    body = msg.get_body(preferencelist=("html",)).get_content()
    (cid,) = re.findall(r'<img src="cid:([^"]+)"', body)
    (image,) = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == f"<{cid}>" and image.get_content_disposition() == "inline"
    png = image.get_payload(decode=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size[0] >= 400
    assert png == Path(result.report_path).with_suffix(".png").read_bytes()
    assert 'href="http://127.0.0.1:8080/flywheel/datasets/transactions"' in body
    assert 'href="http://127.0.0.1:8080/flywheel/models/fraud"' in body
    assert 'href="http://127.0.0.1:8080/flywheel/models/spend"' in body
    report = Path(result.report_path).name
    assert f'href="http://127.0.0.1:8080/flywheel/files/validation/transactions/{report}"' in body
    text = msg.get_body(preferencelist=("plain",)).get_content()
    assert "max_quarantine_share" in text
    # blocked by the quarantine share: both runbooks, linked in the HTML and spelled out in the text
    from pipelines.runbooks import list_runbooks

    books = list_runbooks()
    for name in ("blocked-batch", "quarantine-spike"):
        url = f"http://127.0.0.1:8080/flywheel/runbooks/{name}"
        assert f'<a href="{url}">{books[name].heading}</a>' in body and f"{books[name].heading} <{url}>" in text
    (attachment,) = msg.iter_attachments()
    assert attachment.get_content_type() == "application/json"
    assert json.loads(attachment.get_payload(decode=True))["verdict"] == "blocked"


def test_blocked_email_goes_to_each_owner_once(tmp_path):
    from pipelines.notify import blocked_batch_email

    result = run(tmp_path, land(tmp_path, good_rows().drop(columns=["country"])))
    shared = dataclasses.replace(SPEND, owners=("fraud-ml@example.com", "Payments-Data@example.com", "new@example.com"))
    mail = blocked_batch_email(CONTRACT, (FRAUD, shared), result.to_dict(), "http://airflow/run")

    assert mail.to == ("payments-data@example.com", "fraud-ml@example.com", "risk-oncall@example.com",
                       "new@example.com")
    alone = blocked_batch_email(CONTRACT, (), result.to_dict(), "http://airflow/run")
    assert alone.to == CONTRACT.owners and "no model reads" in alone.subject


# -- the contract's validation section -------------------------------------------------------------


def test_validation_settings_come_from_the_contract(tmp_path):
    import yaml

    from pipelines.spec import SpecError

    assert CONTRACT.max_rows == 150000 and CONTRACT.min_rows == 100 and CONTRACT.max_quarantine_share == 0.05
    assert CONTRACT.distribution.columns == ("amount", "is_fraud") and CONTRACT.distribution.severity == "warn"
    assert FRAUD.dataset == CONTRACT and FRAUD.event_timestamp == CONTRACT.timestamp == "event_ts"
    raw = yaml.safe_load((REPO_ROOT / "datasets" / "transactions.yaml").read_text())
    for bad, words in (
        ({"min_rows": 10, "max_rows": 5}, "below validation.min_rows"),
        ({"distribution": {"columns": ["channel"]}}, "not an int or float column"),
        ({"distribution": {"severity": "loud"}}, "must be warn, block or off"),
        ({"max_row": 5}, "unknown key(s) ['max_row']"),
    ):
        path = tmp_path / "datasets" / "transactions.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump({**raw, "validation": bad}))
        with pytest.raises(SpecError, match=re.escape(words)):
            load_contract(path)


def test_a_lost_row_fails_the_run_and_publishes_nothing(tmp_path, monkeypatch):
    from pipelines.validate import outputs

    real = outputs.clean_table
    monkeypatch.setattr(outputs, "clean_table", lambda clean, contract: real(clean, contract).slice(1))  # a bug
    with pytest.raises(RuntimeError, match=f"{N} rows landed but the clean and quarantine files hold {N - 1}"):
        run(tmp_path, land(tmp_path, good_rows()))
    assert not (tmp_path / "validated" / f"{KEY}.parquet").exists()
