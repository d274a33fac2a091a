"""Feature stage: feature tables from validated batches, Feast apply/materialize, PIT training sets.

Feature tables are daily snapshots per entity, stamped at the end of the day they summarise
(a transaction at time t only ever sees snapshots stamped <= t: no leakage). One parquet file per
data interval and view: re-running an interval rewrites the same file; no (entity, event_ts) is ever
written twice.

Feast is the source of the definitions (entities, views, TTLs, feature services in feature_repo/).
Training sets are Feast point-in-time joins; by default they run as one DuckDB ASOF JOIN per view
of the service, built from what the Feast registry says about each view (source, timestamps, TTL,
join keys, features), which is several times faster than Feast's own DuckDB join at 1M rows and gives
the same frame; `FLYWHEEL_FEAST_RETRIEVAL=feast` uses `get_historical_features` itself.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from pipelines.storage import Location

log = logging.getLogger(__name__)

LOOKBACK_DAYS = 30
WARMUP_DAYS = 7    # 7-day features need a week of history before they mean anything
VIEW_ENTITY = {"customer_stats": "customer_id", "merchant_stats": "merchant_id"}
ONLINE_STORE_ENV = "FLYWHEEL_FEAST_ONLINE_STORE"   # sqlite (default) | redis
REDIS_ENV = "FLYWHEEL_FEAST_REDIS"                 # host:port[,db=N,password=...] of the Redis online store
RETRIEVAL_ENV = "FLYWHEEL_FEAST_RETRIEVAL"         # asof (default) | feast: how training sets are joined


@dataclass(frozen=True)
class FeatureTables:
    interval_key: str
    paths: dict[str, str]       # view -> parquet path
    rows: dict[str, int]        # view -> snapshot rows written

    def to_dict(self) -> dict[str, Any]:
        return {"interval_key": self.interval_key, "paths": self.paths, "rows": self.rows}


def validated_keys(validated_dir: Location) -> list[str]:
    """The interval keys of the validated batches under `validated_dir` (a path or URI), oldest first."""
    return [storage.stem(p) for p in storage.list_files(validated_dir, ".parquet")]


def read_validated(validated_dir: Location, start: datetime, end: datetime) -> pd.DataFrame:
    """Clean rows of every validated batch overlapping [start, end), filtered to the window.

    `validated_dir` is a local path or a URI (pipelines/storage.py).
    """
    import pandas as pd

    frames = []
    for path in storage.list_files(validated_dir, ".parquet"):
        try:
            key = datetime.fromisoformat(storage.stem(path)).replace(tzinfo=start.tzinfo)
        except ValueError:
            continue
        if key >= end or key + timedelta(days=8) <= start:
            continue
        frames.append(storage.read_parquet(path))
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    ts = pd.to_datetime(df["event_ts"], utc=True)
    return df[(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))].reset_index(drop=True)


def _daily_grid(df: pd.DataFrame, key: str, days: pd.DatetimeIndex, values: dict[str, pd.Series]
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-entity per-day sums of each value series, as dense (entities x days) arrays."""
    import numpy as np
    import pandas as pd

    entities = np.sort(df[key].unique())
    day = pd.to_datetime(df["event_ts"], utc=True).dt.floor("D")
    di = days.get_indexer(day)
    ei = np.searchsorted(entities, df[key].to_numpy())
    out = {}
    for name, series in values.items():
        grid = np.zeros((len(entities), len(days)))
        np.add.at(grid, (ei, di), series.to_numpy(dtype="float64"))
        out[name] = grid
    return entities, out


def _rolling(grid: np.ndarray, window: int) -> np.ndarray:
    import numpy as np

    c = np.cumsum(np.pad(grid, ((0, 0), (1, 0))), axis=1)
    idx = np.arange(1, grid.shape[1] + 1)
    return c[:, idx] - c[:, np.maximum(idx - window, 0)]


