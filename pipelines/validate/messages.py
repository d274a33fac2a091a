"""The gate's words for people: each `RuleFailure` names the file, the column, the rule, a sample of the
offending values, their count, the contract key behind the limit and what to do next.

The rules (rules.py, distribution.py, registry.py) decide; these functions only say it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.util import json_safe
from pipelines.validate.results import UNIQUE_ACROSS_BATCHES, RuleFailure, rule_label

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import ColumnRule, DatasetContract, ModelSpec
    from pipelines.storage import Location

SAMPLE_SIZE = 5


# ----------------------------------------------------------------------------------------------
# small pieces


def show(path: Location) -> str:
    """A location for people: a URI as it is, a local path relative to the repository when inside it."""
    from pipelines.spec import REPO_ROOT

    if storage.is_remote(path):
        return os.fspath(path)
    try:
        return str(storage.local_path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return os.fspath(path)


def sample(values: list[Any]) -> list[Any]:
    """Up to SAMPLE_SIZE distinct JSON-able values, in order of appearance (inf stays visible as "inf")."""
    out: list[Any] = []
    for v in values:
        j = json_safe(v, nonfinite_as_text=True)
        if j not in out:
            out.append(j)
        if len(out) == SAMPLE_SIZE:
            break
    return out


def num(v: Any) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def _ids_of(df: pd.DataFrame, row_id: str, rows: Any) -> list[Any]:
    return sample(df[row_id].iloc[rows[:50]].tolist()) if row_id in df.columns else []


def quarantined_to(quarantine_file: str) -> str:
    """What a row failure says about its rows: where they went (an accepted batch)."""
    return f"They were quarantined to {quarantine_file}"


NOT_QUARANTINED = (
    "The batch is blocked, so they were not quarantined (the landed file is kept whole and nothing of it is published)"
)


def not_quarantined(failure: RuleFailure, quarantine_file: str) -> RuleFailure:
    """A row failure of a blocked batch: its rows were not quarantined (only accepted batches quarantine
    rows), so the message must not say they were."""
    return dataclasses.replace(
        failure, message=failure.message.replace(quarantined_to(quarantine_file), NOT_QUARANTINED)
    )


# ----------------------------------------------------------------------------------------------
# batch rules


def unevaluated(
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


def unreadable(message: str) -> RuleFailure:
    return RuleFailure("readable_file", None, "batch", 0, [], message, "readable_file")


def timestamp_not_a_column(contract: DatasetContract, contract_file: str) -> RuleFailure:
    return RuleFailure(
        "expect_table_columns_to_match_set",
        contract.timestamp or None,
        "batch",
        0,
        [],
        f"{contract_file}: timestamp `{contract.timestamp}` is not a column of the contract "
        f"({', '.join(contract.column_names)}); fix `timestamp:` in {contract_file} (batches cannot be placed "
        "in their interval without it).",
        "contract",
    )


def row_count(rule: str, rows: Any, contract: DatasetContract, where: str, contract_file: str) -> RuleFailure:
    if contract.max_rows is not None and isinstance(rows, int) and rows > contract.max_rows:
        bound = f"above validation.max_rows={contract.max_rows}"
        fix = (
            "check that the producer did not append another batch or repeat rows, and re-land it, or raise "
            "validation.max_rows if batches this big are expected"
        )
    else:
        bound = f"below validation.min_rows={contract.min_rows}"
        fix = (
            "check that the producer wrote the whole batch and re-land it, or lower validation.min_rows "
            "if small batches are expected"
        )
    return RuleFailure(
        rule,
        None,
        "batch",
        0,
        [rows],
        f"{where}: {rows} rows, {bound} in {contract_file} (rule {rule}); {fix}.",
        "row_count",
    )


def missing_column(name: str, hint: str | None, where: str, contract_file: str) -> RuleFailure:
    rule = "expect_table_columns_to_match_set"
    if hint is not None:
        return RuleFailure(
            rule,
            name,
            "batch",
            0,
            [hint],
            f"{where}: column `{name}` missing; found `{hint}`: rename it upstream or map it in the "
            f"contract {contract_file} (rule {rule}).",
            "schema",
        )
    return RuleFailure(
        rule,
        name,
        "batch",
        0,
        [],
        f"{where}: column `{name}` missing; the contract {contract_file} requires it (rule {rule}): add "
        "it upstream and re-land the file.",
        "schema",
    )


def extra_column(name: str, where: str, contract_file: str) -> RuleFailure:
    rule = "expect_table_columns_to_match_set"
    return RuleFailure(
        rule,
        name,
        "batch",
        0,
        [name],
        f"{where}: column `{name}` is not in the contract {contract_file} (rule {rule}): drop it "
        "upstream, or add it to the contract if models need it.",
        "schema",
    )


def rename_hint(name: str, candidates: list[str]) -> str | None:
    """The extra column that is probably `name` renamed: same name in another case, a close spelling, or an
    abbreviation (`qty` for `quantity`, `acct_id` for `account_id`)."""
    lower = {e.lower(): e for e in candidates}
    hint = lower.get(name.lower()) or next(iter(difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)), None)
    if hint is None:
        hint = next((e for e in candidates if _is_abbreviation(e, name)), None)
    return hint


def _is_abbreviation(short: str, long: str) -> bool:
    """`qty` ~ `quantity`: same first letter and the letters of `short` appear in order in `long`."""
    s, lng = short.lower(), long.lower()
    if len(s) < 2 or s[0] != lng[0]:
        return False
    it = iter(lng)
    return all(ch in it for ch in s)


def leaked_label(
    name: str, df: pd.DataFrame, reason: str, models: list[ModelSpec], where: str, contract_file: str
) -> RuleFailure:
    sources = "; ".join(f"model {m.name}'s label comes only from {label_source(m)}" for m in models)
    return RuleFailure(
        "leaked_label",
        name,
        "batch",
        int(df[name].notna().sum()),
        sample(df[name].head(50).tolist()),
        f"{where}: column `{name}` is not in the contract {contract_file} and {reason} (rule leaked_label): "
        f"a label must never arrive as a feature column. Drop `{name}` upstream and re-land the file; {sources}.",
        "leaked_label",
    )


def label_source(model: ModelSpec) -> str:
    if model.label.kind == "column":
        return f"the contract column `{model.label.column}` (known {model.label.delay_days} day(s) after the event)"
    return (
        f"Flywheel, as the sum of `{model.label.column}` over the next {model.label.horizon_days} day(s) of "
        "later batches"
    )


def wrong_type(r: Any, df: pd.DataFrame, col: ColumnRule, where: str, contract_file: str) -> RuleFailure:
    rule = r.expectation_config.type
    values = r.result.get("partial_unexpected_list")
    count = int(r.result.get("unexpected_count") or 0)
    if not values:  # judged on the dtype: show what the column holds
        values = df[col.name].dropna().head(50).tolist()
        count = int(df[col.name].notna().sum())
    shown = sample(values)
    return RuleFailure(
        rule,
        col.name,
        "batch",
        count,
        shown,
        f"{where}: column `{col.name}` has type {df[col.name].dtype} (e.g. {shown}); the contract "
        f"{contract_file} says {col.type} (rule {rule}): write it as {col.type} upstream and re-land "
        "the file, or change the type in the contract.",
        "type",
    )


def null_share(
    rule: str, df: pd.DataFrame, col: ColumnRule, row_id: str, nulls: int, where: str, contract_file: str
) -> RuleFailure:
    """More nulls in a nullable column than `max_null_share` of the rows: the feed broke for part of them."""
    n = len(df)
    share = nulls / n if n else 0.0
    has_ids = row_id in df.columns and row_id != col.name
    ids = sample(df[row_id][df[col.name].isna().to_numpy()].head(50).tolist()) if has_ids else []
    which = f" (e.g. in rows with {row_id} {ids})" if ids else ""
    return RuleFailure(
        rule,
        col.name,
        "batch",
        nulls,
        ids,
        f"{where}: column `{col.name}` is null in {nulls} of {n} rows ({share:.1%}){which}, above its limit "
        f"columns.{col.name}.max_null_share={col.max_null_share:g} in {contract_file} (rule {rule}, check "
        "null_share); the whole batch is blocked: the producer stopped filling it for part of the rows. Fix the "
        "export and re-land the file, or raise max_null_share in the contract if this many nulls are expected.",
        "null_share",
    )


def all_null(rule: str, column: str | None, n: int, where: str) -> RuleFailure:
    return RuleFailure(
        rule,
        column,
        "batch",
        n,
        [],
        f"{where}: column `{column}` is null in all {n} rows (rule {rule}, check all_null): the producer stopped "
        "filling it. Fix the export and re-land the file.",
        "all_null",
    )


def all_null_nullable(rule: str, col: ColumnRule, n: int, where: str, contract_file: str) -> RuleFailure:
    """A nullable column with no value at all in the batch: a broken export, not nullable data."""
    return RuleFailure(
        rule,
        col.name,
        "batch",
        n,
        [],
        f"{where}: column `{col.name}` is null in all {n} rows (rule {rule}, check all_null). The contract "
        f"{contract_file} lets it be null in some rows (nullable: true), but a column empty in every row is a "
        "broken export (a field dropped or renamed upstream); the whole batch is blocked. Fix the export and "
        f"re-land the file; if batches without any `{col.name}` are normal, remove the column from the contract.",
        "all_null",
    )


def quarantine_share(
    df: pd.DataFrame,
    contract: DatasetContract,
    bad_rows: Any,
    row_failures: list[RuleFailure],
    share: float,
    where: str,
    contract_file: str,
) -> RuleFailure:
    top = sorted((f for f in row_failures if f.severity == "row"), key=lambda f: -f.count)[:3]
    causes = "; ".join(f"{rule_label(f.rule, f.column, f.check)} x{f.count}" for f in top)
    return RuleFailure(
        "max_quarantine_share",
        None,
        "batch",
        len(bad_rows),
        _ids_of(df, contract.row_id, bad_rows),
        f"{where}: {len(bad_rows)} of {len(df)} rows ({share:.1%}) broke row rules, above "
        f"validation.max_quarantine_share={contract.max_quarantine_share:g} in {contract_file}; the "
        f"whole batch is blocked (main causes: {causes}) and nothing is quarantined: the row-rule failures of "
        "this report say which rows broke which rule, and the landed file is kept whole. Fix the producer and "
        "re-land the file, or raise the limit in the contract if this is expected.",
        "quarantine_share",
    )


def duplicate_batch(other: str, entry: dict[str, Any], digest: str, where: str) -> RuleFailure:
    return RuleFailure(
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


# ----------------------------------------------------------------------------------------------
# row rules


def broken_rows(
    r: Any,
    df: pd.DataFrame,
    row_id: str,
    rows: Any,
    start: datetime,
    end: datetime,
    where: str,
    contract_file: str,
    quarantine_file: str,
) -> RuleFailure:
    """A row rule's failure: the rows are quarantined, the rest of the batch proceeds."""
    rule, column = r.expectation_config.type, r.expectation_config.kwargs.get("column")
    check = str((r.expectation_config.meta or {}).get("check", ""))
    kw = r.expectation_config.kwargs
    count = len(rows)
    if rule == "expect_column_values_to_not_be_null":
        if column != row_id and row_id in df.columns:
            shown_values = _ids_of(df, row_id, rows)
            shown = f"null in rows with {row_id} {shown_values}"
        else:
            shown_values = [int(x) for x in rows[:SAMPLE_SIZE]]
            shown = f"null at row positions {shown_values} (0-based)"
        what = "must not be null"
    else:
        shown_values = sample(r.result.get("partial_unexpected_list") or [])
        shown = f"offending values {shown_values}"
        if rule == "expect_column_values_to_be_unique":
            what = f"must be unique (every copy of a repeated {column} is quarantined)"
        elif rule == "expect_column_values_to_be_in_set":
            what = f"must be one of {list(kw.get('value_set') or [])}"
        elif check == "not_in_future":
            what = f"must not be in the future of the batch: before the interval end {end.isoformat()}"
        elif check == "in_interval":
            what = f"must fall in the data interval [{start.isoformat()}, {end.isoformat()})"
        elif rule == "expect_column_values_to_be_between":
            what = f"must be between {kw.get('min_value')} and {kw.get('max_value')}"
        else:
            what = "broke the rule"
    fix = (
        f"fix them upstream and re-land the file to recover them, or change the rule in {contract_file} if "
        "these values are legitimate"
    )
    if check == "not_in_future":
        fix = (
            "check the producer's clock and time zone (UTC expected); rows that belong to a later interval "
            "go in that interval's batch"
        )
    elif check == "in_interval":
        fix = "land late rows in the batch of their own interval"
    return RuleFailure(
        rule,
        column,
        "row",
        count,
        shown_values,
        f"{where}: column `{column}` {what} (rule {rule}, check {check}); {count} row(s), {shown}. "
        f"{quarantined_to(quarantine_file)}: {fix}.",
        check,
    )


