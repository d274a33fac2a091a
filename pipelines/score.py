"""Batch scoring with the `champion` alias: the production log, one file per data interval.

The scores folder and the validated batches are local paths or URIs (pipelines/storage.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.guardrail import GuardSpec

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreResult:
    path: str
    rows: int
    model_version: str
    interval_key: str
    shadows: list[str] = field(default_factory=list)   # "role:vN" of the versions that shadow-scored the rows

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score_interval(spec: ModelSpec, validated_dir: Location, repo_path: Path, start: datetime, end: datetime,
                   key: str, scores_dir: Location, download_dir: Path | None = None,
                   tables: tuple[Location, Path] | None = None) -> ScoreResult | None:
    """Score the interval's rows with the champion; None when there is no champion yet.

    Writes scores_dir/<key>.parquet (a rerun overwrites it). The champion's features.json is downloaded
    from MLflow into `download_dir` (local); by default scores_dir/_champion/<version> when scores_dir
    is local, else a temporary folder removed afterwards.
    """
    from mlflow import MlflowClient

    from pipelines import model as m
    from pipelines.release.cost import measured, record_cost

    champ = m.champion(spec.registered_model_name)
    if champ is None:
        log.info("%s: no champion yet; nothing to score for %s", spec.name, key)
        return None
    client = MlflowClient()
    with measured() as cost:
        result = _score(spec, champ, client, validated_dir, repo_path, start, end, key, scores_dir, download_dir,
                        tables)
    record_cost(client, champ.run_id, "score", cost, start)   # on the champion's run, at the interval's day
    return result


def _score(spec: ModelSpec, champ: Any, client: Any, validated_dir: Location, repo_path: Path, start: datetime,
           end: datetime, key: str, scores_dir: Location, download_dir: Path | None,
           tables: tuple[Location, Path] | None) -> ScoreResult:
    from pipelines import model as m
    from pipelines.training import ModelViews, label_rows, with_features

    if download_dir is None and not storage.is_remote(scores_dir):
        download_dir = storage.local_path(scores_dir) / "_champion" / str(champ.version)
    with tempfile.TemporaryDirectory(prefix="flywheel-champion-") as tmp:
        meta_dir = download_dir or Path(tmp)
        meta_dir.mkdir(parents=True, exist_ok=True)
        meta = Path(client.download_artifacts(champ.run_id, "features.json", str(meta_dir)))
        features = json.loads(meta.read_text())["features"]
    views = ModelViews.of(spec, repo_path)
    if spec.label.kind == "column":
        rows = label_rows(spec, validated_dir, start, end, with_label=False, views=views)
    else:
        # entity-snapshot models score every active entity once, as of the interval's end
        rows = label_rows(spec, validated_dir, end, end + timedelta(days=1), with_label=False, views=views)
    if rows.empty:
        raise ValueError(f"{spec.name}: no validated rows for {key}; was the batch blocked?")
    frame = with_features(spec, repo_path, rows, tables)
    booster = m.load_version(spec.registered_model_name, champ.version)
    categories = m.load_categories(spec.registered_model_name, str(champ.version))
    matrix = m.to_matrix_frame(frame, spec, features, categories)   # with the champion's recorded categories
    frame["prediction"] = m.predict(booster, matrix)
    frame["model_version"] = str(champ.version)
    frame["scored_for"] = key
    if spec.explain is not None and spec.explain.top_k > 0:   # why each row scored as it did (release/explain.py)
        from pipelines.release.explain import explained_rows

        for col, values in explained_rows(booster, matrix, frame["prediction"].to_numpy(), spec.explain.top_k,
                                          spec.explain.min_prediction).items():
            frame[col] = values
    out = storage.write_parquet(frame, storage.join(scores_dir, f"{key}.parquet"))
    mark_served(client, spec.registered_model_name, str(champ.version), start)
    log.info("%s: scored %d rows for %s with v%s", spec.name, len(frame), key, champ.version)
    shadow = shadow_scores(spec, frame, str(champ.version), client,
                           reuse={_inputs_key(features, categories): matrix})
    shadow_path = storage.join(scores_dir, SHADOW_DIR, f"{key}.parquet")
    if shadow is None:
        storage.delete(shadow_path)   # a re-run after the shadows went away leaves none behind
    else:
        storage.write_parquet(shadow, shadow_path)
    return ScoreResult(out, len(frame), str(champ.version), key,
                       sorted({f"{r}:v{v}" for r, v in zip(shadow["role"], shadow["model_version"], strict=True)})
                       if shadow is not None else [])


def mark_served(client: Any, name: str, version: str, start: datetime) -> str | None:
    """The data time this version started serving as champion (tag tags.SERVED_FROM, set once: the first interval
    it scored); the guardrail's guard period counts from it, in data time like everything the monitor judges.

    An interval that starts before the version's training cutoff (tags.TRAINED_AS_OF) does not count: re-scoring
    a past interval after a promotion (a feature rebuild re-triggers it) is not serving it, and those rows were
    the version's own training or holdout data: judging the guardrail on them would flatter it. None then, until
    it scores an interval of its own."""
    from pipelines import tags

    mv_tags = client.get_model_version(name, version).tags
    found = mv_tags.get(tags.SERVED_FROM)
    if found:
        return str(found)
    cutoff = datetime.fromisoformat(mv_tags[tags.TRAINED_AS_OF]) if mv_tags.get(tags.TRAINED_AS_OF) else None
    if cutoff is not None and cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=start.tzinfo)
    if cutoff is not None and start < cutoff:
        log.info("v%s re-scored %s, before its training cutoff %s: not counted as serving", version,
                 start.isoformat(), cutoff.isoformat())
        return None
    client.set_model_version_tag(name, version, tags.SERVED_FROM, start.isoformat())
    return start.isoformat()


SHADOW_DIR = "_shadow"               # scores_dir/_shadow/<key>.parquet: the same rows, scored by the shadows
SHADOW_ROLES = ("previous-champion", "challenger")


def _inputs_key(features: list[str], categories: dict[str, list[str]] | None) -> str:
    return json.dumps([features, categories], sort_keys=True, default=str)


def shadow_scores(spec: ModelSpec, frame: pd.DataFrame, champion: str, client: Any,
                  reuse: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame | None:
    """The rows `frame` holds (already joined with their features), scored by the previous champion and a pending
    challenger (each only when its alias exists and is not the champion): one row per (row, shadow version), with
    the row's id, `model_version`, `role` and `prediction` (the rest of the row is in the scores file, by id).
    None when there is no shadow. `reuse`: input matrices already built, by `_inputs_key` (a shadow with the
    champion's inputs and categories predicts on the champion's matrix instead of building it again).

    The monitor's guardrail compares champion and previous champion on exactly these rows once labels arrive."""
    import pandas as pd

    from pipelines import model as m

    row_id = spec.dataset.row_id if spec.dataset.row_id in frame.columns else "row_id"
    limit = (spec.guardrail or GuardSpec()).shadow_rows
    keep = shadow_sample(frame[row_id], limit)
    if keep is not None:
        log.info("%s: shadows score a sample of %d of %d rows (guardrail.shadow_rows %d)", spec.name,
                 int(keep.sum()), len(frame), limit)
        frame = frame.loc[keep]
        reuse = {k: v.loc[keep] for k, v in (reuse or {}).items()}
    matrices = dict(reuse or {})
    parts = []
    for role in SHADOW_ROLES:
        mv = m.by_alias(spec.registered_model_name, role)
        if mv is None or str(mv.version) == champion:
            continue
        with tempfile.TemporaryDirectory(prefix="flywheel-shadow-") as tmp:
            features = json.loads(Path(client.download_artifacts(mv.run_id, "features.json", tmp)).read_text())[
                "features"]
        missing = [f for f in features if f not in frame.columns]
        if missing:   # a version trained on another feature service: it cannot shadow these rows
            log.warning("%s: v%s (%s) cannot shadow: its features %s are not in the scored rows", spec.name,
                        mv.version, role, missing)
            continue
        booster = m.load_version(spec.registered_model_name, str(mv.version))
        categories = m.load_categories(spec.registered_model_name, str(mv.version))
        key = _inputs_key(features, categories)
        if key not in matrices:
            matrices[key] = m.to_matrix_frame(frame, spec, features, categories)
        pred = m.predict(booster, matrices[key])
        parts.append(pd.DataFrame({row_id: frame[row_id].to_numpy(), "model_version": str(mv.version), "role": role,
                                   "prediction": pred}))
        log.info("%s: shadow-scored %d rows with v%s (%s)", spec.name, len(frame), mv.version, role)
    return pd.concat(parts, ignore_index=True) if parts else None