def _rolling_max(grid: np.ndarray, window: int) -> np.ndarray:
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(grid, ((0, 0), (window - 1, 0)))
    return sliding_window_view(padded, window, axis=1).max(axis=2)


def compute_snapshots(history: pd.DataFrame, view: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Daily snapshots of `view` for the days in [start, end), from `history` (>= 30 days before)."""
    import numpy as np
    import pandas as pd

    if view not in VIEW_ENTITY:
        raise ValueError(f"unknown feature view {view!r}; known: {sorted(VIEW_ENTITY)}")
    key = VIEW_ENTITY[view]
    first = pd.Timestamp(start).floor("D") - pd.Timedelta(days=LOOKBACK_DAYS)
    days = pd.date_range(first, pd.Timestamp(end).floor("D") - pd.Timedelta(days=1), freq="D", tz="UTC")
    out_days = days >= pd.Timestamp(start).floor("D")
    if history.empty:
        return pd.DataFrame()
    h_day = pd.to_datetime(history["event_ts"], utc=True).dt.floor("D")
    # only rows inside [first day, last day]: anything else would land on a wrong day (index -1)
    h = history[history[key].notna() & (h_day >= days[0]) & (h_day <= days[-1])]
    one = pd.Series(np.ones(len(h)), index=h.index)
    if view == "customer_stats":
        ents, g = _daily_grid(h, key, days, {"n": one, "amt": h["amount"]})
        daily_max = np.zeros_like(g["amt"])
        # daily max amount per entity/day
        day = pd.to_datetime(h["event_ts"], utc=True).dt.floor("D")
        mx = h.assign(_d=days.get_indexer(day), _e=np.searchsorted(ents, h[key].to_numpy())) \
              .groupby(["_e", "_d"])["amount"].max()
        daily_max[mx.index.get_level_values(0), mx.index.get_level_values(1)] = mx.to_numpy()
        n30 = _rolling(g["n"], 30)
        cols = {
            "cust_txn_count_1d": g["n"].astype("int64"),
            "cust_txn_count_7d": _rolling(g["n"], 7).astype("int64"),
            "cust_amount_sum_7d": _rolling(g["amt"], 7),
            "cust_amount_mean_30d": np.divide(_rolling(g["amt"], 30), n30, out=np.full_like(n30, np.nan),
                                              where=n30 > 0),
            "cust_amount_max_7d": _rolling_max(daily_max, 7),
        }
        active = n30 > 0
    elif view == "merchant_stats":
        wallet = (h["channel"] == "wallet").astype("float64")
        ents, g = _daily_grid(h, key, days, {"n": one, "amt": h["amount"], "wallet": wallet})
        n7 = _rolling(g["n"], 7)
        cols = {
            "merch_txn_count_7d": n7.astype("int64"),
            "merch_amount_mean_7d": np.divide(_rolling(g["amt"], 7), n7, out=np.full_like(n7, np.nan),
                                              where=n7 > 0),
            "merch_wallet_share_7d": np.divide(_rolling(g["wallet"], 7), n7, out=np.full_like(n7, np.nan),
                                               where=n7 > 0),
        }
        active = n7 > 0
    else:
        raise ValueError(f"unknown feature view {view!r}; known: {sorted(VIEW_ENTITY)}")
    sel = active[:, out_days]
    e_idx, d_idx = np.nonzero(sel)
    snap_days = days[out_days]
    frame = {key: ents[e_idx].astype("int64"),
             "event_ts": snap_days[d_idx] + pd.Timedelta(days=1)}
    for name, arr in cols.items():
        frame[name] = arr[:, out_days][e_idx, d_idx]
    df = pd.DataFrame(frame)
    df["created_ts"] = pd.Timestamp(end)   # deterministic: the interval end, never now()
    return df.sort_values(["event_ts", key], kind="stable").reset_index(drop=True)


def _check_unique(snap: pd.DataFrame, view: str, key: str, out: Location) -> None:
    """A table must hold one row per (entity, event_ts): Feast would otherwise pick one by created_ts."""
    dup = snap.duplicated([key, "event_ts"], keep=False)
    if dup.any():
        pairs = snap.loc[dup, [key, "event_ts"]].drop_duplicates().head(5)
        shown = ", ".join(f"({k}, {t.isoformat()})" for k, t in pairs.itertuples(index=False))
        raise ValueError(f"feature view {view}: {int(dup.sum())} rows share ({key}, event_ts), e.g. {shown}; "
                         f"refusing to write {out}. compute_snapshots must emit one snapshot per entity and "
                         "day: fix the computation rather than rely on Feast's created_ts tie-break.")


def _event_ts_range(path: Location) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """(min, max) of a feature file's event_ts from its parquet statistics; None when they don't say."""
    import pandas as pd

    md = storage.parquet_metadata(path)
    if "event_ts" not in md.schema.names:
        return None
    col = md.schema.names.index("event_ts")
    stats = [md.row_group(i).column(col).statistics for i in range(md.num_row_groups)]
    if not stats or any(st is None or not st.has_min_max for st in stats):
        return None
    try:
        lo, hi = (pd.Timestamp(x) for x in (min(st.min for st in stats), max(st.max for st in stats)))
    except (TypeError, ValueError):
        return None
    return (lo, hi) if lo.tzinfo is not None and hi.tzinfo is not None else None


def _check_no_overlap(snap: pd.DataFrame, view: str, key: str, out: Location) -> None:
    """No other file of the view may hold the same (entity, event_ts): one snapshot, one file."""
    lo, hi = snap["event_ts"].min(), snap["event_ts"].max()
    for other in storage.list_files(storage.parent(out), ".parquet"):
        if storage.name(other) == storage.name(out):
            continue
        rng = _event_ts_range(other)
        if rng is not None and (rng[1] < lo or rng[0] > hi):
            continue
        theirs = storage.read_parquet(other, columns=[key, "event_ts"])
        shared = snap[[key, "event_ts"]].merge(theirs, on=[key, "event_ts"])
        if not shared.empty:
            first = shared.iloc[0]
            raise ValueError(
                f"feature view {view}: {len(shared)} snapshots for {storage.name(out)} are already in {other} "
                f"(e.g. {key}={first[key]} at {first['event_ts'].isoformat()}); the same (entity, event_ts) in two "
                f"files would be resolved by created_ts, not by you. Rebuild that interval under its own key "
                f"({storage.stem(other)}), or delete {other} if it is stale.")


def build_feature_tables(validated_dir: Location, features_root: Location, views: list[str],
                         start: datetime, end: datetime, key: str) -> FeatureTables:
    """Write one snapshot file per view for [start, end). Idempotent: same inputs, same files.

    `features_root` is a folder or an s3:// prefix (one sub-folder per view). Refuses (ValueError
    naming the view and the keys) to write a table that would put two rows with the same
    (entity, event_ts) into the view's folder, within the file or across files.
    """
    history = read_validated(validated_dir, start - timedelta(days=LOOKBACK_DAYS), end)
    paths, rows = {}, {}
    for view in views:
        snap = compute_snapshots(history, view, start, end)
        out = storage.join(features_root, view, f"{key}.parquet")
        if snap.empty:
            storage.delete(out)
            rows[view] = 0
            continue
        _check_unique(snap, view, VIEW_ENTITY[view], out)
        _check_no_overlap(snap, view, VIEW_ENTITY[view], out)
        storage.write_parquet(snap, out)
        paths[view], rows[view] = str(out), len(snap)
        log.info("feature table %s: %d snapshots for %s..%s", out, len(snap), start, end)
    return FeatureTables(key, paths, rows)


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


# ------------------------------------------------------------------------------------------------
# Feast: configuration, apply, materialize


def repo_config(repo_path: Path) -> RepoConfig:
    """feature_store.yaml with ${VAR}s expanded, and the online store chosen by the environment.

    FLYWHEEL_FEAST_ONLINE_STORE=sqlite (default) keeps the yaml's SQLite store at FLYWHEEL_FEAST_ONLINE;
    FLYWHEEL_FEAST_ONLINE_STORE=redis replaces it with Redis at FLYWHEEL_FEAST_REDIS (host:port[,db=N,...]).
    """
    import yaml
    from feast.repo_config import RepoConfig

    yaml_path = repo_path / "feature_store.yaml"
    raw = yaml.safe_load(os.path.expandvars(yaml_path.read_text()))
    kind = (os.environ.get(ONLINE_STORE_ENV) or "sqlite").strip().lower()
    if kind == "redis":
        conn = (os.environ.get(REDIS_ENV) or "").strip()
        if not conn:
            raise ValueError(f"{ONLINE_STORE_ENV}=redis needs {REDIS_ENV}=host:port (e.g. 127.0.0.1:6379); "
                             "see .env.example.")
        raw["online_store"] = {"type": "redis", "connection_string": conn}
    elif kind != "sqlite":
        raise ValueError(f"{ONLINE_STORE_ENV}={kind!r} is not supported: use sqlite (default) or redis.")
    paths = [part.get("path") if isinstance(part, dict) else part
             for part in (raw.get("registry"), raw.get("online_store"))]
    unset = sorted({m for v in paths if isinstance(v, str) for m in re.findall(r"\$\{(\w+)\}", v)})
    if unset:
        raise ValueError(f"{yaml_path}: set {', '.join(unset)} in the environment (see .env.example).")
    config = RepoConfig(**raw)
    config.repo_path = repo_path
    return config


def feature_store(repo_path: Path) -> FeatureStore:
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_path), config=repo_config(repo_path))


def _definitions(repo_path: Path) -> list[Any]:
    from feast import Entity, FeatureService, FeatureView

    spec = importlib.util.spec_from_file_location("flywheel_feature_definitions", repo_path / "definitions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [v for v in vars(module).values() if isinstance(v, (Entity, FeatureView, FeatureService))]


def apply_feature_repo(repo_path: Path) -> list[str]:
    """Register the repo's definitions (the programmatic `feast apply`). Idempotent."""
    store = feature_store(repo_path)
    objects = _definitions(repo_path)
    store.apply(objects)
    return sorted(getattr(o, "name", "?") for o in objects)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def materialize(repo_path: Path, views: list[str], start: datetime, end: datetime,
                tables: tuple[Location, Path] | None = None) -> dict[str, str]:
    """Load the latest feature values of [start, end] into the online store; returns view -> end used.

    `tables` = (store root of the feature tables, local cache Feast reads): synced first.
    A backfill (an interval older than one already materialized) is widened to end at the newest
    materialized end: the online store then keeps each entity's newest value instead of the
    backfill's older one (the SQLite store overwrites unconditionally; Redis compares timestamps).
    """
    if tables:
        sync_feature_tables(tables[0], tables[1], views)
    store = feature_store(repo_path)
    used = {}
    for view in views:
        done = [_utc(e) for _, e in store.get_feature_view(view).materialization_intervals]
        until = max([_utc(end), *done])
        if until > _utc(end):
            log.info("%s: backfill of %s..%s widened to end at %s (already materialized up to there)",
                     view, start, end, until)
        store.materialize(start_date=start, end_date=until, feature_views=[view])
        used[view] = until.isoformat()
    return used


