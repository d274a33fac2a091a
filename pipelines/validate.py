"""Data-validation gate of the `ingest_validate__<model>` stage, built on Great Expectations 1.x.

One landed batch file goes in; three files keyed by the interval start come out:

- `validated_dir/<key>.parquet`: the clean rows, contract columns only, contract dtypes, the
  timestamps as UTC (only when the batch is accepted; a stale one is removed when blocked);
- `quarantine_dir/<key>.parquet`: the rows that broke a row rule, as landed, plus
  `_quarantine_reasons` ("; "-joined `rule(column)` labels); removed when no row is bad;
- `reports_dir/<key>.json`: the `ValidationResult` as a dict, always written.

Every output is written to a temporary file and `os.replace`d, so a rerun overwrites it
atomically and the same input gives the same files. The landed file is only ever read.

Two GX suites run on the batch:

1. batch rules (severity "batch", block the whole batch): the columns match the contract exactly
   (`expect_table_columns_to_match_set`), each column has a compatible type
   (`expect_column_values_to_be_in_type_list` / `expect_column_values_to_be_of_type`), and the row
   count reaches `validation.min_rows` (`expect_table_row_count_to_be_between`);
2. row rules (severity "row", offending rows are quarantined), on the columns that passed 1:
   non-null, unique, allowed values, numeric min/max, and the event timestamp inside
   [interval_start, interval_end). They run with result_format COMPLETE and a synthetic positional
   column (`__row__`) as `unexpected_index_column_names`, which maps every unexpected value back
   to its row without trusting the real row id to be unique.

After the row rules, a quarantine share above `validation.max_quarantine_share` blocks the batch
(rule `max_quarantine_share`); an unreadable, missing or zero-byte file blocks it too (rule
`readable_file`). These two are the only rule names that are not GX expectation types.

Duplicated row ids: every row whose id occurs more than once is quarantined, the first copy
included. That is what `expect_column_values_to_be_unique` reports, and nothing downstream can tell
which copy is the right one; the producer must resend the batch with one row per id.

Type compatibility: string <- str/StringDtype; int <- any (nullable) integer dtype, or a float
column whose values are all whole numbers (what pandas writes for an int column with a null);
float <- any (nullable) float or integer dtype; timestamp <- any datetime dtype. Naive timestamps
are read as UTC and aware ones are converted to UTC before validation. CSV has no types, so for CSV files the
contract's string columns are read as strings and its timestamp columns parsed as ISO 8601 when
they parse (if not, the type rule blocks the batch and shows the values).

When a batch is blocked, `rows_clean` is 0 and nothing is published; `rows_quarantined` still
counts the rows that broke the row rules that could be evaluated, and they are written to the
quarantine file so people can see them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import ColumnRule, ModelSpec

logger = logging.getLogger(__name__)

ROW = "__row__"  # synthetic positional index handed to GX as unexpected_index_column_names
REASONS = "_quarantine_reasons"
SAMPLE_SIZE = 5

# GX type names accepted for each contract type (pandas dtypes and, for object columns, the
# Python types GX checks value by value).
_INT_TYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "Int8Dtype",
    "Int16Dtype",
    "Int32Dtype",
    "Int64Dtype",
    "UInt8Dtype",
    "UInt16Dtype",
    "UInt32Dtype",
    "UInt64Dtype",
    "int",
]
_FLOAT_TYPES = ["float16", "float32", "float64", "Float32Dtype", "Float64Dtype", "float", *_INT_TYPES]
_STRING_TYPES = ["str", "StringDtype"]


@dataclass(frozen=True)
class RuleFailure:
    rule: str  # GX expectation type, or `readable_file` / `max_quarantine_share`
    column: str | None
    severity: str  # "batch" (blocks the batch) or "row" (rows quarantined)
    count: int  # offending rows (0 for batch rules where not applicable)
    sample: list[Any]  # up to 5 offending values (JSON-able)
    message: str  # for people: file, column, rule, values and what to do next


@dataclass(frozen=True)
class ValidationResult:
    model: str
    batch_file: str
    interval_start: str
    interval_end: str
    verdict: str  # "accepted" or "blocked"
    rows_landed: int
    rows_clean: int
    rows_quarantined: int
    clean_path: str | None
    quarantine_path: str | None
    report_path: str
    failures: tuple[RuleFailure, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (lists, not tuples: XCom and the REST API keep the shape)."""
        d = dataclasses.asdict(self)
        d["failures"] = [dataclasses.asdict(f) for f in self.failures]
        return d

    @property
    def summary(self) -> str:
        head = (
            f"Model {self.model}, batch {self.batch_file} for {self.interval_start} to "
            f"{self.interval_end}: {self.verdict.upper()}. {self.rows_landed} rows landed, "
            f"{self.rows_clean} clean, {self.rows_quarantined} quarantined."
        )
        parts = [head]
        blocking = [f for f in self.failures if f.severity == "batch"]
        row_rules = [f for f in self.failures if f.severity == "row"]
        if blocking:
            parts.append("Nothing was published. Blocking problems: " + " | ".join(f.message for f in blocking))
        if row_rules:
            parts.append("Row rules broken: " + ", ".join(f"{f.rule}({f.column}) x{f.count}" for f in row_rules) + ".")
        if self.clean_path:
            parts.append(f"Clean rows: {self.clean_path}.")
        if self.quarantine_path:
            parts.append(f"Quarantined rows: {self.quarantine_path}.")
        parts.append(f"Full report: {self.report_path}.")
        return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# entry point


