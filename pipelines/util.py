"""Small helpers every stage needs, written once: UTC datetimes, JSON-safe values, file digests.

Nothing here imports anything heavy at module import time (pandas only inside `json_safe`, and only
for a value no cheaper test recognised).
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.storage import Location

_CHUNK = 1 << 20


def as_utc(ts: datetime) -> datetime:
    """A plain `datetime` in UTC: naive input is taken as UTC, aware input converted, and a subclass
    (pendulum's, from Airflow's context) flattened to the standard library type."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    u = ts.astimezone(UTC)
    return datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=UTC)


def json_safe(value: Any, *, nonfinite_as_text: bool = False) -> Any:
    """`value` as plain JSON types, recursively (dicts, lists and tuples become dicts and lists).

    NaN, None, pandas NA and NaT become None; +-inf become None too, or the text "inf"/"-inf" with
    `nonfinite_as_text` (a sample of offending values must say what the value was). numpy scalars
    become Python numbers, dates and datetimes ISO 8601 strings; anything else its `str`.
    """
    if value is None or type(value) in (bool, int, str):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v, nonfinite_as_text=nonfinite_as_text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, nonfinite_as_text=nonfinite_as_text) for v in value]
    if isinstance(value, str):  # numpy.str_ and other str subclasses
        return str(value)
    if isinstance(value, float):  # also numpy.float64
        f = float(value)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return str(f) if nonfinite_as_text else None
        return f
    if isinstance(value, datetime | date):
        return None if str(value) == "NaT" else value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars (bool_, int64, float32, datetime64, ...)
    if callable(item) and type(value).__module__ == "numpy":
        return json_safe(item(), nonfinite_as_text=nonfinite_as_text)
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def sha256_file(path: Location) -> str:
    """Hex sha256 of a file's bytes, streamed: a local path, or any location of pipelines/storage.py."""
    from pipelines import storage

    h = hashlib.sha256()
    if storage.is_remote(path):
        with storage.open_input(path) as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    else:
        with storage.local_path(path).open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()
