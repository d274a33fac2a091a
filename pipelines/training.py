"""Label rows and point-in-time training sets, for any spec.

Two label kinds cover the shipped specs:
- `column`: the label is a column of each landed row (fraud: `is_fraud`), known `delay_days` later;
- `future_sum`: the label is the entity's sum of a column over the next `horizon_days`
  (spend: next-week spend), computed from later batches.
Features always come from the spec's Feast FeatureService: by default through a DuckDB ASOF JOIN built
from the Feast registry's definitions (tested equal to Feast's own `get_historical_features`, which
`FLYWHEEL_FEAST_RETRIEVAL=feast` selects).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.features import (
    LOOKBACK_DAYS,
    WARMUP_DAYS,
    historical_features,
    read_validated,
    sync_feature_tables,
    validated_keys,
)

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)

LABEL = "label"


@dataclass(frozen=True)
class TrainingWindow:
    train_start: datetime
    holdout_start: datetime
    labelled_until: datetime

    @classmethod
    def for_spec(cls, spec: ModelSpec, as_of: datetime) -> TrainingWindow:
        """Labels are known up to `as_of - delay`; the newest `holdout_days` are held out."""
        until = as_of - timedelta(days=spec.label.delay_days)
        hold = until - timedelta(days=spec.holdout_days)
        return cls(hold - timedelta(days=spec.window_days), hold, until)

    def to_dict(self) -> dict[str, str]:
        return {"train_start": self.train_start.isoformat(), "holdout_start": self.holdout_start.isoformat(),
                "labelled_until": self.labelled_until.isoformat()}


@dataclass(frozen=True)
class TrainingSet:
    train_path: str
    holdout_path: str
    train_rows: int
    holdout_rows: int
    train_sha256: str
    holdout_sha256: str
    window: dict[str, str]
    feature_service: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def feature_columns(spec: ModelSpec, repo_path: Path) -> list[str]:
    """The model's inputs, in a fixed order: row features, then the feature service's features."""
    from pipelines.features import feature_store

    store = feature_store(repo_path)
    fs = store.get_feature_service(spec.feature_service)
    names = [f.name for proj in fs.feature_view_projections for f in proj.features]
    return list(spec.row_features) + names


def categorical_columns(spec: ModelSpec) -> dict[str, list[Any]]:
    """Row features with an allowed set in the dataset contract, with their categories."""
    out = {}
    for name in spec.row_features:
        rule = spec.dataset.column(name)
        if rule.type == "string" and rule.allowed:
            out[name] = list(rule.allowed)
    return out


def label_rows(spec: ModelSpec, validated_dir: Location, start: datetime, end: datetime,
               with_label: bool = True) -> pd.DataFrame:
    """Rows to predict for events in [start, end): entity keys, `event_ts`, row features, label."""
    import pandas as pd

    ts = spec.event_timestamp
    if spec.label.kind == "column":
        df = read_validated(validated_dir, start, end)
        if df.empty:
            return df
        keys = [spec.entity_key] + [c for c in ("merchant_id",) if c in df.columns and c != spec.entity_key]
        cols = [spec.dataset.row_id, *keys, ts, *spec.row_features]
        out = df[cols].copy()
        if with_label:
            out[LABEL] = df[spec.label.column].astype("float64")
    elif spec.label.kind == "future_sum":
        horizon = timedelta(days=spec.label.horizon_days)
        hist = read_validated(validated_dir, start - timedelta(days=LOOKBACK_DAYS), end + horizon)
        if hist.empty:
            return hist
        hist_ts = pd.to_datetime(hist[ts], utc=True)
        snaps = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="D", inclusive="left")
        rows = []
        for t in snaps:
            past = hist[(hist_ts >= t - pd.Timedelta(days=LOOKBACK_DAYS)) & (hist_ts < t)]
            ents = pd.Index(past[spec.entity_key].unique(), name=spec.entity_key)
            frame = pd.DataFrame({spec.entity_key: ents.to_numpy(), ts: t})
            if with_label:
                fut = hist[(hist_ts >= t) & (hist_ts < t + horizon)]
                sums = fut.groupby(spec.entity_key)[spec.label.column].sum()
                frame[LABEL] = sums.reindex(ents).fillna(0.0).to_numpy()
            rows.append(frame)
        out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        if not out.empty:
            out.insert(0, "row_id", out[spec.entity_key].astype(str) + "@" + out[ts].dt.strftime("%Y-%m-%d"))
    else:  # pragma: no cover - guarded by the spec loader
        raise ValueError(f"unknown label kind {spec.label.kind!r}")
    out[spec.entity_key] = out[spec.entity_key].astype("int64")
    out[ts] = pd.to_datetime(out[ts], utc=True)
    return out.reset_index(drop=True)


def with_features(spec: ModelSpec, repo_path: Path, rows: pd.DataFrame,
                  tables: tuple[Location, Path] | None = None) -> pd.DataFrame:
    """Join the spec's Feast features onto `rows` as of each row's timestamp.

    `tables` = (store root of the feature tables, the local cache Feast reads): synced first.
    """
    if rows.empty:
        return rows
    if tables:
        sync_feature_tables(tables[0], tables[1], list(spec.feature_views))
    joined = historical_features(repo_path, spec.feature_service, rows)
    sort_key = spec.dataset.row_id if spec.dataset.row_id in joined.columns else "row_id"
    return joined.sort_values([spec.event_timestamp, sort_key], kind="stable").reset_index(drop=True)


def first_batch_start(validated_dir: Location, as_of: datetime) -> datetime | None:
    """Start of the oldest validated batch: feature history begins there."""
    keys = validated_keys(validated_dir)
    if not keys:
        return None
    return datetime.fromisoformat(keys[0]).replace(tzinfo=as_of.tzinfo)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_training_set(spec: ModelSpec, validated_dir: Location, repo_path: Path, as_of: datetime,
                       out_dir: Path, tables: tuple[Location, Path] | None = None) -> TrainingSet:
    """Train and holdout frames for a training run as of `as_of`, written as parquet."""
    window = TrainingWindow.for_spec(spec, as_of)
    first = first_batch_start(validated_dir, as_of)
    if first is not None and window.train_start < first + timedelta(days=WARMUP_DAYS):
        # rows from the first week have half-empty rolling features: a biased training (and drift reference)
        window = TrainingWindow(first + timedelta(days=WARMUP_DAYS), window.holdout_start, window.labelled_until)
    rows = label_rows(spec, validated_dir, window.train_start, window.labelled_until)
    if rows.empty:
        raise ValueError(f"{spec.name}: no validated rows between {window.train_start:%Y-%m-%d} and "
                         f"{window.labelled_until:%Y-%m-%d}; ingest batches for that period first.")
    full = with_features(spec, repo_path, rows, tables)
    ts = full[spec.event_timestamp]
    import pandas as pd

    hold = ts >= pd.Timestamp(window.holdout_start)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, holdout_path = out_dir / "train.parquet", out_dir / "holdout.parquet"
    full[~hold].to_parquet(train_path, index=False)
    full[hold].to_parquet(holdout_path, index=False)
    log.info("%s training set as of %s: %d train rows, %d holdout rows", spec.name, as_of,
             int((~hold).sum()), int(hold.sum()))
    return TrainingSet(str(train_path), str(holdout_path), int((~hold).sum()), int(hold.sum()),
                       _sha256(train_path), _sha256(holdout_path), window.to_dict(), spec.feature_service)