def validate_batch(
    batch_file: Path,
    spec: ModelSpec,
    interval_start: datetime,
    interval_end: datetime,
    validated_dir: Path,
    quarantine_dir: Path,
    reports_dir: Path,
) -> ValidationResult:
    """Validate one landed batch against `spec.dataset` and the model's validation thresholds."""
    import numpy as np

    from pipelines.layout import interval_key

    batch_file = Path(batch_file)
    start, end = _as_utc(interval_start), _as_utc(interval_end)
    key = interval_key(start)
    clean_file = Path(validated_dir) / f"{key}.parquet"
    quarantine_file = Path(quarantine_dir) / f"{key}.parquet"
    report_file = Path(reports_dir) / f"{key}.json"
    where = _show(batch_file)
    contract_file = _show(spec.dataset.path)

    df, read_problem = _read_batch(batch_file, spec)
    failures: list[RuleFailure] = []
    n = 0
    bad_rows: Any = np.zeros(0, dtype=np.int64)
    reasons: Any = np.zeros(0, dtype=object)
    if read_problem is not None:
        failures.append(RuleFailure("readable_file", None, "batch", 0, [], read_problem))
    else:
        assert df is not None
        n = len(df)
        gx_batch = _GXBatch()
        batch_failures, ok_columns = _check_batch_rules(gx_batch, df, spec, where, contract_file)
        failures += batch_failures
        row_failures, bad_rows, reasons = _check_row_rules(
            gx_batch, df, spec, ok_columns, start, end, where, contract_file, _show(quarantine_file)
        )
        failures += row_failures
        share = len(bad_rows) / n if n else 0.0
        if n and share > spec.max_quarantine_share:
            failures.append(_share_failure(df, spec, bad_rows, row_failures, share, where, _show(quarantine_file)))

    blocked = any(f.severity == "batch" for f in failures)
    rows_quarantined = len(bad_rows)
    rows_clean = 0 if blocked else n - rows_quarantined

    if blocked:
        _remove(clean_file)
        clean_path = None
    else:
        assert df is not None
        assert rows_clean + rows_quarantined == n, (rows_clean, rows_quarantined, n)
        keep = np.ones(n, dtype=bool)
        keep[bad_rows] = False
        _write_parquet(_clean_table(df.loc[keep], spec), clean_file)
        clean_path = str(clean_file)

    if rows_quarantined:
        assert df is not None
        _write_parquet(_quarantine_table(df, bad_rows, reasons), quarantine_file)
        quarantine_path: str | None = str(quarantine_file)
    else:
        _remove(quarantine_file)
        quarantine_path = None

    result = ValidationResult(
        model=spec.name,
        batch_file=str(batch_file),
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        verdict="blocked" if blocked else "accepted",
        rows_landed=n,
        rows_clean=rows_clean,
        rows_quarantined=rows_quarantined,
        clean_path=clean_path,
        quarantine_path=quarantine_path,
        report_path=str(report_file),
        failures=tuple(failures),
    )
    _write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n", report_file)
    for f in failures:
        logger.warning("%s", f.message)
    logger.log(logging.WARNING if blocked else logging.INFO, "%s", result.summary)
    return result


