"""The validation gate on tiny batches built from the real transactions contract."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import re
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


# -- row count, duplicate batches, re-landing ---------------------------------------------------


def run_at(tmp_path: Path, batch: Path, start: datetime, spec=SPEC, docs: bool = False) -> ValidationResult:
    return validate_batch(batch, spec, start, start + timedelta(days=7), tmp_path / "validated",
                          tmp_path / "quarantine", tmp_path / "reports",
                          docs_dir=tmp_path / "docs" if docs else None)


def shifted(df: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """The same rows one or more weeks later, with their own ids."""
    out = df.copy()
    out[SPEC.event_timestamp] = out[SPEC.event_timestamp] + pd.Timedelta(weeks=weeks)
    out[ROW_ID] = f"w{weeks}-" + out[ROW_ID]
    return out


def test_too_many_rows_blocks(tmp_path):
    capped = dataclasses.replace(SPEC, max_rows=150)
    result = run(tmp_path, land(tmp_path, good_rows()), capped)

    assert result.verdict == "blocked"
    f = failure(result, "expect_table_row_count_to_be_between", check="row_count")
    assert f"{N} rows, above validation.max_rows=150" in f.message and "models/fraud.yaml" in f.message


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


# -- all-null columns, labels --------------------------------------------------------------------


def test_an_all_null_column_blocks(tmp_path):
    df = good_rows()
    df["merchant_id"] = None  # parquet writes a column of type null
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "blocked"
    f = failure(result, "expect_column_values_to_not_be_null", "merchant_id", check="all_null")
    assert f.severity == "batch" and f"null in all {N} rows" in f.message


def test_a_label_outside_0_1_is_quarantined_by_the_label_rule(tmp_path):
    df = good_rows()
    df.loc[3, "is_fraud"] = 2
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "accepted"
    f = failure(result, "expect_column_values_to_be_in_set", "is_fraud", check="label")
    assert f.sample == [2] and "label of the binary model fraud" in f.message
    assert quarantined(result)[ROW_ID].tolist() == [df.loc[3, ROW_ID]]


def test_a_copy_of_the_label_under_another_name_is_a_leak(tmp_path):
    df = good_rows().assign(chargeback=lambda d: d["is_fraud"])  # innocent name, the label's values
    result = run(tmp_path, land(tmp_path, df))

    assert result.verdict == "blocked"
    f = failure(result, "leaked_label", "chargeback")
    assert "values equal the label `is_fraud` in 100% of rows" in f.message
    assert not [x for x in result.failures if x.rule == "expect_table_columns_to_match_set"]


def test_a_label_named_column_is_a_leak_for_a_computed_label(tmp_path):
    spend = load_spec(REPO_ROOT / "models" / "spend.yaml")
    df = good_rows().assign(spend_next_7d=1.0)
    result = run(tmp_path, land(tmp_path, df), spend)

    assert result.verdict == "blocked"
    f = failure(result, "leaked_label", "spend_next_7d")
    assert "looks like the label of model spend" in f.message and "next" in f.message
    assert "sum of `amount` over the next 7 day(s)" in f.message


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
    assert "Warnings:" in result.summary


def test_distribution_blocks_when_the_spec_says_so(tmp_path):
    strict = dataclasses.replace(SPEC, distribution=dataclasses.replace(SPEC.distribution, severity="block"))
    run(tmp_path, land(tmp_path, good_rows()), strict)
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
    assert page.is_relative_to(tmp_path / "docs" / "site" / "validations")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text())).split())  # the page as read
    assert "fraud.transactions" in text
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


def test_blocked_email_names_the_rule_and_links_the_data_docs(tmp_path):
    from pipelines.notify import blocked_batch_email

    result = run_at(tmp_path, land(tmp_path, good_rows().rename(columns={"amount": "amt"})), START, docs=True)
    payload = {**result.to_dict(), "summary": result.summary}
    mail = blocked_batch_email(SPEC, payload, "http://airflow/run")

    assert mail.to == SPEC.owners
    assert "BLOCKED" in mail.subject and "fraud" in mail.subject and "expect_table_columns_to_match_set" in mail.subject
    assert "found `amt`" in mail.html and f"transactions_{KEY}.parquet" in mail.html
    assert Path(result.data_docs_path).as_uri() in mail.html
    assert "flywheel validate --model fraud" in mail.html
    assert mail.attachments == (result.report_path,)


# -- the spec's validation section ----------------------------------------------------------------


def test_validation_settings_come_from_the_spec(tmp_path):
    import yaml

    from pipelines.spec import SpecError

    assert SPEC.max_rows == 150000 and SPEC.min_rows == 100
    assert SPEC.distribution.columns == ("amount", "is_fraud") and SPEC.distribution.severity == "warn"
    raw = yaml.safe_load((REPO_ROOT / "models" / "fraud.yaml").read_text())
    for bad, words in (
        ({"min_rows": 10, "max_rows": 5}, "below validation.min_rows"),
        ({"distribution": {"columns": ["channel"]}}, "not an int or float column"),
        ({"distribution": {"severity": "loud"}}, "must be warn, block or off"),
        ({"max_row": 5}, "unknown key(s) ['max_row']"),
    ):
        path = tmp_path / "models" / "fraud.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump({**raw, "validation": bad}))
        with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            load_spec(path)


def test_a_lost_row_fails_the_run_and_publishes_nothing(tmp_path, monkeypatch):
    import pipelines.validate as v

    real = v._clean_table
    monkeypatch.setattr(v, "_clean_table", lambda clean, spec: real(clean, spec).slice(1))  # a writer bug
    with pytest.raises(RuntimeError, match=f"{N} rows landed but the clean and quarantine files hold {N - 1}"):
        run(tmp_path, land(tmp_path, good_rows()))
    assert not (tmp_path / "validated" / f"{KEY}.parquet").exists()
