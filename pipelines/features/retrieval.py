"""Point-in-time training sets: Feast's semantics, run as one DuckDB ASOF JOIN per view.

A row at time s gets, per view of the FeatureService, the latest snapshot stamped <= s of its entity,
if that snapshot is at most the view's TTL old (NaN otherwise); equal stamps are decided by the latest
created timestamp (Feast's documented tie-break). The plan is read from the Feast registry (sources,
timestamps, TTLs, join keys, features), so it is Feast's definitions that decide; `FLYWHEEL_FEAST_RETRIEVAL=feast`
runs Feast's own `get_historical_features` instead (tests/integration/test_feature_store.py holds the
two to the same frame).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.features.store import RETRIEVAL_ENV, feature_store

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)


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


def _utc_literal(at: datetime, up: bool) -> str:
    """`at` as a naive UTC timestamp literal in whole microseconds (rounded `up` or down, so the bound only
    widens): cast to the view column's own type (TIMESTAMP, or TIMESTAMPTZ in the session's UTC), the comparison
    stays a constant one that DuckDB pushes into the parquet scan."""
    import pandas as pd

    stamp = pd.Timestamp(at)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    stamp = stamp.ceil("us") if up else stamp.floor("us")
    return "'" + stamp.tz_localize(None).isoformat(sep=" ") + "'"


def asof_sql(plan: list[ViewRetrieval], ts: str, span: tuple[datetime, datetime] | None = None) -> str:
    """One ASOF LEFT JOIN per view onto `entity_rows` (with `_row`), with Feast's semantics:
    the latest row stamped at or before the row's timestamp, of the same entity, and not older than the
    TTL; equal stamps are decided by the latest created timestamp (Feast's documented tie-break).

    `span` = (earliest, latest) row timestamp: each view then reads only the snapshots that can be live for
    some row, stamped in [earliest - TTL, latest] (no later one is ever picked, no earlier one is within the
    TTL of any row), so a day's join reads a TTL's worth of history, not all of it. Same rows, same values."""
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
        ttl_us = int(v.ttl / timedelta(microseconds=1)) if v.ttl else 0
        if span is not None:
            not_null += f" AND {vt} <= {_utc_literal(span[1], up=True)}"
            if ttl_us:
                not_null += f" AND {vt} >= {_utc_literal(span[0] - timedelta(microseconds=ttl_us), up=False)}"
        ctes.append(f"{a} AS (SELECT {cols} FROM {src} WHERE {not_null} "
                    f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)}, {vt}{latest}) = 1)")
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
        span = (stamp.min(), stamp.max()) if stamp.notna().any() else None
        got = con.sql(asof_sql(plan, ts, span)).to_arrow_table().drop_columns(["_row"]).to_pandas()
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