# ----------------------------------------------------------------------------------------------
# reading


def _read_batch(path: Path, spec: ModelSpec) -> tuple[pd.DataFrame | None, str | None]:
    """The landed frame (nullable dtypes, timestamps in UTC), or a message saying why not."""
    import pandas as pd

    where = _show(path)
    if not path.is_file():
        return None, (
            f"{where}: file not found (rule readable_file); check that the producer "
            "landed the batch for this interval, then rerun the task."
        )
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        return None, (
            f"{where}: unsupported file type `{path.suffix}` (rule readable_file); "
            "land the batch as .parquet (or .csv)."
        )
    if path.stat().st_size == 0:
        return None, (
            f"{where}: the file is empty (0 bytes) (rule readable_file); the producer "
            "probably crashed while writing it: re-land the batch, then rerun the task."
        )
    contract = spec.dataset
    try:
        if suffix == ".csv":
            string_cols = {c.name: "string" for c in contract.columns if c.type == "string"}
            df = pd.read_csv(path, dtype=string_cols, dtype_backend="numpy_nullable")
        else:
            df = pd.read_parquet(path, dtype_backend="numpy_nullable")
    except Exception as exc:  # noqa: BLE001 - any reader error means "cannot read this file"
        return None, (
            f"{where}: cannot be read as {suffix.lstrip('.')} "
            f"({type(exc).__name__}: {exc}) (rule readable_file); re-land a valid file, "
            "then rerun the task."
        )
    df = df.reset_index(drop=True)
    for col in contract.columns:
        if col.name not in df.columns:
            continue
        s = df[col.name]
        if col.type == "int" and pd.api.types.is_float_dtype(s.dtype):
            # pandas writes an int column holding a null as float; whole numbers read back as
            # int so that the null is quarantined as a null instead of blocking the batch
            values = s.dropna()
            if bool((values == values.round()).all()) and bool(values.abs().lt(2**53).all()):
                df[col.name] = s.astype("Int64")
            continue
        if col.type != "timestamp":
            continue
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            df[col.name] = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        elif suffix == ".csv":
            try:
                df[col.name] = pd.to_datetime(s, utc=True, format="ISO8601")
            except (ValueError, TypeError):
                pass  # left as text: the type rule reports it with examples
    return df, None


# ----------------------------------------------------------------------------------------------
# GX plumbing


