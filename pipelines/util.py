"""Small helpers every stage needs, written once: UTC datetimes, JSON-safe values, file digests, row-id hashes,
frames sorted by columns.

Nothing here imports anything heavy at module import time (pandas only inside `json_safe`, and only
for a value no cheaper test recognised; numpy and pyarrow inside `row_unit_hash` and `sorted_by`).
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

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


_FNV_OFFSET, _FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


def row_unit_hash(ids: pd.Series, seed: int) -> np.ndarray:
    """A number in [0, 1) per row id, uniform over ids and fixed by (id, seed): a row is in a sample of fraction
    f when its number is below f, so a re-run keeps the same rows and a larger f keeps a superset.

    The id is hashed as its text (the integer 17 and the string "17" are one id): 64-bit FNV-1a over its UTF-8
    bytes, then splitmix64's finaliser with the seed mixed in; the top 53 bits make the number. Written here,
    in numpy, rather than taken from a library whose hash may change between versions (DuckDB's `hash`, pandas'
    `hash_pandas_object`), so the same rows are kept across upgrades too; ~0.15 s per million ids. A missing id
    hashes as the empty text."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(ids, from_pandas=True)
    if not pa.types.is_large_string(text.type):
        text = text.cast(pa.large_string())
    text = pc.fill_null(text, "").combine_chunks() if isinstance(text, pa.ChunkedArray) else pc.fill_null(text, "")
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset:text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8) if text.buffers()[2] is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(len(text), _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max(initial=0))):    # byte j of every id that long
            at = np.flatnonzero(lengths > j)
            h[at] = (h[at] ^ data[starts[at] + j].astype(np.uint64)) * np.uint64(_FNV_PRIME)
        x = h ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sorted_by(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame.sort_values(columns, kind="stable").reset_index(drop=True)`, the same rows in the same order, ordered
    by Arrow's stable multi-key sort: ~10x faster at a million rows with a string key (0.35 s against 3.4 s: pandas
    factorizes every string column first). Missing values last, as pandas puts them; a column Arrow cannot take (a
    mix of types in one object column) or a categorical one (pandas orders it by its categories) goes through
    pandas."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if any(isinstance(frame[c].dtype, pd.CategoricalDtype) for c in columns):   # pandas sorts those by code
        return frame.sort_values(columns, kind="stable").reset_index(drop=True)
    try:
        keys = pa.table({f"k{i}": pa.array(frame[c], from_pandas=True) for i, c in enumerate(columns)})
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return frame.sort_values(columns, kind="stable").reset_index(drop=True)
    order = pc.sort_indices(keys, sort_keys=[(f"k{i}", "ascending", "at_end") for i in range(len(columns))])
    return frame.take(order.to_numpy()).reset_index(drop=True)
