"""Data-validation gate of the `ingest_validate__<model>` stage, built on Great Expectations 1.x.

One landed batch file goes in; these come out, keyed by the interval start (`<key>`):

- `validated_dir/<key>.parquet`: the clean rows, contract columns only, contract dtypes, the
  timestamps as UTC (only when the batch is accepted; a stale one is removed when blocked);
- `quarantine_dir/<key>.parquet`: the rows that broke a row rule, as landed, plus
  `_quarantine_reasons` ("; "-joined `rule(column)` labels); removed when no row is bad;
- `reports_dir/<key>.json`: the `ValidationResult` as a dict, always written;
- `reports_dir/profiles/<key>.json`: the profile of an accepted batch's clean rows (the
  reference of the distribution check for the batches after it); removed when blocked;
- `reports_dir/accepted_batches.json`: sha256 of the file accepted for each interval (the
  duplicate-batch registry);
- with `docs_dir`: a GX Data Docs site, `docs_dir/site/index.html`, one validation page per
  (interval, file content); `ValidationResult.data_docs_path` is the page of this run (None when
  the file could not be read: GX had nothing to validate; the report says why). The page shows
  observed values and samples for the expectations that failed and pass/fail for the row rules
  that passed (they ran BOOLEAN_ONLY, see below).

Locations. The landed file and the three output folders are locations of pipelines/storage.py: local
paths or `s3://` URIs (the Data Docs site is always a local folder). Every output is written whole
(locally: a temporary file renamed over the target; on S3: one PUT), so a rerun overwrites it atomically
and the same input gives the same files (the Data Docs pages carry GX's own load time). The landed
file is only ever read. The registry and the profiles are read-modify-written under a lock: an
exclusive file lock in a local reports folder (two runs of one model may validate different intervals
at once). An S3 reports folder has no lock across hosts: there a single writer per model is guaranteed
by the DAG (`ingest_validate__<model>` runs with max_active_runs=1, see flywheel/dagkit.py), and runs on
the same host (e.g. `flywheel validate` next to a worker) still take a local lock keyed by the URI.

Rules. Each failure is a `RuleFailure` with the GX expectation type as `rule` (or one of
Flywheel's own rules, `readable_file`, `duplicate_batch`, `leaked_label`, `max_quarantine_share`),
a short `check` name, a severity and a message naming the file, the column, the rule, a sample of
offending values, their count and what to do next.

1. Batch rules (severity "batch": the batch is blocked, nothing is published):
   - `readable_file`: the file exists, is not empty, parses as parquet or CSV (UTF-8, commas);
   - `duplicate_batch`: the same bytes were accepted for another interval (an old file re-sent);
     the same bytes for the *same* interval are a rerun and give the same result again;
   - the columns match the contract exactly (`expect_table_columns_to_match_set`; a missing column
     with a similar extra one is reported as a rename), and no extra column carries the label
     (`leaked_label`, see `_leak_reason`);
   - each column has a compatible type (`expect_column_type_to_be` for strings,
     `expect_column_values_to_be_in_type_list` for numbers, `expect_column_values_to_be_of_type`
     for timestamps);
   - the row count lies in [validation.min_rows, validation.max_rows]
     (`expect_table_row_count_to_be_between`);
   - a non-nullable column that is null in every row (check `all_null`);
   - more than validation.max_quarantine_share of the rows broke row rules (`max_quarantine_share`);
   - distribution, when validation.distribution.severity is `block`.
2. Row rules (severity "row": the offending rows are quarantined, the rest proceeds), on the
   columns that passed 1: non-null, unique (the contract's `unique` and its `row_id`), allowed
   values, numeric min/max, the label's rules (a binary label is 0/1 and never null), and the event
   timestamp: not in the future of the batch (`< interval end`, check `not_in_future`) and not
   before the interval start (check `in_interval`).
3. Distribution (severity "warn" by default, or "batch"): per `validation.distribution.columns`, the
   mean (and p05/p50/p95 of float columns) of the clean rows lies within a factor `max_ratio` of
   the same statistic over the profiles of the last `reference_batches` batches accepted before
   this interval (`expect_column_mean_to_be_between`, `expect_column_quantile_values_to_be_between`).
   Without an accepted batch before this one there is no reference and the check is skipped (said
   in the result: `reference_batches` is empty). The champion's training window would be the other
   candidate reference; it lives in MLflow, which this gate must not depend on, and the accepted
   batches are what the next champion trains on.

How GX runs here (for speed: see bench/validation.py). Strings are read as pyarrow-backed
`string` columns and numbers as numpy dtypes, so GX's pandas metrics stay vectorised. The row
rules run twice at most: once with result_format BOOLEAN_ONLY over the whole suite (no lists are
built: the clean case stops here), then with COMPLETE only for the expectations that failed, on
the columns they need; the offending rows come from GX's `unexpected_index_list` (positions: the
frame keeps a RangeIndex). GX fingerprints every in-memory dataframe it is given (a pandas hash of
every cell, twice per validation); the batch is identified by the file's sha256 instead, so the
fingerprint is switched off (`HASH_THRESHOLD`).

Duplicated row ids: every row whose id occurs more than once is quarantined, the first copy
included. That is what `expect_column_values_to_be_unique` reports, and nothing downstream can tell
which copy is the right one; the producer must resend the batch with one row per id.

Type compatibility: string <- any pandas string dtype (parquet strings, dictionary-encoded ones
included); int <- any (nullable) integer dtype, or a float column whose values are all whole numbers
(what pandas writes for an int column with a null); float <- any (nullable) float or integer dtype;
timestamp <- any datetime dtype. Naive timestamps are read as UTC and aware ones converted to UTC.
CSV has no types, so the contract's string columns are read as strings and its timestamp columns
parsed as ISO 8601 when they parse (if not, the type rule blocks the batch and shows the values).

Nothing lost: for an accepted batch, the rows of the written clean and quarantine files (counted
back from their parquet metadata) must add up to the landed rows, else the clean file is removed
and the run fails. When a batch is blocked, `rows_clean` is 0 and nothing is published; `rows_quarantined` still
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
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import ColumnRule, ModelSpec
    from pipelines.storage import Location

logger = logging.getLogger(__name__)

REASONS = "_quarantine_reasons"
SAMPLE_SIZE = 5
PARTIAL = 20  # partial_unexpected_count asked from GX
REGISTRY = "accepted_batches.json"
PROFILES = "profiles"
QUANTILES = (0.05, 0.5, 0.95)
# names that say "label" whatever the model: an extra column called like this is a leaked label
LEAK_WORDS = {"label", "labels", "target", "y", "outcome", "truth", "groundtruth"}
_GENERIC_WORDS = {"is", "has", "was", "flag", "id", "the", "of", "value", "amount"}

# GX type names accepted for each numeric contract type (pandas dtypes; object columns are checked
# value by value against the Python types).
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


@dataclass(frozen=True)
class RuleFailure:
    rule: str  # GX expectation type, or readable_file / duplicate_batch / leaked_label / max_quarantine_share
    column: str | None
    severity: str  # "batch" (blocks the batch), "row" (rows quarantined) or "warn" (recorded only)
    count: int  # offending rows (0 for batch rules where not applicable)
    sample: list[Any]  # up to 5 offending values (JSON-able)
    message: str  # for people: file, column, rule, values and what to do next
    check: str = ""  # Flywheel's short name: schema, type, row_count, not_null, all_null, unique, ...


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
    batch_sha256: str | None = None  # of the landed file (None when it could not be read)
    data_docs_path: str | None = None  # this run's GX Data Docs validation page
    reference_batches: tuple[str, ...] = ()  # interval keys whose profiles were the distribution reference

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (lists, not tuples: XCom and the REST API keep the shape)."""
        d = dataclasses.asdict(self)
        d["failures"] = [dataclasses.asdict(f) for f in self.failures]
        d["reference_batches"] = list(self.reference_batches)
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
        warnings = [f for f in self.failures if f.severity == "warn"]
        if blocking:
            parts.append("Nothing was published. Blocking problems: " + " | ".join(f.message for f in blocking))
        if row_rules:
            parts.append(
                "Row rules broken: "
                + ", ".join(f"{_label(f.rule, f.column, f.check)} x{f.count}" for f in row_rules)
                + "."
            )
        if warnings:
            parts.append("Warnings: " + " | ".join(f.message for f in warnings))
        if self.clean_path:
            parts.append(f"Clean rows: {self.clean_path}.")
        if self.quarantine_path:
            parts.append(f"Quarantined rows: {self.quarantine_path}.")
        parts.append(f"Full report: {self.report_path}.")
        if self.data_docs_path:
            parts.append(f"Data Docs: {self.data_docs_path}.")
        return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# entry point