def unique_across_batches(
    column: str,
    count: int,
    ids: list[Any],
    earlier: list[tuple[str, int, str | None]],
    where: str,
    validated_dir: str,
    quarantine_file: str,
) -> RuleFailure:
    """Rows whose id was accepted for another interval: `earlier` is (interval key, rows, file accepted for it)."""
    rule = UNIQUE_ACROSS_BATCHES
    batches = "; ".join(
        f"{rows} accepted for the interval starting {key}" + (f" (file `{name}`)" if name else "")
        for key, rows, name in earlier
    )
    keys = ", ".join(key for key, _, _ in earlier)
    return RuleFailure(
        rule,
        column,
        "row",
        count,
        ids,
        f"{where}: column `{column}` must be unique across every accepted batch of the dataset (rule {rule}, "
        f"check {rule}); {count} row(s) carry a {column} already accepted for another interval: {batches}; e.g. "
        f"{ids}. {quarantined_to(quarantine_file)}: if the producer re-sent old rows (the earlier ones stay "
        f"published, once, in {validated_dir}), drop them from the export; if the earlier batch was wrong, "
        f"re-land the interval(s) {keys} with the right rows (their ids are replaced when validated again), then "
        "rerun this one.",
        rule,
    )


# ----------------------------------------------------------------------------------------------
# distribution


