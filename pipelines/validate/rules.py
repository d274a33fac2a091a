"""The contract's batch and row rules as GX expectations, and what their results mean for the batch.

Batch rules block the whole batch; row rules quarantine the offending rows (see the package
docstring for the list). Both run in a `GXBatch`; the failures are worded by messages.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines.validate import messages
from pipelines.validate.gx import check_of, raised, rule_of
from pipelines.validate.results import RuleFailure, rule_label

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import DatasetContract, ModelSpec
    from pipelines.validate.gx import GXBatch

PARTIAL = 20  # partial_unexpected_count asked from GX
ANY_VALUE = 1e-9  # `mostly` that one non-null value in any batch satisfies (GX needs mostly > 0)
# names that say "label" whatever the model: an extra column called like this is a leaked label
# (when a model reads the dataset at all)
LEAK_WORDS = {"label", "labels", "target", "y", "outcome", "truth", "groundtruth"}
_GENERIC_WORDS = {"is", "has", "was", "flag", "id", "the", "of", "value"}

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


# ----------------------------------------------------------------------------------------------
# batch rules


def check_batch_rules(
    gx_batch: GXBatch,
    df: pd.DataFrame,
    contract: DatasetContract,
    readers: Sequence[ModelSpec],
    where: str,
    contract_file: str,
) -> tuple[list[RuleFailure], set[str], list[Any]]:
    """Schema, leaked labels, types, row count and null shares. Returns the failures, the columns fit for
    row rules and the GX results."""
    E = gx_batch.expectations
    expected = contract.column_names
    extra = [c for c in df.columns if c not in expected]
    exps: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=expected, exact_match=True, meta={"check": "schema"}),
        E.ExpectTableRowCountToBeBetween(
            min_value=contract.min_rows, max_value=contract.max_rows, meta={"check": "row_count"}
        ),
    ]
    # leak probes: an extra column whose values equal a reader's label column (success here = a leak)
    probe = {"check": "leak_probe"}
    exps += [
        E.ExpectColumnPairValuesToBeEqual(column_A=c, column_B=label, mostly=0.99, meta=probe)
        for label in _label_columns(readers, df)
        for c in extra
    ]
    for col in contract.columns:
        if col.name not in df.columns:
            continue
        if col.type == "timestamp":
            # read_batch brought every datetime dtype to UTC; pandas' tz-aware dtype is Timestamp
            exps.append(E.ExpectColumnValuesToBeOfType(column=col.name, type_="Timestamp", meta={"check": "type"}))
        elif col.type == "string":
            # any pandas string dtype ("string" matches both the python and the pyarrow storage)
            exps.append(E.ExpectColumnTypeToBe(column=col.name, type_="string", meta={"check": "type"}))
        else:
            types = {"int": _INT_TYPES, "float": _FLOAT_TYPES}[col.type]
            exps.append(E.ExpectColumnValuesToBeInTypeList(column=col.name, type_list=types, meta={"check": "type"}))
        if col.nullable and col.max_null_share is not None:
            # non-null in at least (1 - share) of the rows: more nulls than the share blocks the batch
            exps.append(
                E.ExpectColumnValuesToNotBeNull(
                    column=col.name, mostly=1.0 - col.max_null_share, meta={"check": "null_share"}
                )
            )
        elif col.nullable:
            # nullable, no declared share: some value must be present. A column null in EVERY row is a broken
            # export (a dropped or renamed field upstream), not "nullable" data.
            exps.append(
                E.ExpectColumnValuesToNotBeNull(column=col.name, mostly=ANY_VALUE, meta={"check": "all_null"})
            )
    results = gx_batch.run(df, "batch_rules", exps, {"result_format": "SUMMARY"})

    failures: list[RuleFailure] = []
    if contract.timestamp not in expected:  # the loader rejects this; a contract built in code might not
        failures.append(messages.timestamp_not_a_column(contract, contract_file))
    ok_columns = {c for c in expected if c in df.columns}
    probes = {
        (r.expectation_config.kwargs["column_A"], r.expectation_config.kwargs["column_B"]): r
        for r in results
        if check_of(r) == "leak_probe"
    }
    for r in results:
        rule, column = rule_of(r)
        check = check_of(r)
        error = raised(r)
        if check == "leak_probe":
            continue
        if error is not None:
            failures.append(messages.unevaluated(rule, column, error, where, "file", contract_file, check))
            ok_columns.discard(column or "")
            continue
        if r.success:
            continue
        if check == "schema":
            failures += _schema_failures(r.result, df, readers, probes, where, contract_file)
        elif check == "row_count":
            failures.append(messages.row_count(rule, r.result.get("observed_value"), contract, where, contract_file))
        elif check == "all_null":
            assert column is not None
            failures.append(messages.all_null_nullable(rule, contract.column(column), len(df), where, contract_file))
        elif check == "null_share":
            assert column is not None
            nulls = int(r.result.get("unexpected_count") or 0)
            failures.append(
                messages.null_share(rule, df, contract.column(column), contract.row_id, nulls, where, contract_file)
            )
        else:
            assert column is not None
            ok_columns.discard(column)
            failures.append(messages.wrong_type(r, df, contract.column(column), where, contract_file))
    kept = [r for r in results if check_of(r) != "leak_probe"]  # the probe's "success" would read as good news
    return failures, ok_columns, kept


def _schema_failures(
    result: dict[str, Any],
    df: pd.DataFrame,
    readers: Sequence[ModelSpec],
    probes: dict[tuple[str, str], Any],
    where: str,
    contract_file: str,
) -> list[RuleFailure]:
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    missing = sorted(mismatched.get("missing") or [])
    extra = sorted(mismatched.get("unexpected") or [])
    failures: list[RuleFailure] = []
    matched: set[str] = set()
    for name in missing:
        hint = messages.rename_hint(name, [e for e in extra if e not in matched])
        if hint is not None:
            matched.add(hint)
        failures.append(messages.missing_column(name, hint, where, contract_file))
    for name in extra:
        if name in matched:
            continue
        leak = leak_reason(name, readers, probes)
        if leak is not None:
            reason, models = leak
            failures.append(messages.leaked_label(name, df, reason, models, where, contract_file))
        else:
            failures.append(messages.extra_column(name, where, contract_file))
    return failures


def _label_columns(readers: Sequence[ModelSpec], df: pd.DataFrame) -> list[str]:
    """The landed label columns of the readers (kind `column`), once each."""
    return sorted({r.label.column for r in readers if r.label.kind == "column" and r.label.column in df.columns})


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}


def leak_reason(
    name: str, readers: Sequence[ModelSpec], probes: dict[tuple[str, str], Any]
) -> tuple[str, list[ModelSpec]] | None:
    """Why an extra column looks like the label of a model reading the dataset, and those models; or None.

    With no readers there is no label to leak (the column is just not in the contract). By content
    (label kind `column`): its values equal a reader's label column in >= 99% of the rows (GX
    `expect_column_pair_values_to_be_equal` with mostly=0.99 succeeded). By name: it contains a
    reader's label column's own words (`churned` for `is_churned`), or for a computed label (kind
    `future_sum`) `future`/`next` or the model's name (`spend_next_7d` for spend); or it is called
    like any label (`label`, `target`, `y`, `outcome`, ...).
    """
    for model in readers:
        label = model.label.column
        probe = probes.get((name, label)) if model.label.kind == "column" else None
        if probe is not None and probe.success and not raised(probe):
            equal = 100 - float(probe.result.get("unexpected_percent") or 0)
            models = [m for m in readers if m.label.kind == "column" and m.label.column == label]
            whose = f"model{'s' if len(models) > 1 else ''} {', '.join(m.name for m in models)}"
            return f"its values equal the label `{label}` in {equal:.0f}% of rows (the label of {whose})", models
    words = _words(name)
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    for model in readers:
        label = model.label.column
        if model.label.kind == "column":
            hints = _words(label) - _GENERIC_WORDS
        else:
            hints = {"future", "next"} | (_words(model.name) - _GENERIC_WORDS)
        hit = sorted(words & hints)
        if model.label.kind == "column" and re.sub(r"[^a-z0-9]", "", label.lower()) in squashed:
            hit = hit or [label]
        if hit:
            return f"its name looks like the label of model {model.name} (`{'`, `'.join(hit)}`)", [model]
    generic = sorted(words & LEAK_WORDS)
    if readers and generic:
        return f"its name says it is a label (`{'`, `'.join(generic)}`)", list(readers)
    return None


# ----------------------------------------------------------------------------------------------
# row rules


def row_expectations(
    E: Any, contract: DatasetContract, ok_columns: set[str], start: datetime, end: datetime
) -> list[Any]:
    exps: list[Any] = []
    for col in contract.columns:
        if col.name not in ok_columns:
            continue
        if not col.nullable:
            exps.append(E.ExpectColumnValuesToNotBeNull(column=col.name, meta={"check": "not_null"}))
        if col.unique or col.name == contract.row_id:
            exps.append(E.ExpectColumnValuesToBeUnique(column=col.name, meta={"check": "unique"}))
        if col.allowed is not None:
            exps.append(
                E.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.allowed), meta={"check": "allowed"})
            )
        if col.type in ("int", "float") and (col.min is not None or col.max is not None):
            exps.append(
                E.ExpectColumnValuesToBeBetween(
                    column=col.name, min_value=col.min, max_value=col.max, meta={"check": "range"}
                )
            )
    ts = contract.timestamp
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


def check_row_rules(
    gx_batch: GXBatch,
    df: pd.DataFrame,
    contract: DatasetContract,
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
    failures: list[RuleFailure] = []
    exps = row_expectations(gx_batch.expectations, contract, ok_columns, start, end)
    columns = [c for c in contract.column_names if c in ok_columns]
    frame = df if list(df.columns) == columns else df[columns]
    # pass 1: is anything wrong at all? No value or index lists are built.
    first = gx_batch.run(frame, "row_rules", exps, {"result_format": "BOOLEAN_ONLY"})
    broken = [r for r in first if not r.success and raised(r) is None]
    results = [r for r in first if r.success or raised(r) is not None]
    for r in first:
        error = raised(r)
        if error is not None:
            rule, column = rule_of(r)
            failures.append(messages.unevaluated(rule, column, error, where, "column", contract_file, check_of(r)))
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
        if r.success or raised(r) is not None:
            continue
        rule, column = rule_of(r)
        check = check_of(r)
        rows = np.asarray(r.result.get("unexpected_index_list") or [], dtype=np.int64)
        hits.append((rule_label(rule, column, check), rows))
        failures.append(
            messages.broken_rows(r, df, contract.row_id, rows, start, end, where, contract_file, quarantine_file)
        )
        if check == "not_null" and n and len(rows) == n:
            failures.append(messages.all_null(rule, column, n, where))
        # keep the page small: the full lists were only needed for the row positions above
        r.result = {k: v for k, v in r.result.items() if k not in ("unexpected_list", "unexpected_index_list")}

    bad_rows, reasons = merge_reasons(n, hits)
    return failures, bad_rows, reasons, results


def merge_reasons(n: int, hits: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
    """The sorted positions of the rows hit by any rule among `n`, and their reasons (aligned, "; "-joined in
    the order of `hits`). Each hit is (reason, row positions): one reason for all its rows, or an array of
    reasons aligned with them."""
    import numpy as np

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
        reasons[at] = np.where(current == "", label, current + "; " + label)
    return bad_rows, reasons