def validate_batch(
    batch_file: Location,
    spec: ModelSpec,
    interval_start: datetime,
    interval_end: datetime,
    validated_dir: Location,
    quarantine_dir: Location,
    reports_dir: Location,
    docs_dir: Path | None = None,
) -> ValidationResult:
    """Validate one landed batch against `spec.dataset` and the model's validation settings.

    `batch_file` and the three folders are local paths or URIs (pipelines/storage.py); `docs_dir` is local.
    """
    import numpy as np

    from pipelines.layout import interval_key

    batch_file = os.fspath(batch_file)
    reports_dir = os.fspath(reports_dir)
    start, end = _as_utc(interval_start), _as_utc(interval_end)
    key = interval_key(start)
    clean_file = storage.join(validated_dir, f"{key}.parquet")
    quarantine_file = storage.join(quarantine_dir, f"{key}.parquet")
    report_file = storage.join(reports_dir, f"{key}.json")
    where = _show(batch_file)
    contract_file = _show(spec.dataset.path)

    digest = _sha256(batch_file) if storage.is_file(batch_file) else None
    df, read_problem = _read_batch(batch_file, spec)
    # an old file sent again explains everything else that is wrong with it: said first
    failures: list[RuleFailure] = _duplicate_failures(reports_dir, key, digest, where) if digest else []
    gx_parts: list[Any] = []  # GX results, for the Data Docs page
    n = 0
    bad_rows: Any = np.zeros(0, dtype=np.int64)
    reasons: Any = np.zeros(0, dtype=object)
    references: list[dict[str, Any]] = []
    gx_batch: _GXBatch | None = None
    if read_problem is not None:
        failures.append(RuleFailure("readable_file", None, "batch", 0, [], read_problem, "readable_file"))
    else:
        assert df is not None
        n = len(df)
        gx_batch = _GXBatch()
        batch_failures, ok_columns, batch_results = _check_batch_rules(gx_batch, df, spec, where, contract_file)
        failures += batch_failures
        gx_parts += batch_results
        row_failures, bad_rows, reasons, row_results = _check_row_rules(
            gx_batch, df, spec, ok_columns, start, end, where, contract_file, _show(quarantine_file)
        )
        failures += row_failures
        gx_parts += row_results
        share = len(bad_rows) / n if n else 0.0
        if n and share > spec.max_quarantine_share:
            failures.append(_share_failure(df, spec, bad_rows, row_failures, share, where, _show(quarantine_file)))
        if spec.distribution.severity != "off":
            references = _reference_profiles(reports_dir, key, spec)
            cols = [c for c in spec.distribution.columns if c in ok_columns]
            if references and cols and n > len(bad_rows):
                dist_failures, dist_results = _check_distribution(
                    gx_batch, _without(df[cols], bad_rows), spec, references, where
                )
                failures += dist_failures
                gx_parts += dist_results

    blocked = any(f.severity == "batch" for f in failures)
    rows_quarantined = len(bad_rows)
    rows_clean = 0 if blocked else n - rows_quarantined

    if blocked:
        _remove(clean_file)
        clean_path = None
    else:
        assert df is not None
        assert rows_clean + rows_quarantined == n, (rows_clean, rows_quarantined, n)
        clean = _without(df, bad_rows)
        _write_parquet(_clean_table(clean, spec), clean_file)
        clean_path = clean_file

    if rows_quarantined:
        assert df is not None
        _write_parquet(_quarantine_table(df, bad_rows, reasons), quarantine_file)
        quarantine_path: str | None = quarantine_file
    else:
        _remove(quarantine_file)
        quarantine_path = None
    if not blocked:  # nothing lost: the files on disk hold every landed row, once
        on_disk = _count_rows(clean_file) + (_count_rows(quarantine_file) if rows_quarantined else 0)
        if on_disk != n:
            _remove(clean_file)
            raise RuntimeError(
                f"{where}: {n} rows landed but the clean and quarantine files hold {on_disk}; nothing is "
                "published (the validation run fails): rerun the task, and report this as a Flywheel bug."
            )

    with _locked(reports_dir):  # the registry and the profiles say what is accepted now
        if blocked:
            _update_registry(reports_dir, key, None)
            _remove(storage.join(reports_dir, PROFILES, f"{key}.json"))
        else:
            assert df is not None and digest is not None
            _update_registry(
                reports_dir,
                key,
                {
                    "sha256": digest,
                    "file": storage.name(batch_file),
                    "rows_landed": n,
                    "rows_clean": rows_clean,
                    "rows_quarantined": rows_quarantined,
                },
            )
            _write_text(
                json.dumps(_profile(clean, spec, key), indent=2, sort_keys=True) + "\n",
                storage.join(reports_dir, PROFILES, f"{key}.json"),
            )

    docs_path = None
    if docs_dir is not None and gx_parts and gx_batch is not None:
        try:
            docs_path = _build_data_docs(
                Path(docs_dir), spec, key, start, end, batch_file, digest, gx_parts, blocked, gx_batch
            )
        except Exception:  # noqa: BLE001 - the docs are a view of the gate, never a reason to fail it
            logger.exception("could not build the Data Docs page for %s", where)

    result = ValidationResult(
        model=spec.name,
        batch_file=batch_file,
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        verdict="blocked" if blocked else "accepted",
        rows_landed=n,
        rows_clean=rows_clean,
        rows_quarantined=rows_quarantined,
        clean_path=clean_path,
        quarantine_path=quarantine_path,
        report_path=report_file,
        failures=tuple(failures),
        batch_sha256=digest,
        data_docs_path=docs_path,
        reference_batches=tuple(p["key"] for p in references),
    )
    _write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n", report_file)
    for f in failures:
        logger.warning("%s", f.message)
    logger.log(logging.WARNING if blocked else logging.INFO, "%s", result.summary)
    return result