def distribution_unevaluated(rule: str, column: str, severity: str, error: str, where: str) -> RuleFailure:
    return RuleFailure(
        rule,
        column,
        severity,
        0,
        [],
        f"{where}: the distribution of `{column}` could not be checked ({error}) (rule {rule}).",
        "distribution",
    )


def distribution_shift(
    rule: str,
    column: str,
    severity: str,
    count: int,
    shown: list[Any],
    found: list[str],
    references: list[dict[str, Any]],
    max_ratio: float,
    where: str,
    contract_file: str,
) -> RuleFailure:
    span = f"{references[0]['key']}..{references[-1]['key']}" if len(references) > 1 else references[0]["key"]
    then = (
        f"the batch is blocked (validation.distribution.severity: block in {contract_file})"
        if severity == "batch"
        else "the batch proceeds; this is recorded as a warning"
    )
    return RuleFailure(
        rule,
        column,
        severity,
        count,
        shown,
        f"{where}: column `{column}` is far from the {len(references)} batch(es) accepted before it ({span}): "
        f"{'; '.join(found)} (rule {rule}, check distribution, validation.distribution.max_ratio={max_ratio:g} "
        f"in {contract_file}); {then}. If the producer changed units or the feed broke, fix it and re-land the "
        "file; if the world really changed, the drift monitor will say so.",
        "distribution",
    )