# ------------------------------------------------------------------------------------------------
# point-in-time training sets


@dataclass(frozen=True)
class ViewRetrieval:
    """What a point-in-time join needs from one feature view, as registered in Feast."""
    view: str
    path: str                           # parquet file or glob of the view's FileSource
    timestamp_field: str
    created_timestamp_column: str | None
    ttl: timedelta | None               # None or 0: no TTL, as in Feast
    join_keys: tuple[str, ...]
    features: tuple[str, ...]


def retrieval_plan(store: FeatureStore, service: str) -> tuple[list[ViewRetrieval], str | None]:
    """The service's views read from the Feast registry; (plan, None), or ([], why the ASOF path can't)."""
    from feast.errors import FeatureViewNotFoundException
    from feast.infra.offline_stores.file_source import FileSource

    fs = store.get_feature_service(service)
    plan = []
    for proj in fs.feature_view_projections:
        if proj.name_alias or proj.join_key_map:
            return [], f"{service}: projection {proj.name} renames (alias or join key map)"
        try:
            fv = store.get_feature_view(proj.name)
        except FeatureViewNotFoundException:  # an on-demand or stream view: Feast's own path handles those
            return [], f"{service}: {proj.name} is not a batch feature view"
        src = fv.batch_source
        if not isinstance(src, FileSource) or src.field_mapping:
            return [], f"{service}: {proj.name} is not a plain FileSource"
        path = src.path
        if "://" in path and not path.startswith("file://"):
            return [], f"{service}: {proj.name} reads {path} (remote)"
        path = path.removeprefix("file://")
        if not Path(path).is_absolute():
            path = str(Path(store.repo_path) / path)
        plan.append(ViewRetrieval(fv.name, path, src.timestamp_field, src.created_timestamp_column or None,
                                  fv.ttl, tuple(fv.join_keys), tuple(f.name for f in proj.features)))
    return plan, None