# ----------------------------------------------------------------------------------------------
# reading


def _read_batch(path: str, spec: ModelSpec) -> tuple[pd.DataFrame | None, str | None]:
    """The landed frame (arrow strings, numpy numbers, timestamps in UTC), or a message saying why not."""
    import pandas as pd

    where = _show(path)
    if not storage.is_file(path):
        return None, (
            f"{where}: file not found (rule readable_file); check that the producer "
            "landed the batch for this interval, then rerun the task."
        )
    suffix = storage.suffix(path).lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        return None, (
            f"{where}: unsupported file type `{storage.suffix(path)}` (rule readable_file); "
            "land the batch as .parquet (or .csv)."
        )
    if storage.size(path) == 0:
        return None, (
            f"{where}: the file is empty (0 bytes) (rule readable_file); the producer "
            "probably crashed while writing it: re-land the batch, then rerun the task."
        )
    contract = spec.dataset
    try:
        df = _read_csv(path, spec) if suffix == ".csv" else _read_parquet(path, spec)
    except _Unreadable as exc:
        return None, f"{where}: {exc} (rule readable_file); re-land the batch, then rerun the task."
    except Exception as exc:  # noqa: BLE001 - any reader error means "cannot read this file"
        return None, (
            f"{where}: cannot be read as {suffix.lstrip('.')} "
            f"({type(exc).__name__}: {exc}) (rule readable_file); the file is truncated or not "
            f"{suffix.lstrip('.')}: re-land a valid file, then rerun the task."
        )
    df = df.reset_index(drop=True)
    if suffix == ".csv" and len(df.columns) == 1:
        header = str(df.columns[0])
        delimiter = next((d for d in (";", "\t", "|") if d in header), None)
        if delimiter is not None:
            shown = {"\t": "tab"}.get(delimiter, delimiter)
            return None, (
                f"{where}: the CSV header is one column `{header[:80]}`: the file looks {shown}-delimited "
                f"(rule readable_file); write it comma-separated (the contract {_show(contract.path)} "
                "expects one column per field), re-land it, then rerun the task."
            )
    for col in contract.columns:
        if col.name not in df.columns:
            continue
        s = df[col.name]
        if col.type == "int" and pd.api.types.is_float_dtype(s.dtype):
            # pandas writes an int column holding a null as float; whole numbers read back as
            # int so that the null is quarantined as a null instead of blocking the batch
            values = s.dropna()
            if bool((values == values.round()).all()) and bool(values.abs().lt(2**53).all()):
                df[col.name] = s.astype("Int64") if s.isna().any() else s.astype("int64")
            continue
        if col.type in ("int", "float") and isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            # nullable numbers: numpy where possible (GX's range metric is vectorised on numpy only)
            if col.type == "float" and pd.api.types.is_float_dtype(s.dtype):
                df[col.name] = s.astype("float64")
            elif pd.api.types.is_integer_dtype(s.dtype) and not s.isna().any():
                df[col.name] = s.astype("int64")
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


class _Unreadable(ValueError):
    """The file cannot be read, for a reason that is said better than by the reader's exception."""


def _arrow_type(contract_type: str) -> Any:
    import pyarrow as pa

    return {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "timestamp": pa.timestamp("ns", tz="UTC")}[
        contract_type
    ]


def _read_parquet(path: str, spec: ModelSpec) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    table = storage.read_table(path)
    types = {c.name: c.type for c in spec.dataset.columns}
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):  # a pandas categorical: its values
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
        elif pa.types.is_null(field.type) and field.name in types:  # all-null: typed as the contract says
            table = table.set_column(i, field.name, table.column(i).cast(_arrow_type(types[field.name])))
    arrow_strings = pd.StringDtype("pyarrow")
    mapping = {pa.string(): arrow_strings, pa.large_string(): arrow_strings}
    return table.to_pandas(types_mapper=mapping.get)


