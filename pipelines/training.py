"""Label rows and point-in-time training sets, for any spec.

Two label kinds:
- `column`: the label is a column of each landed row, known `delay_days` later;
- `future_sum`: the label is the entity's sum of a column over the next `horizon_days`, computed
  from later batches.
Features always come from the spec's Feast FeatureService: by default through a DuckDB ASOF JOIN built
from the Feast registry's definitions (tested equal to Feast's own `get_historical_features`, which
`FLYWHEEL_FEAST_RETRIEVAL=feast` selects).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.features import historical_features, read_validated, sync_feature_tables, validated_keys
from pipelines.util import sha256_file

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


@dataclass(frozen=True)
class ModelViews:
    """What a model reads from its FeatureService: the views, their join keys, the longest lookback."""
    views: tuple[str, ...]
    join_keys: tuple[str, ...]
    lookback: timedelta

    @classmethod
    def of(cls, spec: ModelSpec, repo_path: Path) -> ModelViews:
        from pipelines.features import view_index

        index = view_index(repo_path)
        views = tuple(index["services"].get(spec.feature_service, ()))
        keys = tuple(dict.fromkeys(k for v in views for k in index["views"][v]["join_keys"]))
        lookback = max((index["views"][v]["lookback_s"] for v in views), default=0.0)
        return cls(views, keys, timedelta(seconds=lookback))


def label_problems(spec: ModelSpec, labels: pd.Series) -> pd.Series:
    """The model's own rules on its label, checked where it reads a batch (the dataset gate knows no model):
    a label must be present and, for a binary model, 0 or 1. True where a row breaks them."""
    import pandas as pd

    value = pd.to_numeric(labels, errors="coerce")
    bad = value.isna()
    if spec.task == "binary":
        bad |= ~value.isin([0, 1])
    return bad


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
               with_label: bool = True, views: ModelViews | None = None) -> pd.DataFrame:
    """Rows to predict for events in [start, end): row id, join keys, the event time, row features, label.

    `column` labels: one row per validated event (rows whose label breaks `label_problems` are left out
    and counted in the log). `future_sum` labels: one row per entity active in the views' lookback, at
    each day start in [start, end), labelled with its sum of the column over the next horizon.
    """
    import pandas as pd

    ts = spec.event_timestamp
    views = views or ModelViews((), (spec.entity_key,), timedelta(0))
    keys = list(dict.fromkeys([spec.entity_key, *views.join_keys]))
    if spec.label.kind == "column":
        df = read_validated(validated_dir, ts, start, end)
        if df.empty:
            return df
        # + the columns fairness rules group by (not features: to_matrix_frame never reads them)
        cols = list(dict.fromkeys([spec.dataset.row_id, *keys, ts, *spec.row_features,
                                   *(rule.column for rule in spec.fairness)]))
        out = df[cols].copy()
        if with_label:
            bad = label_problems(spec, df[spec.label.column])
            if bad.any():
                log.warning("%s: %d row(s) of %s..%s left out: label `%s` missing%s", spec.name, int(bad.sum()),
                            start, end, spec.label.column, " or not 0/1" if spec.task == "binary" else "")
            out = out[~bad.to_numpy()].copy()
            out[LABEL] = pd.to_numeric(df.loc[~bad, spec.label.column]).astype("float64").to_numpy()
    elif spec.label.kind == "future_sum":
        extra = [k for k in views.join_keys if k != spec.entity_key]
        if extra:
            raise ValueError(f"{spec.path}: a future_sum label has one row per `{spec.entity_key}`, but the views of "
                             f"{spec.feature_service} are also keyed by {extra}; use a FeatureService whose views are "
                             f"keyed by `{spec.entity_key}` only.")
        horizon = timedelta(days=spec.label.horizon_days)
        active = views.lookback if views.lookback > timedelta(0) else horizon
        hist = read_validated(validated_dir, ts, start - active, end + horizon)
        if hist.empty:
            return hist
        hist_ts = pd.to_datetime(hist[ts], utc=True)
        snaps = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="D", inclusive="left")
        rows = []
        for t in snaps:
            past = hist[(hist_ts >= t - pd.Timedelta(active)) & (hist_ts < t)]
            ents = pd.Index(past[spec.entity_key].unique(), name=spec.entity_key)
            frame = pd.DataFrame({spec.entity_key: ents.to_numpy(), ts: t})
            if with_label:
                fut = hist[(hist_ts >= t) & (hist_ts < t + horizon)]
                sums = pd.to_numeric(fut[spec.label.column], errors="coerce").groupby(fut[spec.entity_key]).sum()
                frame[LABEL] = sums.reindex(ents).fillna(0.0).to_numpy()
            rows.append(frame)
        out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        if not out.empty:
            out.insert(0, "row_id", out[spec.entity_key].astype(str) + "@" + out[ts].dt.strftime("%Y-%m-%d"))
    else:  # pragma: no cover - guarded by the spec loader
        raise ValueError(f"unknown label kind {spec.label.kind!r}")
    if out.empty:
        return out.reset_index(drop=True)
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
        sync_feature_tables(tables[0], tables[1], list(ModelViews.of(spec, repo_path).views))
    joined = historical_features(repo_path, spec.feature_service, rows)
    sort_key = spec.dataset.row_id if spec.dataset.row_id in joined.columns else "row_id"
    return joined.sort_values([spec.event_timestamp, sort_key], kind="stable").reset_index(drop=True)


def first_batch_start(validated_dir: Location, as_of: datetime) -> datetime | None:
    """Start of the oldest validated batch: feature history begins there."""
    keys = validated_keys(validated_dir)
    if not keys:
        return None
    return datetime.fromisoformat(keys[0]).replace(tzinfo=as_of.tzinfo)


def build_training_set(spec: ModelSpec, validated_dir: Location, repo_path: Path, as_of: datetime,
                       out_dir: Path, tables: tuple[Location, Path] | None = None) -> TrainingSet:
    """Train and holdout frames for a training run as of `as_of`, written as parquet."""
    window = TrainingWindow.for_spec(spec, as_of)
    views = ModelViews.of(spec, repo_path)
    first = first_batch_start(validated_dir, as_of)
    warmup = timedelta(days=spec.warmup_days) if spec.warmup_days is not None else views.lookback
    if first is not None and window.train_start < first + warmup:
        # rows right after history starts have half-empty window features: a biased training (and drift reference)
        window = TrainingWindow(first + warmup, window.holdout_start, window.labelled_until)
    rows = label_rows(spec, validated_dir, window.train_start, window.labelled_until, views=views)
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
                       sha256_file(train_path), sha256_file(holdout_path), window.to_dict(), spec.feature_service)