class _GXBatch:
    """An ephemeral GX context with one whole-dataframe batch definition."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("landed").add_dataframe_asset("batch")
        self.definition = asset.add_batch_definition_whole_dataframe("whole")

    def run(self, df: pd.DataFrame, name: str, expectations: list[Any], result_format: dict[str, Any]) -> list[Any]:
        if not expectations:
            return []
        suite = self.gx.ExpectationSuite(name=name, expectations=expectations)
        batch = self.definition.get_batch(batch_parameters={"dataframe": df})
        return list(batch.validate(suite, result_format=result_format).results)


def _unevaluated(rule: str, column: str | None, error: str, where: str, what: str, contract_file: str) -> RuleFailure:
    """A rule GX could not evaluate blocks the batch (fail closed), saying what to check."""
    return RuleFailure(
        rule,
        column,
        "batch",
        0,
        [],
        f"{where}: rule {rule} on column `{column}` could not be evaluated ({error}); the "
        f"batch is blocked until it can: check the {what} against {contract_file}.",
    )


def _rule_of(r: Any) -> tuple[str, str | None]:
    return r.expectation_config.type, r.expectation_config.kwargs.get("column")


def _raised(r: Any) -> str | None:
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    return None


# ----------------------------------------------------------------------------------------------
# batch rules


def _check_batch_rules(
    gx_batch: _GXBatch, df: pd.DataFrame, spec: ModelSpec, where: str, contract_file: str
) -> tuple[list[RuleFailure], set[str]]:
    """Schema, types and row count. Returns the failures and the columns fit for row rules."""
    E = gx_batch.gx.expectations
    contract = spec.dataset
    expected = contract.column_names
    exps: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=expected, exact_match=True),
        E.ExpectTableRowCountToBeBetween(min_value=spec.min_rows),
    ]
    for col in contract.columns:
        if col.name not in df.columns:
            continue
        if col.type == "timestamp":
            # _read_batch brought every datetime dtype to UTC; pandas' tz-aware dtype is Timestamp
            exps.append(E.ExpectColumnValuesToBeOfType(column=col.name, type_="Timestamp"))
        else:
            types = {"int": _INT_TYPES, "float": _FLOAT_TYPES, "string": _STRING_TYPES}[col.type]
            exps.append(E.ExpectColumnValuesToBeInTypeList(column=col.name, type_list=types))
    results = gx_batch.run(df, "batch_rules", exps, {"result_format": "SUMMARY"})

    failures: list[RuleFailure] = []
    ok_columns = {c for c in expected if c in df.columns}
    for r in results:
        rule, column = _rule_of(r)
        error = _raised(r)
        if error is not None:
            failures.append(_unevaluated(rule, column, error, where, "file", contract_file))
            ok_columns.discard(column or "")
            continue
        if r.success:
            continue
        if rule == "expect_table_columns_to_match_set":
            failures += _schema_failures(r.result, where, contract_file)
        elif rule == "expect_table_row_count_to_be_between":
            rows = r.result.get("observed_value")
            failures.append(
                RuleFailure(
                    rule,
                    None,
                    "batch",
                    0,
                    [rows],
                    (
                        f"{where}: {rows} rows, below validation.min_rows={spec.min_rows} in "
                        f"{_show(spec.path)} (rule {rule}); check that the producer wrote the whole batch "
                        "and re-land it, or lower min_rows if small batches are expected."
                    ),
                )
            )
        else:
            assert column is not None
            ok_columns.discard(column)
            failures.append(_type_failure(r, df, contract.column(column), where, contract_file))
    return failures, ok_columns


def _schema_failures(result: dict[str, Any], where: str, contract_file: str) -> list[RuleFailure]:
    rule = "expect_table_columns_to_match_set"
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    missing = sorted(mismatched.get("missing") or [])
    extra = sorted(mismatched.get("unexpected") or [])
    failures: list[RuleFailure] = []
    matched: set[str] = set()
    for name in missing:
        candidates = [e for e in extra if e not in matched]
        lower = {e.lower(): e for e in candidates}
        hint = lower.get(name.lower()) or next(iter(difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)), None)
        if hint is None:
            for e in candidates:  # abbreviations: `amt` for `amount`, `cust_id` for `customer_id`
                if _is_abbreviation(e, name):
                    hint = e
                    break
        if hint is not None:
            matched.add(hint)
            message = (
                f"{where}: column `{name}` missing; found `{hint}`: rename it upstream or map "
                f"it in the contract {contract_file} (rule {rule})."
            )
            sample: list[Any] = [hint]
        else:
            message = (
                f"{where}: column `{name}` missing; the contract {contract_file} requires it "
                f"(rule {rule}): add it upstream and re-land the file."
            )
            sample = []
        failures.append(RuleFailure(rule, name, "batch", 0, sample, message))
    for name in extra:
        if name in matched:
            continue
        failures.append(
            RuleFailure(
                rule,
                name,
                "batch",
                0,
                [name],
                (
                    f"{where}: column `{name}` is not in the contract {contract_file} (rule {rule}): drop "
                    "it upstream, or add it to the contract if models need it."
                ),
            )
        )
    return failures


def _is_abbreviation(short: str, long: str) -> bool:
    """`amt` ~ `amount`: same first letter and the letters of `short` appear in order in `long`."""
    s, lng = short.lower(), long.lower()
    if len(s) < 2 or s[0] != lng[0]:
        return False
    it = iter(lng)
    return all(ch in it for ch in s)


def _type_failure(r: Any, df: pd.DataFrame, col: ColumnRule, where: str, contract_file: str) -> RuleFailure:
    rule = r.expectation_config.type
    values = r.result.get("partial_unexpected_list")
    count = int(r.result.get("unexpected_count") or 0)
    if not values:  # judged on the dtype: show what the column holds
        values = df[col.name].dropna().head(50).tolist()
        count = int(df[col.name].notna().sum())
    sample = _sample(values)
    return RuleFailure(
        rule,
        col.name,
        "batch",
        count,
        sample,
        (
            f"{where}: column `{col.name}` has type {df[col.name].dtype} (e.g. {sample}); the contract "
            f"{contract_file} says {col.type} (rule {rule}): write it as {col.type} upstream and re-land "
            "the file, or change the type in the contract."
        ),
    )


# ----------------------------------------------------------------------------------------------
# row rules


def _row_expectations(E: Any, spec: ModelSpec, ok_columns: set[str], start: datetime, end: datetime) -> list[Any]:
    contract = spec.dataset
    exps: list[Any] = []
    for col in contract.columns:
        if col.name not in ok_columns:
            continue
        if not col.nullable:
            exps.append(E.ExpectColumnValuesToNotBeNull(column=col.name))
        if col.unique or col.name == contract.row_id:
            exps.append(E.ExpectColumnValuesToBeUnique(column=col.name))
        if col.allowed is not None:
            exps.append(E.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.allowed)))
        if col.type in ("int", "float") and (col.min is not None or col.max is not None):
            exps.append(E.ExpectColumnValuesToBeBetween(column=col.name, min_value=col.min, max_value=col.max))
    if spec.event_timestamp in ok_columns:
        exps.append(
            E.ExpectColumnValuesToBeBetween(
                column=spec.event_timestamp, min_value=start, max_value=end, strict_max=True
            )
        )
    return exps


def _check_row_rules(
    gx_batch: _GXBatch,
    df: pd.DataFrame,
    spec: ModelSpec,
    ok_columns: set[str],
    start: datetime,
    end: datetime,
    where: str,
    contract_file: str,
    quarantine_file: str,
) -> tuple[list[RuleFailure], Any, Any]:
    """Row failures, the sorted positions of the bad rows, and their reasons (aligned)."""
    import numpy as np

    n = len(df)
    contract = spec.dataset
    failures: list[RuleFailure] = []
    if spec.event_timestamp not in contract.column_names:
        failures.append(
            RuleFailure(
                "expect_column_values_to_be_between",
                spec.event_timestamp,
                "batch",
                0,
                [],
                (
                    f"{_show(spec.path)}: event_timestamp `{spec.event_timestamp}` is not a column of "
                    f"{contract_file}; fix the model spec (batches cannot be checked against the interval)."
                ),
            )
        )
    exps = _row_expectations(gx_batch.gx.expectations, spec, ok_columns, start, end)
    frame = df[[c for c in contract.column_names if c in ok_columns]].assign(**{ROW: np.arange(n, dtype=np.int64)})
    results = gx_batch.run(
        frame,
        "row_rules",
        exps,
        {
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [ROW],
            "return_unexpected_index_query": False,
            "partial_unexpected_count": 20,
        },
    )

    hits: list[tuple[str, Any]] = []  # (reason label, row positions)
    for r in results:
        rule, column = _rule_of(r)
        error = _raised(r)
        if error is not None:
            failures.append(_unevaluated(rule, column, error, where, "column", contract_file))
            continue
        if r.success:
            continue
        index_list = r.result.get("unexpected_index_list") or []
        rows = np.fromiter((d[ROW] for d in index_list), dtype=np.int64, count=len(index_list))
        hits.append((f"{rule}({column})", rows))
        failures.append(_row_failure(r, df, spec, rows, start, end, where, contract_file, quarantine_file))

    bad = np.zeros(n, dtype=bool)
    for _, rows in hits:
        bad[rows] = True
    bad_rows = np.flatnonzero(bad)
    slot = np.full(n, -1, dtype=np.int64)
    slot[bad_rows] = np.arange(len(bad_rows))
    reasons = np.full(len(bad_rows), "", dtype=object)
    for label, rows in hits:  # one vectorised concatenation per broken rule
        at = slot[rows]
        current = reasons[at]
        reasons[at] = np.where(current == "", label, current + f"; {label}")
    return failures, bad_rows, reasons


def _row_failure(
    r: Any,
    df: pd.DataFrame,
    spec: ModelSpec,
    rows: Any,
    start: datetime,
    end: datetime,
    where: str,
    contract_file: str,
    quarantine_file: str,
) -> RuleFailure:
    rule, column = _rule_of(r)
    assert column is not None
    row_id = spec.dataset.row_id
    kw = r.expectation_config.kwargs
    count = len(rows)
    if rule == "expect_column_values_to_not_be_null":
        if column != row_id:
            sample = _sample(df[row_id].iloc[rows[:50]].tolist())
            shown = f"null in rows with {row_id} {sample}"
        else:
            sample = [int(x) for x in rows[:SAMPLE_SIZE]]
            shown = f"null at row positions {sample} (0-based)"
        what = "must not be null"
    else:
        sample = _sample(r.result.get("partial_unexpected_list") or [])
        shown = f"offending values {sample}"
        if rule == "expect_column_values_to_be_unique":
            what = f"must be unique (every copy of a repeated {column} is quarantined)"
        elif rule == "expect_column_values_to_be_in_set":
            what = f"must be one of {list(kw.get('value_set') or [])}"
        elif column == spec.event_timestamp and rule == "expect_column_values_to_be_between":
            what = f"must fall in the data interval [{start.isoformat()}, {end.isoformat()})"
        elif rule == "expect_column_values_to_be_between":
            what = f"must be between {kw.get('min_value')} and {kw.get('max_value')}"
        else:
            what = "broke the rule"
    fix = (
        f"fix them upstream and re-land the file to recover them, or change the rule in "
        f"{contract_file} if these values are legitimate"
    )
    if column == spec.event_timestamp and rule == "expect_column_values_to_be_between":
        fix = "land late or early rows in the batch of their own interval"
    message = (
        f"{where}: column `{column}` {what} (rule {rule}); {count} row(s), {shown}. "
        f"They were quarantined to {quarantine_file}: {fix}."
    )
    return RuleFailure(rule, column, "row", count, sample, message)


def _share_failure(
    df: pd.DataFrame,
    spec: ModelSpec,
    bad_rows: Any,
    row_failures: list[RuleFailure],
    share: float,
    where: str,
    quarantine_file: str,
) -> RuleFailure:
    top = sorted((f for f in row_failures if f.severity == "row"), key=lambda f: -f.count)[:3]
    causes = "; ".join(f"{f.rule}({f.column}) x{f.count}" for f in top)
    sample = _sample(df[spec.dataset.row_id].iloc[bad_rows[:50]].tolist()) if spec.dataset.row_id in df.columns else []
    return RuleFailure(
        "max_quarantine_share",
        None,
        "batch",
        len(bad_rows),
        sample,
        (
            f"{where}: {len(bad_rows)} of {len(df)} rows ({share:.1%}) broke row rules, above "
            f"validation.max_quarantine_share={spec.max_quarantine_share:g} in {_show(spec.path)}; the "
            f"whole batch is blocked (main causes: {causes}). See {quarantine_file}; fix the producer "
            "and re-land the file, or raise the limit in the model spec if this is expected."
        ),
    )


# ----------------------------------------------------------------------------------------------
# writing


def _clean_table(clean: pd.DataFrame, spec: ModelSpec) -> Any:
    import pyarrow as pa

    arrow_type = {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "timestamp": pa.timestamp("ns", tz="UTC"),
    }
    pandas_type = {"string": "string", "int": "Int64", "float": "Float64"}
    cols = spec.dataset.columns
    frame = clean[[c.name for c in cols]].reset_index(drop=True)
    frame = frame.astype({c.name: pandas_type[c.type] for c in cols if c.type in pandas_type})
    schema = pa.schema([pa.field(c.name, arrow_type[c.type], nullable=c.nullable) for c in cols])
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return table.replace_schema_metadata(None)  # readers get plain int64/float64/object dtypes


def _quarantine_table(df: pd.DataFrame, bad_rows: Any, reasons: Any) -> Any:
    import pyarrow as pa

    frame = df.iloc[bad_rows].reset_index(drop=True)
    frame[REASONS] = reasons
    frame[REASONS] = frame[REASONS].astype("string")
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.exists():
        logger.info("removing stale %s", path)
        path.unlink()


# ----------------------------------------------------------------------------------------------
# small helpers


def _as_utc(ts: datetime) -> datetime:
    """A plain `datetime` in UTC (naive input is taken as UTC; pendulum is flattened)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    u = ts.astimezone(UTC)
    return datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=UTC)