def _event_timestamp_column(entity_df: pd.DataFrame) -> str:
    """Feast's rule: `event_timestamp` if present, else the only datetime column."""
    import pandas as pd

    if "event_timestamp" in entity_df.columns:
        return "event_timestamp"
    cols = [c for c in entity_df.columns if pd.api.types.is_datetime64_any_dtype(entity_df[c])]
    if len(cols) != 1:
        raise ValueError(f"entity rows need one timestamp column (or one named event_timestamp); found {cols}")
    return str(cols[0])


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def asof_sql(plan: list[ViewRetrieval], ts: str) -> str:
    """One ASOF LEFT JOIN per view onto `entity_rows` (with `_row`), with Feast's semantics:
    the latest row with event_ts <= the row's timestamp, of the same entity, and not older than the
    TTL; equal event_ts are decided by the latest created timestamp (Feast's documented tie-break)."""
    select, ctes, joins = ["e._row"], [], []
    t = _ident(ts)
    for i, v in enumerate(plan):
        a = f"v{i}"
        vt = _ident(v.timestamp_field)
        keys = [_ident(k) for k in v.join_keys]
        cols = ", ".join([*keys, vt, *(_ident(f) for f in v.features)])
        latest = f" ORDER BY {_ident(v.created_timestamp_column)} DESC NULLS LAST" if v.created_timestamp_column else ""
        src = "read_parquet('" + v.path.replace("'", "''") + "')"
        not_null = " AND ".join(f"{c} IS NOT NULL" for c in [*keys, vt])
        ctes.append(f"{a} AS (SELECT {cols} FROM {src} WHERE {not_null} "
                    f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)}, {vt}{latest}) = 1)")
        ttl_us = int(v.ttl / timedelta(microseconds=1)) if v.ttl else 0
        live = f"{a}.{vt} >= e.{t} - to_microseconds({ttl_us})" if ttl_us else f"{a}.{vt} IS NOT NULL"
        for f in v.features:
            select.append(f"CASE WHEN {live} THEN {a}.{_ident(f)} END AS {_ident(f)}")
        on = " AND ".join([*(f"e.{k} = {a}.{k}" for k in keys), f"e.{t} >= {a}.{vt}"])
        joins.append(f"ASOF LEFT JOIN {a} ON {on}")
    return (f"WITH {', '.join(ctes)} SELECT {', '.join(select)} FROM entity_rows e {' '.join(joins)} "
            "ORDER BY e._row")