def shadow_sample(ids: pd.Series, limit: int) -> Any:
    """Which rows the shadows score: None (every row) when there are at most `limit`, else a boolean mask of
    about `limit` rows, a uniform sample chosen by a hash of the row id (the same rows on every re-run, and
    independent of the label, so a metric on the labelled sample estimates the metric on all rows).

    Shadow predictions cost a full prediction per shadow version; above a few hundred thousand rows an interval
    holds far more rows than the guardrail's paired bootstrap needs (bench/shadow.py). DuckDB hashes the ids
    (~0.05 s per million strings; pandas' hash_pandas_object takes 0.37 s)."""
    import duckdb
    import numpy as np
    import pyarrow as pa

    if len(ids) <= limit:
        return None
    with duckdb.connect() as con:
        con.register("shadow_ids", pa.table({"id": pa.array(ids.to_numpy(), from_pandas=True)}))
        hashed = con.sql("SELECT hash(id) AS h FROM shadow_ids").fetchnumpy()["h"]
    return np.asarray(hashed, dtype=np.uint64) < np.uint64(int(limit / len(ids) * float(2**64 - 1)))


def read_shadows(scores_dir: Location, start: datetime, end: datetime, cadence: str | None = None) -> Any:
    """The shadow scores (`shadow_scores`) of the same intervals `read_scores` reads."""
    return read_scores(storage.join(scores_dir, SHADOW_DIR), start, end, cadence)