def _show(path: Path) -> str:
    """A path for people: relative to the repository when inside it."""
    from pipelines.spec import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _jsonable(v: Any) -> Any:
    if v is None or type(v) in (bool, int, str):
        return v
    if isinstance(v, str):  # numpy.str_
        return str(v)
    if isinstance(v, float):  # also numpy.float64
        f = float(v)
        return None if math.isnan(f) else (f if math.isfinite(f) else str(f))
    if isinstance(v, (datetime, date)):
        return None if str(v) == "NaT" else v.isoformat()
    item = getattr(v, "item", None)  # numpy scalars
    if callable(item) and type(v).__module__ == "numpy":
        return _jsonable(item())
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def _sample(values: list[Any]) -> list[Any]:
    """Up to SAMPLE_SIZE distinct JSON-able values, in order of appearance."""
    out: list[Any] = []
    for v in values:
        j = _jsonable(v)
        if j not in out:
            out.append(j)
        if len(out) == SAMPLE_SIZE:
            break
    return out


def preserve_blocked(batch_file: Path, blocked_dir: Path, key: str) -> Path:
    """Keep a byte-identical copy of a blocked batch, so re-landing a fixed file loses no evidence.

    Copies go to blocked_dir/<key>/<sha256[:12]>-<file name>; the same bytes blocked twice are kept once.
    """
    import hashlib
    import shutil

    digest = hashlib.sha256(Path(batch_file).read_bytes()).hexdigest()[:12]
    out = blocked_dir / key / f"{digest}-{Path(batch_file).name}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        shutil.copy2(batch_file, tmp)
        os.replace(tmp, out)
    return out
