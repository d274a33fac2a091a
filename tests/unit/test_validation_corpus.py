"""A corpus of broken batches: each kind of bad input, its verdict, its message and its row accounting.

Every case lands one file built from valid rows of the real transactions contract, then breaks it
in one way. For each case the test checks what a person or the DAG would act on:

- the verdict (blocked, or accepted with rows quarantined);
- the failure: its rule, column and check, and a message naming the file, the column and the rule;
- the accounting: an accepted batch's clean + quarantined rows are every landed row (and the files
  hold exactly that many); a blocked one publishes and quarantines nothing (it stays whole).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.spec import REPO_ROOT, DatasetContract, ModelSpec, load_contract, load_specs, readers
from pipelines.validate import ValidationResult, validate_batch

pytestmark = pytest.mark.unit

CONTRACT = load_contract(REPO_ROOT / "datasets" / "transactions.yaml")
READERS = tuple(readers(CONTRACT.name, load_specs()))  # the models reading it: their labels must not leak
ROW_ID = CONTRACT.row_id
TS = CONTRACT.timestamp
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
END = START + timedelta(days=7)
KEY = f"{START:%Y-%m-%d}"
NAME = f"transactions_{KEY}.parquet"
N = 200  # >= validation.min_rows (100); 5% is 10 rows


def good_rows(n: int = N, start: datetime = START, prefix: str = "tx") -> pd.DataFrame:
    cols: dict[str, list] = {}
    for c in CONTRACT.columns:
        if c.allowed:
            cols[c.name] = [c.allowed[i % len(c.allowed)] for i in range(n)]
        elif c.type == "string":
            cols[c.name] = [f"{prefix}{i:05d}" for i in range(n)]
        elif c.type == "int":
            cols[c.name] = [i + 1 for i in range(n)]
        elif c.type == "float":
            cols[c.name] = [round(1.0 + 1.25 * i, 2) for i in range(n)]
        else:
            cols[c.name] = [start + timedelta(minutes=30 * i) for i in range(n)]
    df = pd.DataFrame(cols)
    df[TS] = pd.to_datetime(df[TS], utc=True)
    return df


# -- how each case lands its file ----------------------------------------------------------------


def parquet(df: pd.DataFrame, name: str = NAME) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        df.to_parquet(path, index=False)
        return path

    return write


def raw(data: bytes, name: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return write


def csv(df: pd.DataFrame, sep: str = ",", encoding: str = "utf-8") -> Callable[[Path], Path]:
    return raw(df.to_csv(index=False, sep=sep).encode(encoding), f"transactions_{KEY}.csv")


def truncated() -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = parquet(good_rows())(folder)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # the producer died half-way
        return path

    return write


def accepted_last_week(folder: Path, contract: DatasetContract) -> Path:
    """Land and accept last week's batch (the registry and the reference profile then know it)."""
    last = START - timedelta(days=7)
    path = folder / f"transactions_{last:%Y-%m-%d}.parquet"
    good_rows(start=last, prefix="lw").to_parquet(path, index=False)
    result = validate_batch(path, contract, last, START, folder.parent / "validated", folder.parent / "quarantine",
                            folder.parent / "reports", readers=READERS)
    assert result.verdict == "accepted", result.summary
    return path


def same_bytes_as_last_week() -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        old = accepted_last_week(folder, CONTRACT)
        path = folder / NAME
        path.write_bytes(old.read_bytes())  # last week's file, re-sent as this week's
        return path

    return write


def last_weeks_rows_again(rows: list[int] | None = None) -> Callable[[Path], Path]:
    """Rows of last week's accepted batch (all, or those at `rows`), ids included, sent again in this week's
    file with this week's timestamps: other bytes, the same rows."""

    def write(folder: Path) -> Path:
        accepted_last_week(folder, CONTRACT)
        df = good_rows()
        old = good_rows(start=START - timedelta(days=7), prefix="lw")[ROW_ID]
        if rows is None:
            df[ROW_ID] = old
        else:
            df.loc[rows, ROW_ID] = old[rows]
        return parquet(df)(folder)

    return write


def after_last_week(df: pd.DataFrame) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        accepted_last_week(folder, CONTRACT)
        return parquet(df)(folder)

    return write


def changed(**edits: object) -> pd.DataFrame:
    """Valid rows with `column=(rows, values)` edits."""
    df = good_rows()
    for column, (rows, values) in edits.items():  # type: ignore[misc]
        df.loc[rows, column] = values
    return df


def with_column(name: str, values: object) -> pd.DataFrame:
    df = good_rows()
    df[name] = values
    return df


def latin1_csv() -> Callable[[Path], Path]:
    df = good_rows()
    df.loc[7, ROW_ID] = "tx-café"  # é written as latin-1: one byte that is not UTF-8
    return csv(df, encoding="latin-1")