def read_scores(scores_dir: Location, start: datetime, end: datetime, cadence: str | None = None) -> Any:
    """The production log of the intervals that start in [start, end); with the dataset's `cadence`, of the
    intervals that overlap [start, end) (a 30-day window ending on 1 June overlaps the May interval that
    starts on 1 May; by start alone it held nothing)."""
    import pandas as pd

    from pipelines.landing import next_tick

    frames = []
    for p in storage.list_files(scores_dir, ".parquet"):
        key = datetime.fromisoformat(storage.stem(p)).replace(tzinfo=start.tzinfo)
        if cadence is None:
            inside = start <= key < end
        else:
            inside = key < end and next_tick(cadence, key) > start
        if inside:
            frames.append(storage.read_parquet(p))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


LABEL_JOIN_UNSUPPORTED = {
    "future_sum": ("label kind future_sum: the label is a sum over the next horizon_days per entity, known "
                   "horizon_days + delay_days after each snapshot, i.e. always after the monitored window ends; "
                   "it is rebuilt for training by pipelines.training.label_rows, not joined row by row. "
                   "Performance drift is not checked for this model."),
}


def label_join_unsupported(spec: ModelSpec) -> str | None:
    """Why delayed labels cannot be joined onto this model's scored rows, or None when they can."""
    return LABEL_JOIN_UNSUPPORTED.get(spec.label.kind)


def join_delayed_labels(spec: ModelSpec, scores: Any, validated_dir: Location, as_of: datetime) -> Any:
    """The scored rows whose label is known at `as_of`, with the label joined in a float `label` column.

    A label is known once its row's event time + `label.delay_days` <= as_of (`as_of` is data time,
    e.g. the end of the monitored interval, never the wall clock). Labels come from the validated
    batches (`pipelines.features.read_validated`), matched on the dataset's row id; rows whose label is
    not due yet are left out, and so are due rows with no validated row (logged). Only `label.kind:
    column` is supported (see `label_join_unsupported`). Idempotent: the same inputs give the same rows.
    """
    import pandas as pd

    from pipelines.features import read_validated
    from pipelines.training import LABEL

    reason = label_join_unsupported(spec)
    if reason:
        raise ValueError(f"{spec.name}: {reason}")
    rid, ts_col = spec.dataset.row_id, spec.event_timestamp
    for col in (rid, ts_col):
        if col not in scores.columns:
            raise ValueError(f"{spec.name}: the scoring log lacks {col!r} (it has {list(scores.columns)}); "
                             "it is needed to join delayed labels. Re-score the interval with this version.")
    ts = pd.to_datetime(scores[ts_col], utc=True)
    due = (ts + pd.Timedelta(days=spec.label.delay_days)) <= pd.Timestamp(as_of)
    rows = scores.loc[due].drop(columns=[LABEL], errors="ignore")
    if rows.empty:
        return rows.assign(**{LABEL: pd.Series(dtype="float64")}).reset_index(drop=True)
    lo = ts[due].min().floor("us").to_pydatetime()       # datetime holds microseconds: the window still covers
    hi = (ts[due].max().floor("us") + pd.Timedelta(microseconds=1)).to_pydatetime()   # every due row
    validated = read_validated(validated_dir, ts_col, lo, hi)
    if validated.empty or spec.label.column not in validated.columns:
        log.warning("%s: no validated rows with %r for %s → %s under %s; no labels joined", spec.name,
                    spec.label.column, lo, hi, validated_dir)
        return rows.iloc[0:0].assign(**{LABEL: pd.Series(dtype="float64")}).reset_index(drop=True)
    labels = (validated[[rid, spec.label.column]].drop_duplicates(rid, keep="last")
              .rename(columns={spec.label.column: LABEL}))
    out = rows.merge(labels, on=rid, how="inner", validate="many_to_one")
    out[LABEL] = pd.to_numeric(out[LABEL], errors="coerce").astype("float64")
    missing = len(rows) - len(out)
    if missing:
        log.warning("%s: %d scored row(s) due a label have no validated row (quarantined or late); left out",
                    spec.name, missing)
    log.info("%s: labels joined for %d of %d scored rows (known by %s; %d not due yet)", spec.name, len(out),
             len(scores), as_of.isoformat(), int((~due).sum()))
    return out.reset_index(drop=True)