def historical_features_asof(plan: list[ViewRetrieval], entity_df: pd.DataFrame) -> pd.DataFrame:
    """`entity_df` with the plan's features as of each row's timestamp, in the rows' order."""
    import duckdb
    import numpy as np
    import pandas as pd

    ts = _event_timestamp_column(entity_df)
    keys = sorted({k for v in plan for k in v.join_keys})
    missing = [k for k in keys if k not in entity_df.columns]
    if missing:
        raise ValueError(f"entity rows lack the join key(s) {missing} of views {[v.view for v in plan]}")
    names = [f for v in plan for f in v.features]
    clash = sorted(set(names) & set(entity_df.columns))
    if clash:
        raise ValueError(f"entity rows already have the feature column(s) {clash}")
    stamp = entity_df[ts]
    if not isinstance(stamp.dtype, pd.DatetimeTZDtype):
        stamp = pd.to_datetime(stamp, utc=True)   # naive timestamps are UTC, as everywhere in Flywheel
    stamp = stamp.dt.tz_convert("UTC").reset_index(drop=True)
    probe = pd.DataFrame({"_row": np.arange(len(entity_df), dtype="int64"), ts: stamp,
                          **{k: entity_df[k].reset_index(drop=True) for k in keys}})
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("entity_rows", probe)
        got = con.sql(asof_sql(plan, ts)).to_arrow_table().drop_columns(["_row"]).to_pandas()
    finally:
        con.close()
    out = entity_df.reset_index(drop=True).copy()
    out[ts] = stamp
    for name in names:
        out[name] = got[name].to_numpy()
    return out