def _read_csv(path: str, spec: ModelSpec) -> pd.DataFrame:
    with storage.local_copy(path) as local:  # pandas' own reader on a local file: the same errors everywhere
        return _read_local_csv(local, spec)


def _read_local_csv(path: Path, spec: ModelSpec) -> pd.DataFrame:
    import pandas as pd

    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise _Unreadable(
            "the CSV is UTF-16 encoded (byte-order mark); the contract expects UTF-8: re-export it as UTF-8"
        )
    strings = {c.name: pd.StringDtype("pyarrow") for c in spec.dataset.columns if c.type == "string"}
    try:
        return pd.read_csv(path, dtype=strings, encoding="utf-8", encoding_errors="strict")  # type: ignore[arg-type]
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise _Unreadable(
            f"the CSV is not valid UTF-8 (byte 0x{bad.hex()} at offset {exc.start}; latin-1 or another "
            "encoding?): re-export it as UTF-8"
        ) from None


# ----------------------------------------------------------------------------------------------
# GX plumbing


class _GXBatch:
    """An ephemeral GX context with one whole-dataframe batch definition."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # GX fingerprints in-memory frames below HASH_THRESHOLD bytes (a hash of every cell, on
        # every get_batch): ~0.5 s per 1M rows and call. The batch is identified by the file's sha256.
        pandas_engine.HASH_THRESHOLD = 0  # type: ignore[attr-defined]
        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self.context.data_sources.add_pandas("landed").add_dataframe_asset("batch")
        self.definition = asset.add_batch_definition_whole_dataframe("whole")
        self.meta: dict[str, Any] = {}

    def run(self, df: pd.DataFrame, name: str, expectations: list[Any], result_format: dict[str, Any]) -> list[Any]:
        if not expectations:
            return []
        suite = self.gx.ExpectationSuite(name=name, expectations=expectations)
        batch = self.definition.get_batch(batch_parameters={"dataframe": df})
        validation = batch.validate(suite, result_format=result_format)
        self.meta = dict(validation.meta or {})
        return list(validation.results)


def _check_of(r: Any) -> str:
    return str((r.expectation_config.meta or {}).get("check", ""))


def _label(rule: str, column: str | None, check: str = "") -> str:
    """The quarantine reason of a row rule: `rule(column)`, qualified where one rule checks two things."""
    return f"{rule}({column}, {check})" if check in ("not_in_future", "in_interval") else f"{rule}({column})"


def _unevaluated(
    rule: str, column: str | None, error: str, where: str, what: str, contract_file: str, check: str
) -> RuleFailure:
    """A rule GX could not evaluate blocks the batch (fail closed), saying what to check."""
    return RuleFailure(
        rule,
        column,
        "batch",
        0,
        [],
        f"{where}: rule {rule} on column `{column}` could not be evaluated ({error}); the "
        f"batch is blocked until it can: check the {what} against {contract_file}.",
        check,
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
) -> tuple[list[RuleFailure], set[str], list[Any]]:
    """Schema, leaked labels, types and row count. Returns the failures, the columns fit for row rules
    and the GX results."""
    E = gx_batch.gx.expectations
    contract = spec.dataset
    expected = contract.column_names
    label = spec.label.column
    extra = [c for c in df.columns if c not in expected]
    exps: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=expected, exact_match=True, meta={"check": "schema"}),
        E.ExpectTableRowCountToBeBetween(min_value=spec.min_rows, max_value=spec.max_rows, meta={"check": "row_count"}),
    ]
    if spec.label.kind == "column" and label in df.columns:
        # leak probe: an extra column whose values equal the label's (success here = a leak)
        probe = {"check": "leak_probe"}
        exps += [E.ExpectColumnPairValuesToBeEqual(column_A=c, column_B=label, mostly=0.99, meta=probe) for c in extra]
    for col in contract.columns:
        if col.name not in df.columns:
            continue
        if col.type == "timestamp":
            # _read_batch brought every datetime dtype to UTC; pandas' tz-aware dtype is Timestamp
            exps.append(E.ExpectColumnValuesToBeOfType(column=col.name, type_="Timestamp", meta={"check": "type"}))
        elif col.type == "string":
            # any pandas string dtype ("string" matches both the python and the pyarrow storage)
            exps.append(E.ExpectColumnTypeToBe(column=col.name, type_="string", meta={"check": "type"}))
        else:
            types = {"int": _INT_TYPES, "float": _FLOAT_TYPES}[col.type]
            exps.append(E.ExpectColumnValuesToBeInTypeList(column=col.name, type_list=types, meta={"check": "type"}))
    results = gx_batch.run(df, "batch_rules", exps, {"result_format": "SUMMARY"})

    failures: list[RuleFailure] = []
    ok_columns = {c for c in expected if c in df.columns}
    copies = {r.expectation_config.kwargs["column_A"]: r for r in results if _check_of(r) == "leak_probe"}
    for r in results:
        rule, column = _rule_of(r)
        check = _check_of(r)
        error = _raised(r)
        if check == "leak_probe":
            continue
        if error is not None:
            failures.append(_unevaluated(rule, column, error, where, "file", contract_file, check))
            ok_columns.discard(column or "")
            continue
        if r.success:
            continue
        if check == "schema":
            failures += _schema_failures(r.result, df, spec, copies, where, contract_file)
        elif check == "row_count":
            rows = r.result.get("observed_value")
            if spec.max_rows is not None and isinstance(rows, int) and rows > spec.max_rows:
                bound, fix = (
                    f"above validation.max_rows={spec.max_rows}",
                    (
                        "check that the producer did not append another batch or repeat rows, and re-land "
                        "it, or raise max_rows if batches this big are expected"
                    ),
                )
            else:
                bound, fix = (
                    f"below validation.min_rows={spec.min_rows}",
                    (
                        "check that the producer wrote the whole batch and re-land it, or lower min_rows "
                        "if small batches are expected"
                    ),
                )
            failures.append(
                RuleFailure(
                    rule,
                    None,
                    "batch",
                    0,
                    [rows],
                    f"{where}: {rows} rows, {bound} in {_show(spec.path)} (rule {rule}); {fix}.",
                    check,
                )
            )
        else:
            assert column is not None
            ok_columns.discard(column)
            failures.append(_type_failure(r, df, contract.column(column), where, contract_file))
    kept = [r for r in results if _check_of(r) != "leak_probe"]  # the probe's "success" would read as good news
    return failures, ok_columns, kept


def _schema_failures(
    result: dict[str, Any], df: pd.DataFrame, spec: ModelSpec, copies: dict[str, Any], where: str, contract_file: str
) -> list[RuleFailure]:
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
        failures.append(RuleFailure(rule, name, "batch", 0, sample, message, "schema"))
    for name in extra:
        if name in matched:
            continue
        leak = _leak_reason(name, df, spec, copies.get(name))
        if leak is not None:
            failures.append(
                RuleFailure(
                    "leaked_label",
                    name,
                    "batch",
                    int(df[name].notna().sum()),
                    _sample(df[name].head(50).tolist()),
                    f"{where}: column `{name}` is not in the contract {contract_file} and {leak} (rule leaked_label): "
                    f"a label must never arrive as a feature column. Drop `{name}` upstream and re-land the file; "
                    f"the model's label comes only from {_label_source(spec)}.",
                    "leaked_label",
                )
            )
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
                "schema",
            )
        )
    return failures


def _label_source(spec: ModelSpec) -> str:
    if spec.label.kind == "column":
        return f"the contract column `{spec.label.column}` (known {spec.label.delay_days} day(s) after the event)"
    return (
        f"Flywheel, as the sum of `{spec.label.column}` over the next {spec.label.horizon_days} day(s) of later batches"
    )


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}


def _leak_reason(name: str, df: pd.DataFrame, spec: ModelSpec, probe: Any) -> str | None:
    """Why an extra column looks like the model's label, or None.

    By content (label kind `column`): its values equal the label column's in >= 99% of the rows
    (GX `expect_column_pair_values_to_be_equal` with mostly=0.99 succeeded). By name: it is called
    like a label (`label`, `target`, `y`, `outcome`, ...), or contains the label column's own words
    (`fraud` for `is_fraud`); for a computed label (kind `future_sum`) also `future`/`next` or the
    model's name (`spend_next_7d` for spend).
    """
    label = spec.label.column
    if probe is not None and probe.success and not _raised(probe):
        equal = 100 - float(probe.result.get("unexpected_percent") or 0)
        return f"its values equal the label `{label}` in {equal:.0f}% of rows"
    words = _words(name)
    hints = set(LEAK_WORDS)
    if spec.label.kind == "column":
        hints |= _words(label) - _GENERIC_WORDS
    else:
        hints |= {"future", "next"} | (_words(spec.name) - _GENERIC_WORDS)
    hit = sorted(words & hints)
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    if spec.label.kind == "column" and re.sub(r"[^a-z0-9]", "", label.lower()) in squashed:
        hit = hit or [label]
    if hit:
        return f"its name looks like the label of model {spec.name} (`{'`, `'.join(hit)}`)"
    return None


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
        "type",
    )


# ----------------------------------------------------------------------------------------------
# row rules


def _row_expectations(E: Any, spec: ModelSpec, ok_columns: set[str], start: datetime, end: datetime) -> list[Any]:
    contract = spec.dataset
    label = spec.label.column
    exps: list[Any] = []
    for col in contract.columns:
        if col.name not in ok_columns:
            continue
        is_label = spec.task == "binary" and spec.label.kind == "column" and col.name == label
        if not col.nullable or is_label:
            exps.append(E.ExpectColumnValuesToNotBeNull(column=col.name, meta={"check": "not_null"}))
        if col.unique or col.name == contract.row_id:
            exps.append(E.ExpectColumnValuesToBeUnique(column=col.name, meta={"check": "unique"}))
        allowed = list(col.allowed) if col.allowed is not None else None
        if is_label:  # label rule: a binary label is 0 or 1 (and whatever the contract narrows it to)
            allowed = [v for v in (allowed if allowed is not None else [0, 1]) if v in (0, 1)]
        if allowed is not None:
            exps.append(
                E.ExpectColumnValuesToBeInSet(
                    column=col.name, value_set=allowed, meta={"check": "label" if is_label else "allowed"}
                )
            )
        if col.type in ("int", "float") and (col.min is not None or col.max is not None):
            exps.append(
                E.ExpectColumnValuesToBeBetween(
                    column=col.name, min_value=col.min, max_value=col.max, meta={"check": "range"}
                )
            )
    ts = spec.event_timestamp
    if ts in ok_columns:
        exps.append(
            E.ExpectColumnValuesToBeBetween(
                column=ts,
                max_value=end,
                strict_max=True,
                meta={"check": "not_in_future"},
                notes=f"Flywheel: no `{ts}` at or after the interval end (the batch's 'now').",
            )
        )
        exps.append(
            E.ExpectColumnValuesToBeBetween(
                column=ts,
                min_value=start,
                meta={"check": "in_interval"},
                notes=f"Flywheel: no `{ts}` before the interval start.",
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
) -> tuple[list[RuleFailure], Any, Any, list[Any]]:
    """Row failures, the sorted positions of the bad rows, their reasons (aligned), and the GX results."""
    import numpy as np

    n = len(df)
    contract = spec.dataset
    failures: list[RuleFailure] = []
    for name, what in ((spec.event_timestamp, "event_timestamp"), (spec.label.column, "label.column")):
        if name not in contract.column_names:
            failures.append(
                RuleFailure(
                    "expect_table_columns_to_match_set",
                    name,
                    "batch",
                    0,
                    [],
                    f"{_show(spec.path)}: {what} `{name}` is not a column of {contract_file}; fix the model spec "
                    "(batches cannot be checked without it).",
                    "spec",
                )
            )
    exps = _row_expectations(gx_batch.gx.expectations, spec, ok_columns, start, end)
    columns = [c for c in contract.column_names if c in ok_columns]
    frame = df if list(df.columns) == columns else df[columns]
    # pass 1: is anything wrong at all? No value or index lists are built.
    first = gx_batch.run(frame, "row_rules", exps, {"result_format": "BOOLEAN_ONLY"})
    broken = [r for r in first if not r.success and _raised(r) is None]
    results = [r for r in first if r.success or _raised(r) is not None]
    for r in first:
        error = _raised(r)
        if error is not None:
            rule, column = _rule_of(r)
            failures.append(_unevaluated(rule, column, error, where, "column", contract_file, _check_of(r)))
    if broken:
        # pass 2: only what failed, on the columns it needs, with every offending row position
        needed = sorted({r.expectation_config.kwargs["column"] for r in broken})
        again = [r.expectation_config.to_domain_obj() for r in broken]
        results += gx_batch.run(
            frame[needed],
            "row_rules_failed",
            again,
            {"result_format": "COMPLETE", "partial_unexpected_count": PARTIAL, "return_unexpected_index_query": False},
        )

    hits: list[tuple[str, Any]] = []  # (reason label, row positions)
    for r in results:
        if r.success or _raised(r) is not None:
            continue
        rule, column = _rule_of(r)
        check = _check_of(r)
        index_list = r.result.get("unexpected_index_list") or []
        rows = np.asarray(index_list, dtype=np.int64)
        hits.append((_label(rule, column, check), rows))
        failures.append(_row_failure(r, df, spec, rows, start, end, where, contract_file, quarantine_file))
        if check == "not_null" and n and len(rows) == n:
            failures.append(
                RuleFailure(
                    rule,
                    column,
                    "batch",
                    n,
                    [],
                    f"{where}: column `{column}` is null in all {n} rows (rule {rule}, check all_null): the producer "
                    "stopped filling it. Fix the export and re-land the file.",
                    "all_null",
                )
            )
        # keep the page small: the full lists were only needed for the row positions above
        r.result = {k: v for k, v in r.result.items() if k not in ("unexpected_list", "unexpected_index_list")}

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
    return failures, bad_rows, reasons, results


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
    check = _check_of(r)
    assert column is not None
    row_id = spec.dataset.row_id
    kw = r.expectation_config.kwargs
    count = len(rows)
    if rule == "expect_column_values_to_not_be_null":
        if column != row_id and row_id in df.columns:
            sample = _sample(df[row_id].iloc[rows[:50]].tolist())
            shown = f"null in rows with {row_id} {sample}"
        else:
            sample = [int(x) for x in rows[:SAMPLE_SIZE]]
            shown = f"null at row positions {sample} (0-based)"
        what = "must not be null" + (" (it is the model's label)" if check == "label" else "")
    else:
        sample = _sample(r.result.get("partial_unexpected_list") or [])
        shown = f"offending values {sample}"
        if rule == "expect_column_values_to_be_unique":
            what = f"must be unique (every copy of a repeated {column} is quarantined)"
        elif rule == "expect_column_values_to_be_in_set":
            what = f"must be one of {list(kw.get('value_set') or [])}"
            if check == "label":
                what += f" (it is the label of the {spec.task} model {spec.name})"
        elif check == "not_in_future":
            what = f"must not be in the future of the batch: before the interval end {end.isoformat()}"
        elif check == "in_interval":
            what = f"must fall in the data interval [{start.isoformat()}, {end.isoformat()})"
        elif rule == "expect_column_values_to_be_between":
            what = f"must be between {kw.get('min_value')} and {kw.get('max_value')}"
        else:
            what = "broke the rule"
    fix = (
        f"fix them upstream and re-land the file to recover them, or change the rule in "
        f"{contract_file} if these values are legitimate"
    )
    if check == "not_in_future":
        fix = (
            "check the producer's clock and time zone (UTC expected); rows that belong to a later interval "
            "go in that interval's batch"
        )
    elif check == "in_interval":
        fix = "land late rows in the batch of their own interval"
    message = (
        f"{where}: column `{column}` {what} (rule {rule}, check {check}); {count} row(s), {shown}. "
        f"They were quarantined to {quarantine_file}: {fix}."
    )
    return RuleFailure(rule, column, "row", count, sample, message, check)


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
    causes = "; ".join(f"{_label(f.rule, f.column, f.check)} x{f.count}" for f in top)
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
        "quarantine_share",
    )


# ----------------------------------------------------------------------------------------------
# duplicate batches


def _registry(reports_dir: str) -> dict[str, dict[str, Any]]:
    path = storage.join(reports_dir, REGISTRY)
    if not storage.is_file(path):
        return {}
    try:
        data = json.loads(storage.read_text(path))
    except ValueError:  # a damaged registry must not block every batch: it is rebuilt as batches pass
        logger.warning("ignoring unreadable duplicate-batch registry %s", path)
        return {}
    return data if isinstance(data, dict) else {}


def _update_registry(reports_dir: str, key: str, entry: dict[str, Any] | None) -> None:
    registry = _registry(reports_dir)
    if entry is None:
        if registry.pop(key, None) is None:
            return
    else:
        if registry.get(key) == entry:
            return
        registry[key] = entry
    _write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n", storage.join(reports_dir, REGISTRY))


def _duplicate_failures(reports_dir: str, key: str, digest: str, where: str) -> list[RuleFailure]:
    """The same bytes accepted for another interval: an old file sent again (block).

    The same bytes for this same interval are a rerun (a retry, a cleared task, `flywheel validate`
    run twice): the gate is idempotent and gives the same result again.
    """
    out = []
    for other, entry in sorted(_registry(reports_dir).items()):
        if other != key and entry.get("sha256") == digest:
            out.append(
                RuleFailure(
                    "duplicate_batch",
                    None,
                    "batch",
                    int(entry.get("rows_landed") or 0),
                    [other],
                    f"{where}: the file has the same bytes (sha256 {digest[:12]}) as `{entry.get('file')}`, already "
                    f"accepted for the interval starting {other} (rule duplicate_batch): the producer sent an old "
                    "batch again. Land this interval's own data, then rerun the task.",
                    "duplicate_batch",
                )
            )
    return out


# ----------------------------------------------------------------------------------------------
# distribution against the accepted batches


def _profile(clean: pd.DataFrame, spec: ModelSpec, key: str) -> dict[str, Any]:
    """What the distribution check of the following batches compares with (clean rows only)."""
    columns: dict[str, Any] = {}
    for name in spec.distribution.columns:
        if name not in clean.columns:
            continue
        s = clean[name].dropna().astype("float64")
        if not len(s):
            continue
        q = s.quantile(list(QUANTILES), interpolation="nearest").tolist()
        columns[name] = {
            "mean": float(s.mean()),
            "std": float(s.std(ddof=0)),
            **{_qname(p): float(v) for p, v in zip(QUANTILES, q, strict=True)},
        }
    return {"key": key, "rows": len(clean), "columns": columns}


def _qname(q: float) -> str:
    return f"p{round(q * 100):02d}"


def _reference_profiles(reports_dir: str, key: str, spec: ModelSpec) -> list[dict[str, Any]]:
    """Profiles of the last `reference_batches` accepted batches before this interval (oldest first)."""
    folder = storage.join(reports_dir, PROFILES)
    files = [f for f in storage.list_files(folder, ".json") if storage.stem(f) < key]
    profiles = []
    for f in files[-spec.distribution.reference_batches :]:
        try:
            profiles.append(json.loads(storage.read_text(f)))
        except ValueError:
            logger.warning("ignoring unreadable profile %s", f)
    return profiles


def _band(ref: float, std: float, ratio: float) -> tuple[float, float]:
    """Within a factor `ratio` of `ref`; around 0, +-(ratio - 1) reference standard deviations."""
    if ref > 0:
        return ref / ratio, ref * ratio
    if ref < 0:
        return ref * ratio, ref / ratio
    return -(ratio - 1) * std, (ratio - 1) * std


def _check_distribution(
    gx_batch: _GXBatch, clean: pd.DataFrame, spec: ModelSpec, references: list[dict[str, Any]], where: str
) -> tuple[list[RuleFailure], list[Any]]:
    """GX mean/quantile expectations with bounds from the reference profiles."""
    import numpy as np

    E = gx_batch.gx.expectations
    dist = spec.distribution
    types = {c.name: c.type for c in spec.dataset.columns}
    exps: list[Any] = []
    refs: dict[str, dict[str, float]] = {}
    for name in clean.columns:
        stats = [p["columns"][name] for p in references if name in p.get("columns", {})]
        if not stats:
            continue
        ref = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
        refs[name] = ref
        lo, hi = _band(ref["mean"], ref["std"], dist.max_ratio)
        exps.append(
            E.ExpectColumnMeanToBeBetween(column=name, min_value=lo, max_value=hi, meta={"check": "distribution"})
        )
        if types.get(name) == "float":
            ranges = [list(_band(ref[_qname(q)], ref["std"], dist.max_ratio)) for q in QUANTILES]
            exps.append(
                E.ExpectColumnQuantileValuesToBeBetween(
                    column=name,
                    quantile_ranges={"quantiles": list(QUANTILES), "value_ranges": ranges},
                    meta={"check": "distribution"},
                )
            )
    results = gx_batch.run(clean, "distribution", exps, {"result_format": "SUMMARY"})
    severity = "batch" if dist.severity == "block" else "warn"
    span = f"{references[0]['key']}..{references[-1]['key']}" if len(references) > 1 else references[0]["key"]
    failures = []
    for r in results:
        rule, column = _rule_of(r)
        assert column is not None
        error = _raised(r)
        if error is not None:
            failures.append(
                RuleFailure(
                    rule,
                    column,
                    severity,
                    0,
                    [],
                    (f"{where}: the distribution of `{column}` could not be checked ({error}) (rule {rule})."),
                    "distribution",
                )
            )
            continue
        if r.success:
            continue
        kw, observed, ref = r.expectation_config.kwargs, r.result.get("observed_value"), refs[column]
        if rule == "expect_column_mean_to_be_between":
            found = [
                f"mean {_num(observed)} (reference {_num(ref['mean'])}, allowed "
                f"{_num(kw['min_value'])}..{_num(kw['max_value'])})"
            ]
            sample = [_jsonable(observed)]
        else:
            values = (observed or {}).get("values") or []
            ranges = kw["quantile_ranges"]["value_ranges"]
            found = [
                f"{_qname(q)} {_num(v)} (reference {_num(ref[_qname(q)])}, allowed {_num(lo)}..{_num(hi)})"
                for q, v, (lo, hi) in zip(QUANTILES, values, ranges, strict=False)
                if not lo <= v <= hi
            ]
            sample = [_jsonable(v) for v in values]
        then = (
            "the batch is blocked (validation.distribution.severity: block)"
            if severity == "batch"
            else "the batch proceeds; this is recorded as a warning"
        )
        failures.append(
            RuleFailure(
                rule,
                column,
                severity,
                int(clean[column].notna().sum()),
                sample,
                (
                    f"{where}: column `{column}` is far from the {len(references)} batch(es) accepted before it "
                    f"({span}): "
                    f"{'; '.join(found)} (rule {rule}, check distribution, max_ratio={dist.max_ratio:g} in "
                    f"{_show(spec.path)}); {then}. If the producer changed units or the feed broke, fix it and re-land "
                    "the file; if the world really changed, the drift monitor will say so."
                ),
                "distribution",
            )
        )
    return failures, results


def _num(v: Any) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


# ----------------------------------------------------------------------------------------------
# Data Docs


def _build_data_docs(
    docs_dir: Path,
    spec: ModelSpec,
    key: str,
    start: datetime,
    end: datetime,
    batch_file: str,
    digest: str | None,
    parts: list[Any],
    blocked: bool,
    gx_batch: _GXBatch,
) -> str:
    """Store this run's GX results in a file-backed GX project and render its Data Docs page.

    The project lives in docs_dir/gx, the site in docs_dir/site (index.html lists every run).
    One page per (interval, file content): a rerun of the same bytes overwrites its page; a
    re-landed fix gets a page of its own next to the blocked one.
    """
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.util import convert_to_json_serializable

    suite_name = f"{spec.name}.{spec.dataset.name}"
    site_dir = docs_dir / "site"
    with _locked(docs_dir):
        fresh = not (docs_dir / "gx" / "great_expectations.yml").exists()
        context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
        if fresh or "flywheel" not in (context.config.data_docs_sites or {}):
            for name in list(context.config.data_docs_sites or {}):
                context.delete_data_docs_site(name)
            context.add_data_docs_site(
                "flywheel",
                {
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site_dir)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        for r in parts:  # numpy scalars in some results (quantile checks) break GX's own JSON store
            r.success = bool(r.success)
            r.result = convert_to_json_serializable(r.result)
        configs = [r.expectation_config.to_domain_obj() for r in parts]
        context.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=configs))
        evaluated = len(parts)
        successful = sum(1 for r in parts if r.success)
        run_id = RunIdentifier(run_name=key, run_time=start)
        batch_id = f"{storage.stem(batch_file)}-{(digest or 'unread')[:12]}"
        meta = {
            "great_expectations_version": gx.__version__,
            "run_id": run_id,
            "batch_spec": {
                "path": batch_file,
                "interval": f"[{start.isoformat()}, {end.isoformat()})",
                "model": spec.name,
                "verdict": "blocked" if blocked else "accepted",
            },
            "batch_markers": {
                "sha256": digest,
                **{
                    k: v
                    for k, v in (gx_batch.meta.get("batch_markers") or {}).items()
                    if k != "pandas_data_fingerprint"
                },
            },
            "active_batch_definition": gx_batch.meta.get("active_batch_definition") or {},
        }
        result = ExpectationSuiteValidationResult(
            success=not blocked,
            results=parts,
            suite_name=suite_name,
            statistics={
                "evaluated_expectations": evaluated,
                "successful_expectations": successful,
                "unsuccessful_expectations": evaluated - successful,
                "success_percent": 100.0 * successful / evaluated if evaluated else None,
            },
            meta=meta,
        )
        identifier = ValidationResultIdentifier(ExpectationSuiteIdentifier(suite_name), run_id, batch_id)
        context.validation_results_store.set(identifier, result)
        pages: list[Any] = [identifier, ExpectationSuiteIdentifier(suite_name)]  # this run's page + the suite's
        context.build_data_docs(site_names=["flywheel"], resource_identifiers=pages)
        urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name="flywheel")
    url = str((urls or [{}])[0].get("site_url") or "")
    return url.removeprefix("file://") or str(site_dir / "index.html")


# ----------------------------------------------------------------------------------------------
# writing


def _without(df: pd.DataFrame, rows: Any) -> pd.DataFrame:
    """`df` minus the rows at the given positions (the frame itself when there are none)."""
    import numpy as np

    if not len(rows):
        return df
    keep = np.ones(len(df), dtype=bool)
    keep[rows] = False
    return df.loc[keep]


def _clean_table(clean: pd.DataFrame, spec: ModelSpec) -> Any:
    import pyarrow as pa

    cols = spec.dataset.columns
    frame = clean[[c.name for c in cols]].reset_index(drop=True)
    pandas_type = {"int": "int64", "float": "float64"}  # no nulls in accepted non-nullable columns
    frame = frame.astype(
        {
            c.name: ("Int64" if c.nullable and c.type == "int" else pandas_type[c.type])
            for c in cols
            if c.type in pandas_type and str(frame[c.name].dtype) != pandas_type[c.type]
        }
    )
    schema = pa.schema([pa.field(c.name, _arrow_type(c.type), nullable=c.nullable) for c in cols])
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return table.replace_schema_metadata(None)  # readers get plain int64/float64/object dtypes


def _quarantine_table(df: pd.DataFrame, bad_rows: Any, reasons: Any) -> Any:
    import pyarrow as pa

    frame = df.iloc[bad_rows].reset_index(drop=True)
    frame[REASONS] = reasons
    frame[REASONS] = frame[REASONS].astype("string")
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def _write_parquet(table: Any, path: str) -> None:
    storage.write_parquet(table, path)


def _count_rows(path: str) -> int:
    return storage.parquet_rows(path)


def _write_text(text: str, path: str) -> None:
    storage.write_text(text, path)


def _remove(path: str) -> None:
    if storage.is_file(path):
        logger.info("removing stale %s", path)
        storage.delete(path)


@contextmanager
def _locked(folder: Location) -> Iterator[None]:
    """An exclusive lock on `folder` (two runs of one model may validate different intervals at once).

    A local folder holds its own `.lock`. A remote one (S3 has no locks) is locked on this host only,
    through a lock file in the temporary folder named after the URI: across hosts, the DAG's
    max_active_runs=1 per model is what keeps a single writer (see the module docstring).
    """
    import fcntl

    if storage.is_remote(folder):
        import hashlib
        import tempfile

        digest = hashlib.sha256(os.fspath(folder).encode()).hexdigest()[:16]
        lock_dir = Path(tempfile.gettempdir()) / "flywheel-locks"
        lock_file = lock_dir / f"{digest}.lock"
    else:
        lock_dir = storage.local_path(folder)
        lock_file = lock_dir / ".lock"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------
# small helpers


def _sha256(path: Location) -> str:
    return storage.sha256(path)


def _as_utc(ts: datetime) -> datetime:
    """A plain `datetime` in UTC (naive input is taken as UTC; pendulum is flattened)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    u = ts.astimezone(UTC)
    return datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=UTC)


def _show(path: Location) -> str:
    """A location for people: a URI as it is, a local path relative to the repository when inside it."""
    from pipelines.spec import REPO_ROOT

    if storage.is_remote(path):
        return os.fspath(path)
    try:
        return str(storage.local_path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return os.fspath(path)


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


def preserve_blocked(batch_file: Location, blocked_dir: Location, key: str) -> str:
    """Keep a byte-identical copy of a blocked batch, so re-landing a fixed file loses no evidence.

    Copies go to blocked_dir/<key>/<sha256[:12]>-<file name> (the location, as a string); the same bytes
    blocked twice are kept once. The batch and the folder may be on different stores (e.g. a local file
    checked with `flywheel validate`, kept in an S3 data root).
    """
    digest = _sha256(batch_file)[:12]
    out = storage.join(blocked_dir, key, f"{digest}-{storage.name(batch_file)}")
    if not storage.is_file(out):
        storage.copy(batch_file, out)
    return out
