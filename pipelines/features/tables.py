"""Feature tables: each computed view's snapshots, one parquet file per interval of its source dataset.

`build_view_table` reads the dataset's validated batches over [start - lookback, end), computes the view
with the generic engine (pipelines/feature_engine.py) and writes `<features root>/<view>/<key>.parquet`,
the files the view's Feast FileSource reads. Re-running an interval rewrites the same file; no
(entity, snapshot time) is ever written twice, within a file or across files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    import pyarrow as pa

    from pipelines.features.declarations import DeclaredView
    from pipelines.storage import Location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewTable:
    view: str
    interval_key: str
    path: str | None     # None: no snapshot in the interval (no file)
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validated_keys(validated_dir: Location) -> list[str]:
    """The interval keys of the validated batches under `validated_dir` (a path or URI), oldest first."""
    return [storage.stem(p) for p in storage.list_files(validated_dir, ".parquet")]


def _time_range(path: Location, column: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """(min, max) of a parquet file's `column` from its statistics; None when they don't say."""
    import pandas as pd

    md = storage.parquet_metadata(path)
    if column not in md.schema.names:
        return None
    col = md.schema.names.index(column)
    stats = [md.row_group(i).column(col).statistics for i in range(md.num_row_groups)]
    if not stats or any(st is None or not st.has_min_max for st in stats):
        return None
    try:
        lo, hi = (pd.Timestamp(x) for x in (min(st.min for st in stats), max(st.max for st in stats)))
    except (TypeError, ValueError):
        return None
    return (lo.tz_localize("UTC") if lo.tzinfo is None else lo, hi.tz_localize("UTC") if hi.tzinfo is None else hi)


def read_validated(validated_dir: Location, timestamp: str, start: datetime, end: datetime,
                   columns: list[str] | None = None,
                   keep: Callable[[pd.DataFrame], Any] | None = None,
                   presence: tuple[str, ...] = ()) -> pd.DataFrame:
    """The clean rows of every validated batch with events in [start, end), filtered to that window.

    Files are skipped by their parquet statistics of `timestamp` (the dataset's event-time column), so
    the cadence of the batches does not matter. `validated_dir` is a local path or a URI. Each file's rows are
    cut to the window as it is read, so memory holds the window, not the files. `keep`: a boolean mask of the
    rows to keep, applied to each file's rows in the window before the files are concatenated (a training
    sample: memory then grows with the rows kept, not the rows read). `presence`: columns read only to count their
    non-null values (a `count` aggregation), each returned as float32 1.0 / NaN (null): a 30-day window of a
    million string ids a day is gigabytes of Python strings, its counts need one value per row.
    """
    import pandas as pd

    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    frames = []
    for path in storage.list_files(validated_dir, ".parquet"):
        rng = _time_range(path, timestamp)
        if rng is not None and (rng[1] < lo or rng[0] >= hi):
            continue
        if presence:
            part = _with_presence(storage.read_table(path, columns=columns), presence).to_pandas()
        else:
            part = storage.read_parquet(path, columns=columns)
        ts = pd.to_datetime(part[timestamp], utc=True)
        inside = ((ts >= lo) & (ts < hi)).to_numpy()
        if not inside.all():
            part = part[inside]
        if keep is not None:
            part = part[keep(part)]
        frames.append(part)
    if not frames:
        return pd.DataFrame(columns=columns) if columns else pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _with_presence(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in columns:
        if name in table.column_names:
            i = table.column_names.index(name)
            flag = pc.if_else(pc.is_valid(table[name]), pa.scalar(1.0, pa.float32()), pa.scalar(None, pa.float32()))
            table = table.set_column(i, name, flag)
    return table


def build_view_table(view: DeclaredView, validated_dir: Location, features_root: Location,
                     start: datetime, end: datetime, key: str) -> ViewTable:
    """Compute `view`'s snapshots for [start, end) and write them as the interval's table. Idempotent.

    Refuses (ValueError naming the view and the keys) to write a table that would put two rows with the
    same (entity, snapshot time) into the view's folder, within the file or across files.
    """
    from pipelines.feature_engine import compute_view

    spec = view.engine
    history = read_validated(validated_dir, spec.timestamp, start + spec.granularity - spec.lookback, end,
                             columns=_needed(view), presence=_counted_only(view))
    return _write_table(view, features_root, compute_view(history, spec, start, end), start, end, key)


def build_view_tables(view: DeclaredView, validated_dir: Location, features_root: Location,
                      intervals: list[tuple[datetime, datetime, str]],
                      max_span: timedelta | None = None) -> list[ViewTable]:
    """The tables of several intervals (start, end, key), in the order given, each as `build_view_table` writes it.

    Contiguous intervals are computed in one pass over their events: built one by one, N daily tables of a view
    with a 30-day window read N x 30 days of events; together, N + 30 (a backfill, a month of history landed at
    once, the later tables a late batch makes stale). A pass spans at most `max_span` (default: the view's
    lookback, so a pass reads at most two lookbacks of events). Each interval's file holds the snapshots stamped in
    (start, end], created at its `end`: the same rows as built alone (sums to floating-point rounding: the engine's
    prefix sums start elsewhere).
    """
    from pipelines.feature_engine import compute_view

    spec = view.engine
    cap = max_span or max(spec.lookback, spec.granularity)
    runs: list[list[tuple[datetime, datetime, str]]] = []
    for iv in sorted(intervals):
        if runs and runs[-1][-1][1] == iv[0] and iv[1] - runs[-1][0][0] <= cap:
            runs[-1].append(iv)
        else:
            runs.append([iv])
    built: dict[str, ViewTable] = {}
    for run in runs:
        if len(run) == 1:
            s, e, k = run[0]
            built[k] = build_view_table(view, validated_dir, features_root, s, e, k)
            continue
        lo, hi = run[0][0], run[-1][1]
        history = read_validated(validated_dir, spec.timestamp, lo + spec.granularity - spec.lookback, hi,
                                 columns=_needed(view), presence=_counted_only(view))
        snap = compute_view(history, spec, lo, hi)
        del history
        import pandas as pd

        stamp = snap[spec.feature_timestamp]
        for s, e, k in run:
            part = snap[(stamp > pd.Timestamp(s)) & (stamp <= pd.Timestamp(e))].reset_index(drop=True)
            part[spec.created_timestamp] = pd.Series(pd.Timestamp(e), index=part.index).astype(
                snap[spec.created_timestamp].dtype)
            built[k] = _write_table(view, features_root, part, s, e, k)
        log.info("feature view %s: %d tables %s..%s built in one pass", view.name, len(run), run[0][2], run[-1][2])
    return [built[k] for _, _, k in intervals]


def _needed(view: DeclaredView) -> list[str]:
    spec = view.engine
    return [*dict.fromkeys([*spec.join_keys, spec.timestamp, *(a.column for a in spec.aggregations)])]


def _counted_only(view: DeclaredView) -> tuple[str, ...]:
    """The source columns the view only counts (every aggregation on them is `count`): read as presence flags."""
    spec = view.engine
    used = {a.column for a in spec.aggregations}
    return tuple(sorted(c for c in used if c not in (*spec.join_keys, spec.timestamp)
                        and all(a.function == "count" for a in spec.aggregations if a.column == c)))


def _write_table(view: DeclaredView, features_root: Location, snap: pd.DataFrame, start: datetime, end: datetime,
                 key: str) -> ViewTable:
    spec = view.engine
    out = storage.join(features_root, view.name, f"{key}.parquet")
    marker = _empty_marker(features_root, view.name, key)
    if snap.empty:
        storage.delete(out)
        storage.write_text("", marker)   # built, and empty: not "never built" (see stale_keys)
        log.info("feature view %s: no snapshot for %s..%s (no events in the lookback)", view.name, start, end)
        return ViewTable(view.name, key, None, 0)
    keys = list(spec.join_keys)
    _check_unique(snap, view.name, keys, spec.feature_timestamp, out)
    _check_no_overlap(snap, view.name, keys, spec.feature_timestamp, out)
    storage.write_parquet(snap, out)
    storage.delete(marker)
    log.info("feature table %s: %d snapshots for %s..%s", out, len(snap), start, end)
    return ViewTable(view.name, key, str(out), len(snap))


def dependent_keys(view: DeclaredView, table_keys: list[str], start: datetime, end: datetime) -> list[str]:
    """Keys of the view's existing tables AFTER [start, end) whose snapshots see events of [start, end).

    A snapshot at t sees [t - W, t): events of [start, end) reach every snapshot up to end + lookback. When a
    past batch is (re-)validated, these tables are rebuilt too, so no snapshot misses its late events.
    """
    horizon = end + view.lookback
    out = []
    for k in table_keys:
        try:
            t = datetime.fromisoformat(k).replace(tzinfo=start.tzinfo)
        except ValueError:
            continue
        if end <= t < horizon:
            out.append(k)
    return sorted(out)


def _empty_marker(features_root: Location, view: str, key: str) -> str:
    """Where a build that found no snapshot for the interval says so (outside the view's folder, which Feast reads)."""
    return storage.join(features_root, "_empty", view, key)


def stale_keys(view: DeclaredView, validated_dir: Location, features_root: Location, cadence: str) -> list[str]:
    """The interval keys of `view` whose table is missing or older than a validated batch it reads.

    The table of [s, e) reads the batches with events in [s + granularity - lookback, e): it is current when it
    was written (or found empty) after every one of them was. So this finds an interval whose build never ran
    (an asset event lost in a burst, a features run that failed) and a table built before a batch in its
    lookback was (re-)validated, whatever order batches came in. Cheap: two listings per view and dataset.
    """
    from pipelines.landing import next_tick
    from pipelines.layout import parse_key

    batches = []
    for path, (_, mtime) in storage.list_versions(validated_dir, ".parquet").items():
        start = parse_key(storage.stem(path))
        batches.append((storage.stem(path), start, next_tick(cadence, start), mtime))
    built = {storage.stem(p): v[1] for p, v in storage.list_versions(storage.join(features_root, view.name),
                                                                      ".parquet").items()}
    built.update({storage.name(p): v[1] for p, v in storage.list_versions(
        storage.join(features_root, "_empty", view.name)).items() if storage.name(p) not in built})
    reach = view.engine.granularity - view.lookback
    out = []
    for key, start, end, _ in batches:
        when = built.get(key)
        if when is None or any(mtime > when for _, b_start, b_end, mtime in batches
                               if b_start < end and b_end > start + reach):
            out.append(key)
    return out


def catch_up(view: DeclaredView, validated_dir: Location, features_root: Location, cadence: str,
             skip: tuple[str, ...] = ()) -> list[ViewTable]:
    """Build every stale table of `view` (see `stale_keys`) except `skip`; idempotent, oldest first."""
    from pipelines.landing import next_tick
    from pipelines.layout import parse_key

    todo = []
    for key in stale_keys(view, validated_dir, features_root, cadence):
        if key in skip:
            continue
        start = parse_key(key)
        log.warning("feature view %s: table %s is missing or older than a validated batch it reads; rebuilding it",
                    view.name, key)
        todo.append((start, next_tick(cadence, start), key))
    return build_view_tables(view, validated_dir, features_root, todo)


def table_keys(features_root: Location, view: str) -> list[str]:
    return [storage.stem(p) for p in storage.list_files(storage.join(features_root, view), ".parquet")]


def _check_unique(snap: pd.DataFrame, view: str, keys: list[str], ts: str, out: Location) -> None:
    """A table must hold one row per (entity, snapshot time): Feast would otherwise pick one by created time."""
    dup = snap.duplicated([*keys, ts], keep=False)
    if dup.any():
        pairs = snap.loc[dup, [*keys, ts]].drop_duplicates().head(5)
        shown = ", ".join("(" + ", ".join(v.isoformat() if hasattr(v, "isoformat") else str(v) for v in r) + ")"
                          for r in pairs.itertuples(index=False))
        raise ValueError(f"feature view {view}: {int(dup.sum())} rows share ({', '.join(keys)}, {ts}), e.g. {shown}; "
                         f"refusing to write {out}. The engine must emit one snapshot per entity and time: "
                         "report this as a Flywheel bug rather than rely on Feast's created-time tie-break.")


def _check_no_overlap(snap: pd.DataFrame, view: str, keys: list[str], ts: str, out: Location) -> None:
    """No other file of the view may hold the same (entity, snapshot time): one snapshot, one file."""
    lo, hi = snap[ts].min(), snap[ts].max()
    for other in storage.list_files(storage.parent(out), ".parquet"):
        if storage.name(other) == storage.name(out):
            continue
        rng = _time_range(other, ts)
        if rng is not None and (rng[1] < lo or rng[0] > hi):
            continue
        theirs = storage.read_parquet(other, columns=[*keys, ts])
        shared = snap[[*keys, ts]].merge(theirs, on=[*keys, ts])
        if not shared.empty:
            first = shared.iloc[0]
            raise ValueError(
                f"feature view {view}: {len(shared)} snapshots for {storage.name(out)} are already in {other} "
                f"(e.g. {dict(first[keys])} at {first[ts].isoformat()}); the same (entity, time) in two "
                f"files would be resolved by created time, not by you. Rebuild that interval under its own key "
                f"({storage.stem(other)}), or delete {other} if it is stale.")


def sync_feature_tables(features_root: Location, cache_root: Path, views: list[str]) -> int:
    """Make the local cache Feast reads (`cache_root/<view>/*.parquet`) equal the store's tables.

    Copies the table files of `views` from `features_root` (a folder or s3:// prefix) that are new or
    were rewritten since cached (size or modification time differ) and removes cached files the store
    no longer has; returns the number of files copied. Nothing to do when the store is the cache
    itself (the embedded default).
    """
    if not storage.is_remote(features_root) and storage.local_path(features_root).resolve() == cache_root.resolve():
        return 0
    copied = 0
    for view in views:
        files = storage.list_files(storage.join(features_root, view), ".parquet")
        wanted = {storage.name(f) for f in files}
        folder = cache_root / view
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.parquet"):
            if stale.name not in wanted:
                stale.unlink()
        for f in files:
            cached = folder / storage.name(f)
            if cached.exists() and storage.version(cached) == storage.version(f):
                continue
            storage.copy(f, cached, keep_mtime=True)
            copied += 1
    log.info("feature tables: %d files of %s synced from %s into %s", copied, ", ".join(views), features_root,
             cache_root)
    return copied


