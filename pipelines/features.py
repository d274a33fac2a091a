"""Feature stage: feature tables from validated batches, Feast apply/materialize, PIT training sets.

Feature tables are daily snapshots per entity, stamped at the end of the day they summarise
(a transaction at time t only ever sees snapshots stamped <= t: no leakage). One parquet file per
data interval and view: re-running an interval rewrites the same file.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

LOOKBACK_DAYS = 30
WARMUP_DAYS = 7    # 7-day features need a week of history before they mean anything
VIEW_ENTITY = {"customer_stats": "customer_id", "merchant_stats": "merchant_id"}


@dataclass(frozen=True)
class FeatureTables:
    interval_key: str
    paths: dict[str, str]       # view -> parquet path
    rows: dict[str, int]        # view -> snapshot rows written

    def to_dict(self) -> dict[str, Any]:
        return {"interval_key": self.interval_key, "paths": self.paths, "rows": self.rows}


def read_validated(validated_dir: Path, start: datetime, end: datetime) -> pd.DataFrame:
    """Clean rows of every validated batch overlapping [start, end), filtered to the window."""
    import pandas as pd

    frames = []
    for path in sorted(validated_dir.glob("*.parquet")):
        try:
            key = datetime.fromisoformat(path.stem).replace(tzinfo=start.tzinfo)
        except ValueError:
            continue
        if key >= end or key + timedelta(days=8) <= start:
            continue
        frames.append(pd.read_parquet(path))
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


def build_feature_tables(validated_dir: Path, features_root: Path, views: list[str],
                         start: datetime, end: datetime, key: str) -> FeatureTables:
    """Write one snapshot file per view for [start, end). Idempotent: same inputs, same files."""
    history = read_validated(validated_dir, start - timedelta(days=LOOKBACK_DAYS), end)
    paths, rows = {}, {}
    for view in views:
        snap = compute_snapshots(history, view, start, end)
        out = features_root / view / f"{key}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        if snap.empty:
            out.unlink(missing_ok=True)
            rows[view] = 0
            continue
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        snap.to_parquet(tmp, index=False)
        tmp.replace(out)
        paths[view], rows[view] = str(out), len(snap)
        log.info("feature table %s: %d snapshots for %s..%s", out, len(snap), start, end)
    return FeatureTables(key, paths, rows)


def feature_store(repo_path: Path) -> FeatureStore:
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_path))


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


def materialize(repo_path: Path, views: list[str], start: datetime, end: datetime) -> None:
    """Load the interval's latest feature values into the online store."""
    store = feature_store(repo_path)
    store.materialize(start_date=start, end_date=end, feature_views=views)


def historical_features(repo_path: Path, service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join through Feast: each row gets the latest snapshot at or before its time."""
    store = feature_store(repo_path)
    fs = store.get_feature_service(service)
    job = store.get_historical_features(entity_df=entity_df, features=fs)
    return job.to_df()


def online_features(repo_path: Path, service: str, entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    store = feature_store(repo_path)
    return store.get_online_features(features=store.get_feature_service(service),
                                     entity_rows=entity_rows).to_dict()
