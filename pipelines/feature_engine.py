"""Generic feature-aggregation engine: point-in-time snapshots of a declared view over a dataset's events.

A view (`ViewSpec`) declares entity keys, the event-time column, a granularity and aggregations
(`AggregationSpec`, read from Feast `Aggregation(column, function, time_window, name)` objects
elsewhere). `compute_view` turns the dataset's rows into the view's snapshot table for one interval.

Point-in-time semantics:

- Snapshots are stamped at t = start + g, start + 2g, ..., end (g = granularity). The snapshot at t
  summarises, per entity and per aggregation with window W, the events with timestamp in [t − W, t)
  (half-open: an event exactly at t belongs to the NEXT snapshot; same convention as Chronon's and
  Tecton's `[t − W, t)` windows). A training row or request at time s reads (elsewhere, via Feast) the
  latest snapshot with t <= s, so it never sees an event at or after s, and never sees events in
  [t, s) either (staleness up to one granularity).
- `events` holds the dataset rows (any extra columns ignored); the caller passes at least
  [start + g − lookback, end); rows outside that range are ignored (never counted); rows with a null
  in any join key or the timestamp are ignored.
- An entity gets a snapshot at t iff it has at least one event in [t − lookback, t). Otherwise no row.
- Per function, on the window's events of the entity (nulls in `column` ignored, as SQL does):
  count = number of non-null values (int64, 0 if none); sum (float64, 0.0 if none); mean, min, max
  (float64, NaN if none); std = SAMPLE standard deviation ddof=1 (float64, NaN with < 2 values);
  count_distinct = distinct non-null values (int64, 0 if none); last = value of the latest event by
  timestamp among non-null values (ties at the same timestamp: the largest value; numeric -> float64,
  string stays string/object; NaN/None if none); share = rows with column == match / rows with
  column non-null (float64, NaN if none).
- Output columns: the join keys (their input dtypes), feature_timestamp (datetime64[ns, UTC]), one
  column per aggregation in declaration order, created_timestamp = `end` for every row (deterministic,
  never now()). Sorted by (feature_timestamp, join keys). One row per (entity, t): never duplicates.
- Empty input or no snapshots -> an empty DataFrame with those columns.

How (vectorised numpy, no per-entity Python loop): events are grouped into cells, one per (entity,
bucket of the granularity) that has events; every window is a whole number of buckets, so a
snapshot's window is a contiguous run of an entity's cells, found by one lookup per window length.
Counts, sums and sums of squares per cell are rolled with prefix sums (float prefixes centred per
entity, so rounding stays at the scale of the entity, not of the whole table); min/max with a sparse
table built in place, one level at a time; last with a running "latest cell that has a value";
count_distinct exactly from the distinct (value, cell) pairs: an occurrence adds 1 from its bucket
until its next occurrence or until it leaves the window. A std whose one-pass value could have lost
precision (window variance tiny against the entity's) is recomputed for that row from per-cell
(count, mean, M2) merged with the window's own mean (Chan et al.), as a two-pass std would.
Infinite values are counted apart: a window's sum and mean are +-inf (NaN with both signs) and its
std NaN, as float arithmetic over the window would give; other windows and entities are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipelines.util import as_utc

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FUNCTIONS = ("count", "sum", "mean", "min", "max", "std", "count_distinct", "last", "share")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
GRANULARITIES = (HOUR, DAY)
MIN_WINDOW, MAX_WINDOW = HOUR, timedelta(days=90)
_NUMERIC = ("sum", "mean", "min", "max", "std")
# (entity x bucket) grids up to this many cells are addressed directly (a lookup table); beyond, the
# occupied cells are found by sorting. Either way the work after that is per occupied cell.
_DENSE_CELLS_MAX = 1 << 25
_EXACT_BATCH = 4_000_000   # cells expanded at once when recomputing ill-conditioned std rows
# the per-column caches (see _Column) each function builds, freed after their last use
_CACHES = {"sum": ("sums",), "mean": ("sums",), "std": ("moments",), "min": ("extreme",), "max": ("extreme",),
           "count_distinct": ("distinct",)}


@dataclass(frozen=True)
class AggregationSpec:
    name: str              # output feature column
    column: str            # source column of the dataset
    function: str          # one of FUNCTIONS
    window: timedelta      # 1 hour .. 90 days, a whole multiple of the view's granularity
    match: Any = None      # `share` only: the value whose share of rows is computed (required for share, else None)


@dataclass(frozen=True)
class ViewSpec:
    name: str
    join_keys: tuple[str, ...]        # entity key columns in the dataset (one or more; int or string)
    timestamp: str                    # the dataset's event-time column (tz-aware UTC or naive=UTC)
    granularity: timedelta            # timedelta(hours=1) or timedelta(days=1)
    aggregations: tuple[AggregationSpec, ...]
    feature_timestamp: str = "feature_ts"   # column name of the snapshot time in the output
    created_timestamp: str = "created_ts"   # column name of the write time in the output

    @property
    def lookback(self) -> timedelta:
        """The largest window (timedelta(0) for a view without aggregations)."""
        return max((a.window for a in self.aggregations), default=timedelta(0))

    def output_columns(self) -> list[str]:
        return [*self.join_keys, self.feature_timestamp, *(a.name for a in self.aggregations),
                self.created_timestamp]


def _fmt(td: timedelta) -> str:
    secs = int(td.total_seconds())
    if td == timedelta(0) or td.total_seconds() != secs:
        return str(td)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs % n == 0:
            return f"{secs // n}{unit}"
    return f"{secs}s"


def check_view(view: ViewSpec) -> list[str]:
    """Every problem with the declaration, as human messages naming view and feature (empty: fine):
    unknown function, share without match / match without share, window not a multiple of granularity,
    window outside [1h, 90d], granularity not 1h or 1d, duplicate output names, no join keys."""
    v = f"feature view {view.name!r}"
    problems = []
    if not view.join_keys:
        problems.append(f"{v}: no join keys; declare the entity key column(s) of the dataset")
    g = view.granularity
    if g not in GRANULARITIES:
        problems.append(f"{v}: granularity {_fmt(g)} is not supported; use 1h (hourly) or 1d (daily)")
    if not view.aggregations:
        problems.append(f"{v}: no aggregations; declare at least one feature")
    for a in view.aggregations:
        f = f"{v}, feature {a.name!r}"
        if a.function not in FUNCTIONS:
            problems.append(f"{f}: unknown function {a.function!r}; use one of {', '.join(FUNCTIONS)}")
        if a.function == "share" and a.match is None:
            problems.append(f"{f}: share needs `match`, the value of {a.column!r} whose share of rows it "
                            "computes (the field's tag flywheel.match)")
        if a.function != "share" and a.match is not None:
            problems.append(f"{f}: match={a.match!r} only applies to function share, not {a.function!r}; "
                            "remove it or use share")
        if not MIN_WINDOW <= a.window <= MAX_WINDOW:
            problems.append(f"{f}: window {_fmt(a.window)} is outside [{_fmt(MIN_WINDOW)}, {_fmt(MAX_WINDOW)}]")
        if g > timedelta(0) and a.window % g != timedelta(0):
            problems.append(f"{f}: window {_fmt(a.window)} is not a whole multiple of the view's granularity "
                            f"{_fmt(g)}; snapshots could not cover it exactly")
    names = view.output_columns()
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            what = ("feature" if name in {a.name for a in view.aggregations} else "column")
            problems.append(f"{v}: output {what} name {name!r} appears {names.count(name)} times among the "
                            f"join keys, timestamps and features; output names must be unique")
    return problems


# ------------------------------------------------------------------------------------------------
# inputs


def _aligned_ns(view: ViewSpec, which: str, value: datetime) -> int:
    import pandas as pd

    ts = pd.Timestamp(as_utc(value))
    g = pd.Timedelta(view.granularity)
    if ts != ts.floor(g):
        raise ValueError(f"feature view {view.name!r}: {which} {ts.isoformat()} is not aligned to the view's "
                         f"granularity {_fmt(view.granularity)} (UTC); use {ts.floor(g).isoformat()} or "
                         f"{ts.ceil(g).isoformat()}")
    return int(ts.value)


def _utc_ns(s: pd.Series) -> np.ndarray:
    """int64 nanoseconds since the epoch (UTC) of a timestamp column, naive = UTC; NaT -> int64 min."""
    import pandas as pd

    if not (isinstance(s.dtype, pd.DatetimeTZDtype) or s.dtype.kind == "M"):
        s = pd.to_datetime(s, utc=True)
    arr = s.array              # a DatetimeArray holds UTC instants whatever its zone: no copy
    if arr.unit != "ns":
        arr = arr.as_unit("ns")
    return arr.asi8


def _codes(values: Any) -> tuple[np.ndarray, Any]:
    """Integer codes that sort like the values (null -> -1) and the distinct values, sorted."""
    import numpy as np
    import pandas as pd

    if isinstance(values, np.ndarray) and values.dtype.kind in "iu" and len(values):
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < max(4 * len(values), 1 << 20):     # direct addressing: O(n + range), no hashing
            off = ((values - lo).astype(np.int64) if values.dtype == np.uint64
                   else values.astype(np.int64, copy=False) - lo)
            occ = np.bincount(off, minlength=hi - lo + 1) > 0
            rank = np.cumsum(occ, dtype=_small_int(len(values))) - 1
            return rank[off], (np.flatnonzero(occ) + lo).astype(values.dtype)
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(_small_int(len(values))), uniques


def _small_int(n: int) -> Any:
    """int32 for codes and positions below 2**31 (half the memory of int64), else int64."""
    import numpy as np

    return np.int32 if n < (1 << 31) - 1 else np.int64


def _entity_codes(cols: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """One code per row for the tuple of key columns, ordered lexicographically (-1: a null key), and
    per key column its value for each code."""
    import numpy as np

    code, uniques = _codes(cols[0])
    keys = [uniques]
    for col in cols[1:]:
        c2, u2 = _codes(col)
        ok = (code >= 0) & (c2 >= 0)
        sub, combined = _codes(code[ok].astype(np.int64) * len(u2) + c2[ok])
        keys = [k[combined // len(u2)] for k in keys] + [u2[combined % len(u2)]]
        code = np.full(len(code), -1, dtype=sub.dtype)
        code[ok] = sub
    return code, keys


# ------------------------------------------------------------------------------------------------
# cells and snapshot rows


@dataclass
class _Cells:
    """The occupied (entity, bucket) cells, sorted by key = entity * n_buckets + bucket."""

    n_buckets: int
    keys: np.ndarray         # int64, sorted
    rows: np.ndarray         # events per cell
    row_cell: np.ndarray     # per event: its cell
    ent: np.ndarray          # per cell: its entity
    bucket: np.ndarray       # per cell: its bucket
    cum0: np.ndarray | None  # direct addressing: cum0[k] = cells with key < k

    @property
    def n(self) -> int:
        return len(self.keys)

    def pos(self, keys: np.ndarray) -> np.ndarray:
        """Number of cells with key <= each of `keys` (keys >= -1)."""
        import numpy as np

        if self.cum0 is not None:
            return self.cum0[keys + 1]
        return np.searchsorted(self.keys, keys, side="right")


def _build_cells(ck: np.ndarray, n_ent: int, n_buckets: int) -> _Cells:
    """Cells of the events with cell keys `ck` (int64, entity * n_buckets + bucket)."""
    import numpy as np

    m, n = n_ent * n_buckets, len(ck)
    if m <= min(_DENSE_CELLS_MAX, 16 * n + (1 << 22)):
        occ = np.bincount(ck, minlength=m)
        keys = np.flatnonzero(occ)
        cum0 = np.zeros(m + 1, dtype=np.intp)   # positions index arrays: intp, or numpy converts at every use
        np.cumsum(occ > 0, out=cum0[1:])
        rows = occ[keys]
        del occ
        row_cell = cum0[ck]
    else:
        order = _argsort_keys(ck)
        sorted_ck = ck[order]
        start = np.empty(n, dtype=bool)
        start[:1] = True
        np.not_equal(sorted_ck[1:], sorted_ck[:-1], out=start[1:])
        keys = sorted_ck[start]
        del sorted_ck
        row_cell = np.empty(n, dtype=np.intp)
        row_cell[order] = np.cumsum(start, dtype=row_cell.dtype) - 1
        rows = np.diff(np.append(np.flatnonzero(start), n))
        cum0 = None
    ent = keys // n_buckets
    bucket = (keys - ent * n_buckets).astype(np.int32)
    return _Cells(n_buckets, keys, rows, row_cell, ent, bucket, cum0)


def _argsort_keys(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative int64 keys: a radix sort on 16-bit digits (numpy sorts uint16
    stably by counting), about twice as fast as a comparison sort for 10M keys below 2**32."""
    import numpy as np

    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    top = int(keys.max(initial=0))
    shift = 16
    while top >> shift:
        digit = ((keys[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


@dataclass
class _Snaps:
    """The snapshot rows in output order (bucket, entity) and their windows as ranges of cells."""

    ent: np.ndarray      # entity of each row
    last: np.ndarray     # the last bucket its windows cover (the snapshot is stamped at that bucket's end)
    hi: np.ndarray       # cells with key <= (ent, last): every window of the row ends before cell hi
    first: np.ndarray    # the entity's first cell
    lo: dict[int, np.ndarray]  # window length in buckets -> the window's first cell


def _snapshot_rows(cells: _Cells, lookback: int, first_snap: int, windows: set[int]) -> _Snaps:
    """Every (entity, bucket >= first_snap) with a cell in the lookback (runs of an entity's cells), with
    the first cell of each of `windows` (lengths in buckets)."""
    import numpy as np

    nb, e, b = cells.n_buckets, cells.ent, cells.bucket
    new = np.ones(len(b), dtype=bool)
    new[1:] = (e[1:] != e[:-1]) | (b[1:] - b[:-1] > lookback)
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(b)) - 1
    run_lo = np.maximum(b[starts], first_snap)
    run_hi = np.minimum(b[ends] + lookback - 1, nb - 1)
    keep = run_hi >= run_lo
    run_lo, run_hi, run_ent = run_lo[keep], run_hi[keep], e[starts[keep]]
    lens = (run_hi - run_lo + 1).astype(np.int64)
    total = int(lens.sum())
    rel = np.repeat((run_lo - first_snap) - (np.cumsum(lens) - lens), lens)
    rel += np.arange(total, dtype=rel.dtype)
    # (entity, bucket) -> (bucket, entity) order (entity codes sort like the keys): a stable radix sort of
    # the snapshot index, then the entity of each row
    order = _argsort_keys(rel)
    last = rel[order].astype(np.int32)
    last += first_snap
    del rel
    ent = np.repeat(run_ent, lens)[order]
    del order
    key = ent.astype(np.int64)
    key *= nb
    key += last
    lo = {w: cells.pos(key - w) for w in sorted(windows)}
    return _Snaps(ent, last, cells.pos(key), cells.pos(key - last - 1), lo)


# ------------------------------------------------------------------------------------------------
# per-cell quantities rolled over windows


def _prefix(values: np.ndarray) -> np.ndarray:
    import numpy as np

    out = np.zeros(len(values) + 1, dtype=values.dtype)
    np.cumsum(values, out=out[1:])
    return out


class _FloatSum:
    """Window sums of a float per cell: a prefix of the values minus their entity's mean, so that the
    prefix returns to ~0 at every entity and rounding scales with the entity, not the table."""

    def __init__(self, cells: _Cells, per_cell: np.ndarray, n_ent: int) -> None:
        import numpy as np

        n = np.bincount(cells.ent, minlength=n_ent)
        self.centre = np.bincount(cells.ent, per_cell, minlength=n_ent) / np.maximum(n, 1)
        self.prefix = _prefix(per_cell - self.centre[cells.ent])
        self.scale = np.bincount(cells.ent, np.abs(per_cell), minlength=n_ent)   # for error bounds

    def window(self, snaps: _Snaps, lo: np.ndarray) -> np.ndarray:
        out = self.prefix[snaps.hi]
        out -= self.prefix[lo]
        fix = self.centre[snaps.ent]
        fix *= snaps.hi - lo
        out += fix
        return out


def _window_extreme(per_cell: np.ndarray, lo: np.ndarray, hi: np.ndarray, fn: Any) -> np.ndarray:
    """fn (np.minimum / np.maximum) over cells [lo, hi) of each row (hi > lo), by a sparse table built
    in place one level at a time: a row of length L reads level floor(log2 L) at lo and hi - 2**k."""
    import numpy as np

    out = np.empty(len(lo), dtype=np.float64)
    if not len(lo):
        return out
    length = hi - lo
    top = int(length.max()).bit_length() - 1
    table = per_cell
    for k in range(top + 1):
        rows = np.flatnonzero((length >> k) == 1)          # floor(log2(length)) == k
        if len(rows):
            out[rows] = fn(table[lo[rows]], table[hi[rows] - (1 << k)])
        if k < top:
            table = fn(table[:-(1 << k)], table[1 << k:])
    return out


class _Column:
    """One source column over the kept events, with its per-cell quantities computed once."""

    def __init__(self, view: ViewSpec, name: str, raw: Any, cells: _Cells, n_ent: int) -> None:
        self.view, self.name, self.raw, self.cells, self.n_ent = view, name, raw, cells, n_ent
        self._cache: dict[Any, Any] = {}

    def _get(self, key: Any, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def drop(self, family: str) -> None:
        """Forget the cached arrays of one family ("sums", "moments", "extreme", "distinct")."""
        for key in [k for k in self._cache if k == family or (isinstance(k, tuple) and k[0] == family)]:
            del self._cache[key]

    def numeric(self) -> bool:
        import numpy as np
        import pandas as pd

        dt = self.raw.dtype
        return isinstance(dt, np.dtype) and dt.kind in "fiub" or (
            pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt))

    def valid(self) -> np.ndarray | None:
        """Non-null mask of the values; None when none is null."""
        import numpy as np
        import pandas as pd

        def make() -> np.ndarray | None:
            coded = [self._cache[k] for k in (("codes", False), ("codes", True)) if k in self._cache]
            if coded:                       # nulls got code -1
                ok = coded[0][0] >= 0
            elif "x0" in self._cache:
                mask: np.ndarray | None = self._cache["x0"][1]
                return mask
            elif isinstance(self.raw, np.ndarray) and self.raw.dtype.kind in "iub":
                return None
            else:
                ok = ~np.asarray(pd.isna(self.raw), dtype=bool)
            return None if ok.all() else ok
        return self._get("valid", make)

    def cell_nn(self) -> np.ndarray:
        """Non-null values per cell."""
        import numpy as np

        def make() -> np.ndarray:
            ok = self.valid()
            if ok is None:
                return self.cells.rows
            return np.bincount(self.cells.row_cell[ok], minlength=self.cells.n)
        return self._get("cell_nn", make)

    def nn(self) -> np.ndarray:
        return self._get("nn", lambda: _prefix(self.cell_nn()))

    def x0(self, feature: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The values as float64 with nulls as 0.0, and the non-null mask (None: no nulls)."""
        import numpy as np
        import pandas as pd

        def make() -> tuple[np.ndarray, np.ndarray | None]:
            raw = self.raw
            if isinstance(raw, np.ndarray) and raw.dtype.kind in "fiub":
                x = raw.astype(np.float64, copy=False)
            else:
                s = pd.Series(raw, copy=False)
                if not self.numeric():
                    why = f"{s.dtype}, not numeric"
                    try:
                        if s.dtype != object:
                            raise TypeError
                        s = pd.to_numeric(s)    # numbers stored as objects
                    except (TypeError, ValueError):
                        raise ValueError(
                            f"feature view {self.view.name!r}, feature {feature!r}: column {self.name!r} is "
                            f"{why}; {self.view.name!r} needs numbers for {feature!r}: convert the column, or "
                            "use count/count_distinct/last/share") from None
                x = s.to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.isnan(x)
            if not bad.any():
                return x, None
            return np.where(bad, 0.0, x), ~bad
        return self._get("x0", make)

    def xf(self, feature: str) -> np.ndarray:
        """x0 with +-inf as 0.0 too: what the float prefixes sum (infinities are counted apart)."""
        import numpy as np

        def make() -> np.ndarray:
            x0, _ = self.x0(feature)
            inf = np.isinf(x0)
            return np.where(inf, 0.0, x0) if inf.any() else x0
        return self._get("xf", make)

    def infinities(self, feature: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Prefixes of the +inf and -inf values per cell; None when there is none."""
        import numpy as np

        def make() -> tuple[np.ndarray, np.ndarray] | None:
            x0, _ = self.x0(feature)
            if self.xf(feature) is x0:
                return None
            rc, n = self.cells.row_cell, self.cells.n
            return (_prefix(np.bincount(rc[x0 == np.inf], minlength=n)),
                    _prefix(np.bincount(rc[x0 == -np.inf], minlength=n)))
        return self._get("infinities", make)

    def cell_sums(self, feature: str) -> np.ndarray:
        import numpy as np

        return self._get("cell_sums", lambda: np.bincount(self.cells.row_cell, self.xf(feature),
                                                          minlength=self.cells.n))

    def sums(self, feature: str) -> _FloatSum:
        return self._get("sums", lambda: _FloatSum(self.cells, self.cell_sums(feature), self.n_ent))

    def moments(self, feature: str) -> tuple[_FloatSum, _FloatSum]:
        """Window sums of d and d**2, d = value - the entity's mean value (the variance is shift-invariant)."""
        import numpy as np

        def make() -> tuple[_FloatSum, _FloatSum]:
            x0, ok = self.xf(feature), self.x0(feature)[1]
            cells = self.cells
            n = np.bincount(cells.ent, self.cell_nn(), minlength=self.n_ent)
            mean = np.bincount(cells.ent, self.cell_sums(feature), minlength=self.n_ent) / np.maximum(n, 1)
            d = mean[cells.ent][cells.row_cell]
            np.subtract(x0, d, out=d)
            if ok is not None:
                d[~ok] = 0.0
            lin = np.bincount(cells.row_cell, d, minlength=cells.n)
            np.multiply(d, d, out=d)
            sq = np.bincount(cells.row_cell, d, minlength=cells.n)
            return _FloatSum(cells, lin, self.n_ent), _FloatSum(cells, sq, self.n_ent)
        return self._get("moments", make)

    def cell_m2(self, feature: str, need: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per cell (mean, M2) of the values, each two-pass around the cell's own mean; M2 only for the
        cells in `need` (0 elsewhere)."""
        import numpy as np

        x0, ok = self.xf(feature), self.x0(feature)[1]
        rc = self.cells.row_cell
        mean = self.cell_sums(feature) / np.maximum(self.cell_nn(), 1)
        rows = need[rc] if ok is None else need[rc] & ok
        idx = np.flatnonzero(rows)
        dev = x0[idx] - mean[rc[idx]]
        return mean, np.bincount(rc[idx], dev * dev, minlength=self.cells.n)

    def extreme(self, feature: str, fn: Any) -> np.ndarray:
        import numpy as np

        def make() -> np.ndarray:
            x0, ok = self.x0(feature)
            out = np.full(self.cells.n, np.inf if fn is np.minimum else -np.inf)
            if ok is None:
                fn.at(out, self.cells.row_cell, x0)
            else:
                fn.at(out, self.cells.row_cell[ok], x0[ok])
            return out
        return self._get(("extreme", fn.__name__), make)

    def value_codes(self, ordered: bool) -> tuple[np.ndarray, Any]:
        """Codes of the values (null -> -1) and the uniques; `ordered`: codes sort like the values."""
        import numpy as np
        import pandas as pd

        def make() -> tuple[np.ndarray, Any]:
            raw = self.raw
            if isinstance(raw.dtype, pd.CategoricalDtype):
                if not ordered:
                    return np.asarray(raw.codes, dtype=np.int32), raw.categories
                raw = np.asarray(raw, dtype=object)   # order by value, not by category position
            try:
                codes, uniques = pd.factorize(raw, sort=ordered)
            except TypeError:   # values that do not compare (mixed types): first-seen order
                codes, uniques = pd.factorize(raw)
            return codes.astype(_small_int(len(codes))), uniques
        return self._get(("codes", ordered), make)

    def distinct_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (value, cell) pairs, sorted by value, entity, bucket: (cell of each pair, whether the
        next pair has the same value and entity)."""
        import numpy as np

        def make() -> tuple[np.ndarray, np.ndarray]:
            codes, uniques = self.value_codes(ordered=False)
            cells = self.cells
            ok = self.valid()
            # value * cells + cell, sorted: uint32 when it fits (sorts ~2x faster than int64)
            dtype: Any = np.uint32 if len(uniques) * cells.n < 1 << 32 else np.int64
            key: np.ndarray = codes.astype(dtype) if ok is None else codes[ok].astype(dtype)
            np.multiply(key, dtype(cells.n), out=key)
            key += cells.row_cell.astype(dtype) if ok is None else cells.row_cell[ok].astype(dtype)
            key.sort()
            keep = np.empty(len(key), dtype=bool)
            keep[:1] = True
            np.not_equal(key[1:], key[:-1], out=keep[1:])
            key = key[keep]
            del keep
            cell = (key % dtype(cells.n)).astype(np.intp)
            key //= dtype(cells.n)                            # the value
            same = np.zeros(len(cell), dtype=bool)
            np.equal(key[1:], key[:-1], out=same[:-1])
            del key
            e = cells.ent[cell]
            same[:-1] &= e[1:] == e[:-1]
            return cell, same
        return self._get("distinct", make)


# ------------------------------------------------------------------------------------------------
# the engine


def _aggregate(col: _Column, a: AggregationSpec, w: int, cells: _Cells, snaps: _Snaps,
               ts: np.ndarray) -> np.ndarray:
    import numpy as np

    lo, hi = snaps.lo[w], snaps.hi
    fn = a.function
    if fn == "count_distinct":
        return _count_distinct(col, w, cells, snaps, lo)
    if fn == "last":
        return _last(col, cells, snaps, lo, ts)
    if fn == "share":
        codes, uniques = col.value_codes(ordered=False)   # first: its nulls give the non-null counts
        hit = np.flatnonzero(_equal_mask(uniques, a.match))
        m = codes == hit[0] if len(hit) == 1 else np.isin(codes, hit)
        match = _prefix(np.bincount(cells.row_cell[m], minlength=cells.n))
        nnp = col.nn()
        n = nnp[hi] - nnp[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (match[hi] - match[lo]) / n, np.nan)
    if fn != "count":
        col.x0(a.name)   # raises for a non-numeric column, naming the feature
    nnp = col.nn()
    n = nnp[hi] - nnp[lo]
    if fn == "count":
        return n
    if fn in ("sum", "mean"):
        s = col.sums(a.name).window(snaps, lo)
        s[n == 0] = 0.0
        inf = col.infinities(a.name)
        if inf is not None:     # as float addition: +inf, -inf, or NaN with both
            pos, neg = inf[0][hi] - inf[0][lo] > 0, inf[1][hi] - inf[1][lo] > 0
            s[pos], s[neg], s[pos & neg] = np.inf, -np.inf, np.nan
        if fn == "sum":
            return s
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / n, np.nan)
    if fn in ("min", "max"):
        ufunc = np.minimum if fn == "min" else np.maximum
        if (n > 0).all():
            return _window_extreme(col.extreme(a.name, ufunc), lo, hi, ufunc)
        res = np.full(len(lo), np.nan)
        has = np.flatnonzero(n > 0)
        res[has] = _window_extreme(col.extreme(a.name, ufunc), lo[has], hi[has], ufunc)
        return res
    if fn == "std":
        return _std(col, a, snaps, lo, n)
    raise ValueError(f"feature view {col.view.name!r}, feature {a.name!r}: unknown function {fn!r}")


def _equal_mask(uniques: Any, match: Any) -> np.ndarray:
    """Elementwise uniques == match as a plain bool array (a comparison that fails is False)."""
    import numpy as np
    import pandas as pd

    try:
        eq = pd.Series(uniques) == match
    except TypeError:
        return np.zeros(len(uniques), dtype=bool)
    return eq.fillna(False).to_numpy(dtype=bool)


def _std(col: _Column, a: AggregationSpec, snaps: _Snaps, lo: np.ndarray, n: np.ndarray) -> np.ndarray:
    import numpy as np

    lin, sq = col.moments(a.name)
    s, q = lin.window(snaps, lo), sq.window(snaps, lo)
    nf = np.maximum(n, 1).astype(np.float64)
    m2 = q - s * s / nf
    # The one-pass m2 loses ~ cells * eps * (the entity's sum |d| and sum d**2) to rounding; where that
    # could exceed 1e-11 of m2, recompute the row two-pass from per-cell (count, mean, M2).
    eps = np.finfo(np.float64).eps
    e = snaps.ent
    bound = 4 * eps * (snaps.hi - lo + 2) * (sq.scale[e] + 2 * np.abs(s) / nf * lin.scale[e])
    bad = np.flatnonzero((n >= 2) & (m2 <= bound * 1e11))
    if len(bad):
        m2[bad] = _exact_m2(col, a, lo[bad], snaps.hi[bad])
    inf = col.infinities(a.name)
    if inf is not None:     # an infinite value makes the deviations, hence the std, NaN
        m2[(inf[0][snaps.hi] - inf[0][lo]) + (inf[1][snaps.hi] - inf[1][lo]) > 0] = np.nan
    with np.errstate(invalid="ignore"):
        return np.where(n >= 2, np.sqrt(np.maximum(m2, 0.0) / np.maximum(n - 1, 1)), np.nan)


def _exact_m2(col: _Column, a: AggregationSpec, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum of squared deviations over cells [lo, hi) per row, merging the cells' (n, mean, M2) around the
    window's own mean: sum(M2_i) + sum(n_i (mean_i - mean)**2), as a two-pass computation would."""
    import numpy as np

    need = np.zeros(col.cells.n + 1, dtype=np.int64)
    np.add.at(need, lo, 1)
    np.add.at(need, hi, -1)
    cmean, cm2 = col.cell_m2(a.name, np.cumsum(need[:-1]) > 0)
    cn = col.cell_nn()
    out = np.empty(len(lo))
    lens = hi - lo
    start = 0
    while start < len(lo):   # batches of at most _EXACT_BATCH expanded cells (at least one row)
        stop = start + max(1, int(np.searchsorted(np.cumsum(lens[start:]), _EXACT_BATCH, side="right")))
        ln = lens[start:stop]
        seg = np.repeat(np.arange(stop - start), ln)
        cell = np.repeat(lo[start:stop] - (np.cumsum(ln) - ln), ln) + np.arange(int(ln.sum()))
        w_n = cn[cell].astype(np.float64)
        n = np.bincount(seg, w_n, minlength=stop - start)
        mean = np.bincount(seg, w_n * cmean[cell], minlength=stop - start) / np.maximum(n, 1)
        dev = cmean[cell] - mean[seg]
        out[start:stop] = np.bincount(seg, cm2[cell] + w_n * dev * dev, minlength=stop - start)
        start = stop
    return out


def _count_distinct(col: _Column, w: int, cells: _Cells, snaps: _Snaps, lo: np.ndarray) -> np.ndarray:
    """Exact distinct non-null values in each window. Per entity and value, an occurrence in bucket b
    counts for the windows ending in [b, min(b + w, next occurrence) - 1]: +1 at its cell, -1 either at
    the cell of the next occurrence (when within w) or once the window has left its cell (cells < lo)."""
    import numpy as np

    cell, same = col.distinct_pairs()
    b = cells.bucket[cell]
    renewed = np.zeros(len(cell), dtype=bool)
    renewed[:-1] = same[:-1] & (b[1:] - b[:-1] <= w)
    delta = np.bincount(cell, minlength=cells.n) - np.bincount(cell[1:][renewed[:-1]], minlength=cells.n)
    dp, ep = _prefix(delta), _prefix(np.bincount(cell[~renewed], minlength=cells.n))
    return (dp[snaps.hi] - dp[snaps.first]) - (ep[lo] - ep[snaps.first])


def _last(col: _Column, cells: _Cells, snaps: _Snaps, lo: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The latest non-null value (the largest at a tie) of the window's latest cell that has one."""
    import numpy as np

    numeric = col.numeric()
    if numeric:
        key, ok = col.x0("last")
    else:
        codes, uniques = col.value_codes(ordered=True)
        key, ok = codes.astype(np.float64), (None if codes.min(initial=0) >= 0 else codes >= 0)
    rc = cells.row_cell
    never = np.iinfo(np.int64).min
    tmax = np.full(cells.n, never)
    if ok is None:
        np.maximum.at(tmax, rc, ts)
    else:
        np.maximum.at(tmax, rc[ok], ts[ok])
    t = tmax[rc]
    at = t == ts
    if ok is not None:
        at &= ok
    vals = t.view(np.float64)        # reuse the buffer: the candidates' values, -inf elsewhere
    np.copyto(vals, key)
    vals[~at] = -np.inf
    best = np.full(cells.n, -np.inf)
    np.maximum.at(best, rc, vals)
    del t, vals, at
    latest = np.maximum.accumulate(np.where(tmax > never, np.arange(cells.n), -1))
    c = latest[np.maximum(snaps.hi - 1, 0)]
    valid = (snaps.hi > lo) & (c >= lo)
    if numeric:
        return np.where(valid, best[c], np.nan)
    values = np.asarray(uniques, dtype=object)
    res = np.full(len(lo), None, dtype=object)
    res[valid] = values[best[c[valid]].astype(np.int64)]
    return res


def _compute(events: pd.DataFrame, view: ViewSpec, lo_ns: int, hi_ns: int, g_ns: int) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    ts = _utc_ns(events[view.timestamp])
    ok = ts >= lo_ns        # NaT is the smallest int64: out of range too
    ok &= ts < hi_ns
    idx = None if ok.all() else np.flatnonzero(ok)
    del ok

    def pick(name: str) -> Any:
        col = events[name]
        arr = col.array if isinstance(col.dtype, pd.api.extensions.ExtensionDtype) else col.to_numpy()
        return arr if idx is None else arr[idx]

    ent, key_values = _entity_codes([pick(k) for k in view.join_keys])
    ts = ts if idx is None else ts[idx]
    if (ent < 0).any():   # null keys
        pos = np.flatnonzero(ent >= 0)
        idx = pos if idx is None else idx[pos]
        ent, ts = ent[pos], ts[pos]
    if not len(ent):
        return _empty(events, view)
    n_ent = len(key_values[0])
    n_buckets = (hi_ns - lo_ns) // g_ns
    lookback = int(view.lookback / view.granularity)
    ck = ts - lo_ns
    ck //= g_ns
    ck += ent.astype(np.int64) * n_buckets
    del ent
    cells = _build_cells(ck, n_ent, n_buckets)
    del ck
    windows = {int(a.window / view.granularity) for a in view.aggregations}
    snaps = _snapshot_rows(cells, lookback, lookback - 1, windows)   # the first snapshot's window ends at start
    cells.cum0 = None     # every lookup is done
    if not len(snaps.ent):
        return _empty(events, view)

    frame: dict[str, Any] = {k: values[snaps.ent] for k, values in zip(view.join_keys, key_values, strict=True)}
    frame[view.feature_timestamp] = _utc_index((snaps.last.astype(np.int64) + 1) * g_ns + lo_ns)
    # free what an aggregation built once no later one needs it: a column's arrays after its last use,
    # its sums/moments/extremes after the last aggregation using them
    last_use = {(a.column, f): i for i, a in enumerate(view.aggregations) for f in ("", *_CACHES.get(a.function, ()))}
    columns: dict[str, _Column] = {}
    for i, a in enumerate(view.aggregations):
        if a.column not in columns:
            columns[a.column] = _Column(view, a.column, pick(a.column), cells, n_ent)
        frame[a.name] = _aggregate(columns[a.column], a, int(a.window / view.granularity), cells, snaps, ts)
        if last_use[(a.column, "")] == i:
            del columns[a.column]
        else:
            for family in _CACHES.get(a.function, ()):
                if last_use[(a.column, family)] == i:
                    columns[a.column].drop(family)
    frame[view.created_timestamp] = _utc_index(np.full(len(snaps.ent), hi_ns))
    return pd.DataFrame(frame, copy=False)


def _utc_index(ns: np.ndarray) -> Any:
    import numpy as np
    import pandas as pd

    return pd.DatetimeIndex(ns.astype(np.int64, copy=False).view("M8[ns]")).tz_localize("UTC").array


def _empty(events: pd.DataFrame, view: ViewSpec) -> pd.DataFrame:
    import pandas as pd

    cols: dict[str, Any] = {}
    for k in view.join_keys:
        cols[k] = pd.Series([], dtype=events[k].dtype if k in events.columns else object)
    utc = pd.DatetimeTZDtype("ns", "UTC")
    cols[view.feature_timestamp] = pd.Series([], dtype=utc)
    for a in view.aggregations:
        if a.function in ("count", "count_distinct"):
            dtype: Any = "int64"
        elif a.function == "last" and a.column in events.columns and not (
                pd.api.types.is_numeric_dtype(events[a.column].dtype)
                or pd.api.types.is_bool_dtype(events[a.column].dtype)):
            dtype = object
        else:
            dtype = "float64"
        cols[a.name] = pd.Series([], dtype=dtype)
    cols[view.created_timestamp] = pd.Series([], dtype=utc)
    return pd.DataFrame(cols)


def compute_view(events: pd.DataFrame, view: ViewSpec, start: datetime, end: datetime) -> pd.DataFrame:
    """Snapshots of `view` for the interval [start, end) (both aligned to the granularity, else ValueError)."""
    problems = check_view(view)
    if problems:
        raise ValueError(f"feature view {view.name!r} is misdeclared:\n  - " + "\n  - ".join(problems))
    g_ns = int(view.granularity / timedelta(microseconds=1)) * 1000
    bad, ns = [], {}
    for which, value in (("start", start), ("end", end)):
        try:
            ns[which] = _aligned_ns(view, which, value)
        except ValueError as err:
            bad.append(str(err))
    if bad:
        raise ValueError("; ".join(bad))
    if ns["end"] < ns["start"]:
        raise ValueError(f"feature view {view.name!r}: end {as_utc(end).isoformat()} is before start "
                         f"{as_utc(start).isoformat()}")
    if events.columns.empty or events.empty or ns["end"] == ns["start"]:
        return _empty(events, view)
    needed = dict.fromkeys([*view.join_keys, view.timestamp, *(a.column for a in view.aggregations)])
    missing = [c for c in needed if c not in events.columns]
    if missing:
        raise ValueError(f"feature view {view.name!r}: column(s) {', '.join(map(repr, missing))} not in the "
                         f"events (columns: {', '.join(map(str, events.columns))}); fix the view's declaration "
                         "or the dataset")
    lo_ns = ns["start"] + g_ns - int(view.lookback / timedelta(microseconds=1)) * 1000
    return _compute(events, view, lo_ns, ns["end"], g_ns)
