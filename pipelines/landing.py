"""Landed files: which interval a file belongs to, and which landed files still wait for the gate.

A producer lands a file in `<data root>/data/landing/<dataset>/`; that is all it does. The interval is
read from the file name through the contract's `file_pattern` (`x_{start:%Y-%m-%d}.parquet` → the
cadence interval starting there; the extension may differ, e.g. `.csv`), else from its rows: the
cadence interval holding its earliest event. A file waits for the gate until a validation report of
its interval records its exact bytes (sha256): landing a new version of a file re-opens its interval.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipelines import storage

if TYPE_CHECKING:
    from pipelines.spec import DatasetContract
    from pipelines.storage import Location

SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class Landed:
    """A landed file and the interval it belongs to."""
    file: str
    interval_start: datetime
    interval_end: datetime
    key: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "interval_start": self.interval_start.isoformat(),
                "interval_end": self.interval_end.isoformat(), "key": self.key, "sha256": self.sha256}


def next_tick(cadence: str, after: datetime) -> datetime:
    """The cadence's first tick strictly after `after` (UTC)."""
    from croniter import croniter

    return croniter(cadence, after).get_next(datetime).astimezone(UTC)


def previous_tick(cadence: str, at: datetime) -> datetime:
    """The cadence's last tick at or before `at` (UTC)."""
    from croniter import croniter

    return croniter(cadence, at + timedelta(microseconds=1)).get_prev(datetime).astimezone(UTC)


def start_from_name(contract: DatasetContract, name: str) -> datetime | None:
    """`x_{start:%Y-%m-%d}.parquet` -> the start in `x_2026-01-05.csv` (any extension); None if it does not fit."""
    pattern = contract.file_pattern
    m = re.search(r"\{start:([^}]*)\}", pattern)
    if m is None:
        return None
    prefix, rest = pattern[: m.start()], pattern[m.end():]
    suffix = re.sub(r"\.[A-Za-z0-9]+$", "", rest)  # the extension may differ (.csv for .parquet)
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", name.rsplit("/", 1)[-1])
    if not (stem.startswith(prefix) and stem.endswith(suffix)):
        return None
    middle = stem[len(prefix): len(stem) - len(suffix)] if suffix else stem[len(prefix):]
    try:
        ts = datetime.strptime(middle, m.group(1) or "%Y-%m-%d")
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC)


def start_from_data(contract: DatasetContract, path: Location) -> datetime:
    """The start of the cadence interval holding the file's earliest event (ValueError saying why not: an
    empty file, a CSV with another delimiter, no timestamp column, no timestamp values)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from pipelines.validate.reading import wrong_delimiter

    col = contract.timestamp
    explicit = (f"name the file like `{contract.file_pattern}` or pass the interval explicitly "
                "(`flywheel ingest`/`validate` --start)")
    if storage.size(path) == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes), so it holds no `{col}` to place it in an interval: "
                         "the producer probably crashed while writing it; re-land the batch.")
    try:
        with storage.local_copy(path) as local:
            csv = str(local).lower().endswith(".csv")
            columns = ([str(c) for c in pd.read_csv(local, nrows=0).columns] if csv
                       else list(pq.read_schema(local).names))
            if csv and (wrong := wrong_delimiter(columns)) is not None:
                problem = (f"{wrong}; write it comma-separated (the contract {contract.path.name} expects one column "
                           "per field) and re-land it")
            elif col not in columns:
                problem = (f"no column `{col}` (the contract's timestamp) to place the batch in an interval; the file "
                           f"has {columns[:12]}. Fix the export, or {explicit}")
            else:
                problem = ""
                ts = pd.read_csv(local, usecols=[col])[col] if csv else pd.read_parquet(local, columns=[col])[col]
    except Exception as exc:  # noqa: BLE001 - any reason is said
        kind = "CSV" if str(path).lower().endswith(".csv") else "parquet"
        raise ValueError(f"{path}: cannot be read as {kind} to place the batch in an interval "
                         f"({type(exc).__name__}: {exc}); re-land a valid file, or {explicit}.") from None
    if problem:
        raise ValueError(f"{path}: {problem}.")
    try:
        first = pd.to_datetime(ts, utc=True, format="ISO8601").min()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: `{col}` cannot be read as timestamps to place the batch in an interval "
                         f"({type(exc).__name__}: {exc}); {explicit}.") from None
    if pd.isna(first):
        raise ValueError(f"{path}: no `{col}` values to place the batch in an interval; {explicit}.")
    return previous_tick(contract.cadence, first.to_pydatetime())


def interval_of(contract: DatasetContract, path: Location) -> tuple[datetime, datetime]:
    """The cadence interval a landed file belongs to: by its name, else by its earliest event."""
    start = start_from_name(contract, storage.name(path))
    if start is None:
        start = start_from_data(contract, path)
    return start, next_tick(contract.cadence, start)


def validated_sha256(reports_dir: Location, key: str) -> str | None:
    """The sha256 of the file the gate last judged for interval `key` (accepted or blocked), if any."""
    report = storage.join(reports_dir, f"{key}.json")
    if not storage.is_file(report):
        return None
    try:
        return json.loads(storage.read_text(report)).get("batch_sha256")
    except ValueError:
        return None


def pending(contract: DatasetContract, landing_dir: Location, reports_dir: Location,
            known: dict[str, tuple[Any, str]] | None = None) -> list[Landed]:
    """Landed files the gate has not judged in their current version, oldest interval first.

    `known` (file -> (storage version, sha256)) caches hashes between polls: a file is hashed again only
    when its size or modification time changed.
    """
    from pipelines.layout import interval_key
    from pipelines.util import sha256_file

    known = known if known is not None else {}
    out = []
    for path in storage.list_files(landing_dir):
        if not path.lower().endswith(SUFFIXES):
            continue
        version = storage.version(path)
        cached = known.get(path)
        sha = cached[1] if cached and cached[0] == version else sha256_file(path)
        known[path] = (version, sha)
        try:
            start, end = interval_of(contract, path)
        except ValueError:
            continue   # the gate cannot place it either; `flywheel ingest FILE --start` can
        key = interval_key(start)
        if validated_sha256(reports_dir, key) != sha:
            out.append(Landed(str(path), start, end, key, sha))
    return sorted(out, key=lambda x: (x.interval_start, x.file))
