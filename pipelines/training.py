"""Label rows and point-in-time training sets, for any spec.

Two label kinds:
- `column`: the label is a column of each landed row, known `delay_days` later;
- `future_sum`: the label is the entity's sum of a column over the next `horizon_days`, computed
  from later batches.
Features always come from the spec's Feast FeatureService: by default through a DuckDB ASOF JOIN built
from the Feast registry's definitions (tested equal to Feast's own `get_historical_features`, which
`FLYWHEEL_FEAST_RETRIEVAL=feast` selects).

With `training.sampling` in the spec (pipelines/spec.py `SamplingSpec`), the training rows are sampled as
they are read, before the feature join, so memory and join time follow the rows kept: a row is kept by a
hash of its row id and the seed (`sample_mask`: the same rows on every re-run), and carries the column
WEIGHT (1/fraction for a sampled row, 1 for a row kept whole) that `pipelines.model.fit` trains and early-stops
with. The holdout is never sampled: the gate judges every labelled row of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.features import historical_features, read_validated, sync_feature_tables, validated_keys
from pipelines.util import row_unit_hash, sha256_file, sorted_by

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipelines.spec import ModelSpec, SamplingSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)

LABEL = "label"
WEIGHT = "sample_weight"   # training rows of a sampled training set: how many rows of the window each stands for


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
    sampling: dict[str, Any] | None = None    # `TrainingSample.record()`; None: every training row was kept

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sample_mask(sampling: SamplingSpec, ids: pd.Series, labels: pd.Series | None) -> np.ndarray:
    """True where `sampling` keeps a training row: its row id's hash with the seed falls below the fraction
    (`row_unit_hash`: the same rows on every re-run), or, under `negatives`, its label is not 0 (every positive
    is kept; so is a row whose label is broken, which `label_problems` leaves out afterwards)."""
    import numpy as np
    import pandas as pd

    keep = row_unit_hash(ids, sampling.seed) < sampling.fraction
    if sampling.rule == "negatives":
        if labels is None:
            raise ValueError("training.sampling.negatives needs the label of each row")
        keep |= ~(pd.to_numeric(labels, errors="coerce") == 0).to_numpy()
    return np.asarray(keep, dtype=bool)


def sample_weights(sampling: SamplingSpec, labels: pd.Series) -> np.ndarray:
    """The WEIGHT of each kept training row: 1/fraction for a sampled row (`rows`: every row; `negatives`: the
    rows labelled 0), 1 for a row kept whole (the positives)."""
    import numpy as np

    if sampling.rule == "negatives":
        return np.where(labels.to_numpy(dtype="float64") == 0, sampling.weight, 1.0)
    return np.full(len(labels), sampling.weight)


@dataclass
class TrainingSample:
    """`training.sampling` applied while the rows are read: rows before `holdout_start` are sampled, the holdout
    is kept whole; counts the training rows (with a usable label) before and after."""
    sampling: SamplingSpec
    holdout_start: datetime
    rows_before: int = 0
    rows_after: int = 0

    def keep(self, ids: pd.Series, times: pd.Series, labels: pd.Series | None, usable: np.ndarray) -> np.ndarray:
        """The rows to keep of one read (a batch file): every holdout row, the sampled training rows."""
        import numpy as np
        import pandas as pd

        train = (pd.to_datetime(times, utc=True) < pd.Timestamp(self.holdout_start)).to_numpy()
        keep = ~train
        at = np.flatnonzero(train)
        keep[at] = sample_mask(self.sampling, ids.iloc[at], None if labels is None else labels.iloc[at])
        self.rows_before += int((train & usable).sum())
        self.rows_after += int((train & usable & keep).sum())
        return keep

    def record(self) -> dict[str, Any]:
        """What the MLflow run and the model card say of the sample."""
        return {"rule": self.sampling.rule, "fraction": self.sampling.fraction, "seed": self.sampling.seed,
                "weight": self.sampling.weight, "train_rows_before": self.rows_before,
                "train_rows_after": self.rows_after}


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
               with_label: bool = True, views: ModelViews | None = None,
               sample: TrainingSample | None = None) -> pd.DataFrame:
    """Rows to predict for events in [start, end): row id, join keys, the event time, row features, label.

    `column` labels: one row per validated event (rows whose label breaks `label_problems` are left out
    and counted in the log). `future_sum` labels: one row per entity active in the views' lookback, at
    each day start in [start, end), labelled with its sum of the column over the next horizon.
    `sample`: the training rows are sampled as each batch is read (`TrainingSample.keep`).
    """
    import numpy as np
    import pandas as pd

    ts = spec.event_timestamp
    views = views or ModelViews((), (spec.entity_key,), timedelta(0))
    keys = list(dict.fromkeys([spec.entity_key, *views.join_keys]))
    if spec.label.kind == "column":
        # + the columns fairness rules group by (not features: to_matrix_frame never reads them)
        cols = list(dict.fromkeys([spec.dataset.row_id, *keys, ts, *spec.row_features,
                                   *(rule.column for rule in spec.fairness)]))
        keep = None
        if sample is not None:
            def keep(part: pd.DataFrame) -> np.ndarray:
                labels = part[spec.label.column]
                return sample.keep(part[spec.dataset.row_id], part[ts], labels,
                                   ~label_problems(spec, labels).to_numpy())
        label_too = (with_label or sample is not None) and spec.label.column not in cols
        read = [*cols, spec.label.column] if label_too else cols
        df = read_validated(validated_dir, ts, start, end, columns=read, keep=keep)
        if df.empty:
            return df
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
        if sample is not None and not out.empty:
            out = out[sample.keep(out["row_id"], out[ts], out[LABEL] if with_label else None,
                                  np.ones(len(out), dtype=bool))]
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
    return sorted_by(joined, [spec.event_timestamp, sort_key])


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
    # `training.sampling`: the training rows are sampled as they are read, before the join; the holdout never is
    sample = TrainingSample(spec.sampling, window.holdout_start) if spec.sampling is not None else None
    rows = label_rows(spec, validated_dir, window.train_start, window.labelled_until, views=views, sample=sample)
    if rows.empty:
        raise ValueError(f"{spec.name}: no validated rows between {window.train_start:%Y-%m-%d} and "
                         f"{window.labelled_until:%Y-%m-%d}; ingest batches for that period first.")
    full = with_features(spec, repo_path, rows, tables)
    ts = full[spec.event_timestamp]
    import pandas as pd

    hold = (ts >= pd.Timestamp(window.holdout_start)).to_numpy()
    train = full[~hold]
    if sample is not None:
        train = train.assign(**{WEIGHT: sample_weights(sample.sampling, train[LABEL])})
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, holdout_path = out_dir / "train.parquet", out_dir / "holdout.parquet"
    train.to_parquet(train_path, index=False)
    full[hold].to_parquet(holdout_path, index=False)
    record = sample.record() if sample is not None else None
    log.info("%s training set as of %s: %d train rows%s, %d holdout rows (all of them)", spec.name, as_of,
             len(train), "" if record is None else f" ({record['rule']} sampled at {record['fraction']:g} from "
             f"{record['train_rows_before']}, weight {record['weight']:g})", int(hold.sum()))
    return TrainingSet(str(train_path), str(holdout_path), len(train), int(hold.sum()),
                       sha256_file(train_path), sha256_file(holdout_path), window.to_dict(), spec.feature_service,
                       record)
