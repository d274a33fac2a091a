"""A dataset's board: its batches, their verdicts and rows, read from the gate's recorded results.

One `ValidationResult` JSON per interval (`Layout.validation_reports(dataset)/<key>.json`, the latest
run of the interval: a re-landed fix overwrites the blocked verdict) and the kept copies of blocked
files (`Layout.blocked(dataset)/<key>/`), which say that an interval was blocked before.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.board.files import FileRef, ref_for

if TYPE_CHECKING:
    from pipelines.layout import Layout
    from pipelines.spec import DatasetContract

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRow:
    key: str
    interval_start: str
    interval_end: str
    batch_file: str
    verdict: str                 # accepted | blocked (the interval's latest run)
    rows_landed: int
    rows_clean: int
    rows_quarantined: int
    rows_blocked: int            # rows of this run when blocked, plus those of blocked files kept for the key
    blocked_files: int           # kept copies under blocked/<key>/ (an earlier blocked landing included)
    failures: tuple[dict[str, Any], ...]   # rule, column, severity, count, message
    data_docs: FileRef | None
    report: FileRef | None = None

    @property
    def run_id(self) -> str:
        """The ingest run of this interval (dags/land.py starts `batch__<key>`)."""
        return f"batch__{self.key}"


@dataclass(frozen=True)
class DatasetBoard:
    name: str
    description: str
    owners: tuple[str, ...]
    cadence: str
    read_by: tuple[str, ...]
    batches: tuple[BatchRow, ...]
    data_docs_index: FileRef | None
    problems: tuple[str, ...] = ()

    @property
    def totals(self) -> dict[str, int]:
        return {"batches": len(self.batches),
                "accepted": sum(1 for b in self.batches if b.verdict == "accepted"),
                "blocked": sum(1 for b in self.batches if b.verdict == "blocked" or b.blocked_files),
                "rows_clean": sum(b.rows_clean for b in self.batches),
                "rows_quarantined": sum(b.rows_quarantined for b in self.batches)}


def _rows_of(location: str) -> int:
    """Rows of a kept blocked file: parquet metadata, or the data lines of a CSV (0 when unreadable)."""
    try:
        if location.endswith(".parquet"):
            return storage.parquet_rows(location)
        lines = storage.read_text(location).splitlines()
        return max(0, sum(1 for line in lines if line.strip()) - 1)
    except (OSError, ValueError, UnicodeDecodeError) as exc:   # pyarrow's errors are OSError/ValueError
        log.warning("blocked file %s unreadable: %s", location, exc)
        return 0


def dataset_board(contract: DatasetContract, layout: Layout, read_by: list[str]) -> DatasetBoard:
    """Every batch of the dataset (oldest first) with its verdict, rows and links."""
    reports = layout.validation_reports(contract.name)
    problems: list[str] = []
    batches = []
    for path in storage.list_files(reports, ".json"):
        key = storage.stem(path)
        try:
            r = json.loads(storage.read_text(path))
        except (OSError, ValueError) as exc:
            problems.append(f"validation result {storage.name(path)} unreadable: {exc}")
            continue
        if not isinstance(r, dict) or "verdict" not in r:   # accepted_batches.json: the duplicate registry
            continue
        kept = storage.list_files(storage.join(layout.blocked(contract.name), key))
        blocked_rows = sum(_rows_of(k) for k in kept)
        if r["verdict"] == "blocked" and not kept:
            blocked_rows = int(r.get("rows_landed") or 0)
        batches.append(BatchRow(
            key=key, interval_start=str(r.get("interval_start", "")), interval_end=str(r.get("interval_end", "")),
            batch_file=storage.name(str(r.get("batch_file", ""))) if r.get("batch_file") else "",
            verdict=str(r["verdict"]), rows_landed=int(r.get("rows_landed") or 0),
            rows_clean=int(r.get("rows_clean") or 0), rows_quarantined=int(r.get("rows_quarantined") or 0),
            rows_blocked=blocked_rows, blocked_files=len(kept),
            failures=tuple({k: f.get(k) for k in ("rule", "column", "severity", "count", "message", "check")}
                           for f in r.get("failures") or []),
            data_docs=ref_for(r.get("data_docs_path"), layout, "docs", contract.name),
            report=ref_for(path, layout, "validation", contract.name),
        ))
    batches.sort(key=lambda b: (b.interval_start, b.key))
    index = layout.data_docs(contract.name) / "site" / "index.html"
    return DatasetBoard(
        name=contract.name, description=contract.description, owners=tuple(contract.owners),
        cadence=contract.cadence, read_by=tuple(read_by), batches=tuple(batches),
        data_docs_index=FileRef("docs", contract.name, "index.html") if index.is_file() else None,
        problems=tuple(problems),
    )