def _historical_features_feast(store: FeatureStore, service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    fs = store.get_feature_service(service)
    job = store.get_historical_features(entity_df=entity_df.copy(), features=fs)
    return job.to_df()


def historical_features(repo_path: Path, service: str, entity_df: pd.DataFrame,
                        engine: str | None = None) -> pd.DataFrame:
    """Point-in-time join of the FeatureService's features: each row gets, per view, the latest
    snapshot at or before its time and within the view's TTL (NaN where there is none).

    engine `asof` (default; env FLYWHEEL_FEAST_RETRIEVAL) reads the service's views from the Feast
    registry and runs one DuckDB ASOF JOIN per view; `feast` calls FeatureStore.get_historical_features.
    Both give the same frame up to row order (tests/integration/test_feature_store.py holds them to it);
    `asof` keeps the rows' order and falls back to `feast` for sources it does not read.
    """
    engine = (engine or os.environ.get(RETRIEVAL_ENV) or "asof").strip().lower()
    if engine not in ("asof", "feast"):
        raise ValueError(f"{RETRIEVAL_ENV}={engine!r} is not supported: use asof (default) or feast.")
    store = feature_store(repo_path)
    if engine == "asof":
        plan, why_not = retrieval_plan(store, service)
        if why_not is None:
            return historical_features_asof(plan, entity_df)
        log.info("point-in-time join through Feast: %s", why_not)
    return _historical_features_feast(store, service, entity_df)


def online_features(repo_path: Path, service: str, entity_rows: list[dict[str, Any]],
                    as_of: datetime | None = None) -> dict[str, list[Any]]:
    """The service's materialized values for `entity_rows` (serving), from the online store.

    With `as_of` (the serving time), a value older than its view's TTL at `as_of` is None, as the
    training join would have it: the online store keeps an entity's last value forever (an entity
    that stopped having snapshots keeps a stale one), Feast does not check the TTL on reads.
    """
    store = feature_store(repo_path)
    fs = store.get_feature_service(service)
    response = store.get_online_features(features=fs, entity_rows=entity_rows)
    if as_of is None:
        return response.to_dict()
    got = response.to_dict(include_event_timestamps=True)
    at = _utc(as_of).timestamp()
    for proj in fs.feature_view_projections:
        ttl = store.get_feature_view(proj.name).ttl
        for f in proj.features:
            stamps = got.pop(f"{f.name}__ts")
            if ttl:
                oldest = at - ttl.total_seconds()
                got[f.name] = [v if s >= oldest else None for v, s in zip(got[f.name], stamps, strict=True)]
    return got
