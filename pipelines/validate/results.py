"""What the gate says about a batch: a `RuleFailure` per broken rule, one `ValidationResult` (the report)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

REASONS = "_quarantine_reasons"  # the column of the quarantine file that says why each row is there
UNIQUE_ACROSS_BATCHES = "unique_across_batches"  # Flywheel's rule (and check) of row identity across batches


@dataclass(frozen=True)
class RuleFailure:
    # GX expectation type, or Flywheel's own: readable_file / duplicate_batch / leaked_label / max_quarantine_share /
    # unique_across_batches
    rule: str
    column: str | None
    severity: str  # "batch" (blocks the batch), "row" (rows quarantined if accepted) or "warn" (recorded only)
    count: int  # offending rows (0 for batch rules where not applicable), whether the batch is accepted or blocked
    sample: list[Any]  # up to 5 offending values (JSON-able)
    message: str  # for people: file, column, rule, values and what to do next
    # Flywheel's short name: schema, type, row_count, null_share, not_null, all_null, unique, unique_across_batches...
    check: str = ""


@dataclass(frozen=True)
class ValidationResult:
    dataset: str  # the contract's name (datasets/<dataset>.yaml)
    batch_file: str
    interval_start: str
    interval_end: str
    verdict: str  # "accepted" or "blocked"
    rows_landed: int
    rows_clean: int  # rows published to clean_path (0 when blocked)
    # rows written to quarantine_path: 0 when blocked (a blocked batch stays whole, nothing of it is quarantined;
    # its row failures still count the rows that broke each rule)
    rows_quarantined: int
    clean_path: str | None  # validated/<key>.parquet, accepted batches only
    quarantine_path: str | None  # quarantine/<key>.parquet, accepted batches with bad rows only
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
            f"Dataset {self.dataset}, batch {self.batch_file} for {self.interval_start} to "
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
                (
                    "Row rules broken (nothing quarantined: the batch is blocked whole): "
                    if blocking
                    else "Row rules broken: "
                )
                + ", ".join(f"{rule_label(f.rule, f.column, f.check)} x{f.count}" for f in row_rules)
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


def rule_label(rule: str, column: str | None, check: str = "") -> str:
    """The quarantine reason of a row rule: `rule(column)`, qualified where one rule checks two things."""
    return f"{rule}({column}, {check})" if check in ("not_in_future", "in_interval") else f"{rule}({column})"