# -- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    land: Callable[[Path], Path]
    verdict: str  # accepted / blocked
    rule: str
    column: str | None
    check: str
    quarantined: int = 0  # rows quarantined (always 0 when blocked: the failures still count the rows)
    says: tuple[str, ...] = ()  # more words the message must hold
    contract: DatasetContract = CONTRACT
    readers: tuple[ModelSpec, ...] = READERS


CASES = [
    Case("missing column", parquet(good_rows().drop(columns=["country"])), "blocked",
         "expect_table_columns_to_match_set", "country", "schema", says=("column `country` missing",)),
    Case("renamed column", parquet(good_rows().rename(columns={"amount": "amt"})), "blocked",
         "expect_table_columns_to_match_set", "amount", "schema", says=("found `amt`", "rename it upstream")),
    Case("extra column", parquet(with_column("loyalty_tier", "gold")), "blocked",
         "expect_table_columns_to_match_set", "loyalty_tier", "schema", says=("not in the contract",)),
    Case("wrong dtype", parquet(good_rows().assign(amount=lambda d: d["amount"].map(str))), "blocked",
         "expect_column_values_to_be_in_type_list", "amount", "type", says=("says float", "'1.0'")),
    Case("timestamps as text", parquet(good_rows().assign(event_ts=lambda d: d[TS].astype(str))), "blocked",
         "expect_column_values_to_be_of_type", TS, "type", says=("says timestamp",)),
    Case("all-null column", parquet(with_column("merchant_id", None)), "blocked",
         "expect_column_values_to_not_be_null", "merchant_id", "all_null", says=(f"null in all {N} rows",)),
    Case("nulls in a key", parquet(changed(transaction_id=([4, 9], None))), "accepted",
         "expect_column_values_to_not_be_null", ROW_ID, "not_null", quarantined=2, says=("row positions [4, 9]",)),
    Case("nulls in the entity key", parquet(changed(customer_id=([5], None))), "accepted",
         "expect_column_values_to_not_be_null", "customer_id", "not_null", quarantined=1, says=("tx00005",)),
    Case("duplicate keys", parquet(changed(transaction_id=([10], "tx00011"))), "accepted",
         "expect_column_values_to_be_unique", ROW_ID, "unique", quarantined=2, says=("tx00011",)),
    Case("negative amounts", parquet(changed(amount=([1, 2], -3.5))), "accepted",
         "expect_column_values_to_be_between", "amount", "range", quarantined=2, says=("-3.5", "between 0.01")),
    Case("absurd amounts", parquet(changed(amount=([3], 1e9))), "accepted",
         "expect_column_values_to_be_between", "amount", "range", quarantined=1, says=("1000000000.0",)),
    Case("unknown category", parquet(changed(category=([6], "casino"))), "accepted",
         "expect_column_values_to_be_in_set", "category", "allowed", quarantined=1, says=("casino", "'grocery'")),
    Case("label outside 0/1", parquet(changed(is_fraud=([8], 7))), "accepted",
         "expect_column_values_to_be_in_set", "is_fraud", "allowed", quarantined=1,
         says=("must be one of [0, 1]", "datasets/transactions.yaml")),
    Case("timestamps in the future", parquet(changed(event_ts=([0, 1], pd.Timestamp("2099-01-01", tz="UTC")))),
         "accepted", "expect_column_values_to_be_between", TS, "not_in_future", quarantined=2,
         says=("2099-01-01T00:00:00+00:00", "future", "clock")),
    Case("timestamps before the interval", parquet(changed(event_ts=([2], pd.Timestamp(START) - pd.Timedelta("1h")))),
         "accepted", "expect_column_values_to_be_between", TS, "in_interval", quarantined=1,
         says=("2026-03-01T23:00:00+00:00", "data interval", "late rows")),
    Case("too many bad rows", parquet(changed(amount=(list(range(11)), -1.0))), "blocked",
         "max_quarantine_share", None, "quarantine_share", says=(f"11 of {N} rows (5.5%)", "nothing is quarantined")),
    Case("empty file (no rows)", parquet(good_rows().iloc[:0]), "blocked",
         "expect_table_row_count_to_be_between", None, "row_count", says=("0 rows, below validation.min_rows=100",)),
    Case("empty CSV (header only)", csv(good_rows().iloc[:0]), "blocked",
         "expect_table_row_count_to_be_between", None, "row_count", says=("0 rows",)),
    Case("too many rows", parquet(good_rows()), "blocked", "expect_table_row_count_to_be_between", None, "row_count",
         says=("above validation.max_rows=150 in datasets/transactions.yaml",),
         contract=dataclasses.replace(CONTRACT, max_rows=150)),
    Case("zero-byte file", raw(b"", NAME), "blocked", "readable_file", None, "readable_file",
         says=("empty (0 bytes)",)),
    Case("truncated parquet", truncated(), "blocked", "readable_file", None, "readable_file",
         says=("cannot be read as parquet", "truncated")),
    Case("CSV with a wrong delimiter", csv(good_rows(), sep=";"), "blocked", "readable_file", None,
         "readable_file", says=(";-delimited", "comma-separated")),
    Case("CSV in UTF-16", csv(good_rows(), encoding="utf-16"), "blocked", "readable_file", None,
         "readable_file", says=("UTF-16", "re-export it as UTF-8")),
    Case("CSV with latin-1 bytes", latin1_csv(), "blocked", "readable_file", None, "readable_file",
         says=("not valid UTF-8", "0xe9")),
    Case("leaked label column", parquet(good_rows().assign(fraud_label=lambda d: d["is_fraud"])), "blocked",
         "leaked_label", "fraud_label", "leaked_label", says=("label `is_fraud`", "Drop `fraud_label`")),
    Case("label column, no model reads the dataset", parquet(good_rows().assign(fraud_label=lambda d: d["is_fraud"])),
         "blocked", "expect_table_columns_to_match_set", "fraud_label", "schema", says=("not in the contract",),
         readers=()),
    Case("too many nulls in a nullable column", parquet(changed(channel=(list(range(21)), None))), "blocked",
         "expect_column_values_to_not_be_null", "channel", "null_share",
         says=(f"null in 21 of {N} rows (10.5%)", "columns.channel.max_null_share=0.1"),
         contract=dataclasses.replace(CONTRACT, columns=tuple(
             dataclasses.replace(c, nullable=True, max_null_share=0.1) if c.name == "channel" else c
             for c in CONTRACT.columns))),
    Case("batch landed twice", same_bytes_as_last_week(), "blocked", "duplicate_batch", None, "duplicate_batch",
         says=("same bytes", "transactions_2026-02-23.parquet", "already accepted")),
    Case("rows accepted last week, sent again", last_weeks_rows_again([3, 8]), "accepted", "unique_across_batches",
         ROW_ID, "unique_across_batches", quarantined=2,
         says=("lw00003", "lw00008", "2 accepted for the interval starting 2026-02-23",
               "transactions_2026-02-23.parquet", "drop them", "re-land")),
    Case("last week's rows with new timestamps", last_weeks_rows_again(), "blocked", "max_quarantine_share", None,
         "quarantine_share", says=(f"{N} of {N} rows (100.0%)", "unique_across_batches(transaction_id)")),
    Case("amounts in cents", after_last_week(good_rows().assign(amount=lambda d: d["amount"] * 50)), "accepted",
         "expect_column_mean_to_be_between", "amount", "distribution", says=("2026-02-23", "max_ratio=3")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus(tmp_path: Path, case: Case) -> None:
    folder = tmp_path / "landing"
    folder.mkdir()
    batch = case.land(folder)
    result = validate_batch(batch, case.contract, START, END, tmp_path / "validated", tmp_path / "quarantine",
                            tmp_path / "reports", readers=case.readers)

    assert result.verdict == case.verdict, result.summary
    found = [f for f in result.failures if (f.rule, f.column, f.check) == (case.rule, case.column, case.check)]
    assert found, [(f.rule, f.column, f.check) for f in result.failures]
    f = found[0]
    assert batch.name in f.message and case.rule in f.message
    if case.column is not None:
        assert f"`{case.column}`" in f.message
    for words in case.says:
        assert words in f.message, f.message
    expected_severity = {"accepted": ("row", "warn"), "blocked": ("batch",)}[case.verdict]
    assert f.severity in expected_severity
    assert_accounting(result, case)


def assert_accounting(result: ValidationResult, case: Case) -> None:
    assert result.rows_quarantined == case.quarantined
    if result.verdict == "accepted":
        assert result.rows_clean + result.rows_quarantined == result.rows_landed == N
        assert len(pd.read_parquet(result.clean_path)) == result.rows_clean
        if case.quarantined:
            q = pd.read_parquet(result.quarantine_path)
            assert len(q) == case.quarantined and q["_quarantine_reasons"].str.len().gt(0).all()
        else:
            assert result.quarantine_path is None
    else:
        assert result.rows_clean == 0 and result.clean_path is None and result.quarantine_path is None
        assert not (Path(result.report_path).parent.parent / "validated" / f"{KEY}.parquet").exists()
        assert not (Path(result.report_path).parent.parent / "quarantine" / f"{KEY}.parquet").exists()
    # the verdict, the rule and the message are in the report on disk as well
    assert Path(result.report_path).read_text().count(case.rule) >= 1
