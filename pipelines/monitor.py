"""Drift stage of `monitor__<model>`: compare this window's rows with the reference, decide on a retrain.

What one monitor run does (`check_drift`, called by the DAG's `detect_drift` task):

1. **Data.** Reference = the sample of the champion's training set logged with the model version;
   current = the scoring log (`scores/<interval>.parquet`) of the last `drift.window_days`.
2. **Data drift** per column with Evidently (`Report([DataDriftPreset(...)])`). The stat test per column
   comes from the spec (`drift.methods` by column type, `drift.columns` per column; defaults:
   normed Wasserstein for numeric columns, Jensen-Shannon for categorical ones and for numeric columns
   with <= 5 distinct values), pinned for every sample size so a threshold always means the same thing.
   The model's `prediction` is monitored like a feature (prediction drift).
3. **Performance drift** once labels arrive: `pipelines.score.join_delayed_labels` joins the labels now
   due (event time + `label.delay_days` <= the end of the window) onto the scored rows; the primary
   metric on them is compared with the champion's gate-time holdout value (model version tag
   `flywheel.gate.challenger_value`); no such tag -> status "unknown".
4. **Verdict** `reports/<model>/<key>.json` (drift share, per-column scores, methods, thresholds, the
   performance part, the decision, later the email status) next to the Evidently report `<key>.html`,
   and one line per key in `reports/<model>/index.jsonl` (`list_reports` reads it). Re-running a key
   overwrites its files and its index line.
5. **Retrain policy** (`decide_retrain`, pure): a window *alarms* on data drift (share of drifted
   columns >= `drift.drift_share`), or on a performance drop when `drift.performance.retrain` is set.
   A request needs an alarm in >= N of the last M windows (hysteresis, read from the index, keyed by
   interval), no retrain of the model queued or running (dedupe: the DAG asks Airflow), and a champion
   older than `drift.cooldown_days` (counted from its `flywheel.trained_as_of`).
6. **Email** (`send_drift_report`): the owners get the verdict, the most drifted columns, what happens
   next and links, with the report attached gzipped (or the JSON verdict when the gzip is over
   MAX_ATTACHMENT_BYTES). If SMTP is down the send is retried; the outcome is recorded in the verdict
   (`email`, `email_failed`) and the index; the report files stay on disk either way.

**Sampling and its error.** Each side is sampled (seeded by `training.seed`) to `drift.max_rows` rows
before Evidently: Evidently's cost grows with the rows (74 s / 2 GB for 1M x 20 columns unsampled) while
the distances converge long before. bench/drift.py measured, at the default 50,000 rows per side, 20
seeds x 20 columns on 1M-row frames: max absolute error of the sampled score vs the all-rows score 0.017
(normed Wasserstein; p95 0.013) and 0.015 (Jensen-Shannon; p95 0.011), against a threshold of 0.1. So a
column's verdict can differ from the all-rows verdict only when its all-rows score is within ~0.02 of
its threshold (0 of 400 seed x column verdicts differed). The A/A and injected-shift tests
(tests/unit/test_monitor.py) run on 3,000-row samples, i.e. with more sampling noise than 50,000 rows.

Nothing heavy is imported at module level: pandas and evidently are imported inside functions.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipelines import storage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipelines.spec import DriftSpec, ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)

PREDICTION_COLUMN = "prediction"
LOW_CARDINALITY = 5  # numeric columns with this few distinct values are scored like categories
SMALL_SAMPLE_ROWS = 1000  # below this, distance scores are noisy; said in the log and the email
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
EMAIL_TOP_COLUMNS = 15
INDEX_FILE = "index.jsonl"
GATE_VALUE_TAG = "flywheel.gate.challenger_value"  # the version's primary metric on its gate holdout


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftResult:
    model: str
    interval_start: str  # ISO, the window of current data
    interval_end: str
    champion_version: str | None
    rows_reference: int  # rows given to Evidently (after sampling)
    rows_current: int
    columns: dict[str, dict]  # column -> {"score", "drifted", "method", "method_id", "kind", "threshold"}
    drifted_share: float
    drift_detected: bool  # drifted_share >= spec.drift.drift_share
    report_html: str  # location (path or URI) of the Evidently HTML report
    verdict_json: str  # location (path or URI) of the JSON verdict
    performance: dict[str, Any] = field(default_factory=dict)  # see performance_drift(); {} = not checked
    rows_current_total: int | None = None  # rows in the window before sampling (None: not sampled)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DriftResult:
        """From `to_dict()` or a verdict JSON (extra keys such as `decision` are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @property
    def drifted_columns(self) -> list[str]:
        """Drifted columns, most drifted first (score relative to its threshold)."""
        return [c for c in _ranked(self.columns) if self.columns[c]["drifted"]]

    @property
    def drifted_count(self) -> int:
        return sum(1 for v in self.columns.values() if v["drifted"])

    @property
    def performance_degraded(self) -> bool:
        return self.performance.get("status") == "degraded"


@dataclass(frozen=True)
class RetrainDecision:
    request: bool
    reason: str
    # which rule decided: no_alarm | hysteresis | dedupe | cooldown | champion_newer | requested
    rule: str = ""
    alarm: bool = False  # this window alarmed (drift, or a performance drop that may trigger retrains)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ColumnScores:
    """Per-column drift verdicts of one comparison, before any file is written."""

    columns: dict[str, dict]
    drifted_share: float
    drift_detected: bool
    rows_reference: int
    rows_current: int


@dataclass(frozen=True)
class Email:
    to: tuple[str, ...]
    subject: str
    html: str
    attachments: tuple[str, ...]  # file locations (paths or URIs: the sender fetches remote ones)


class EmailDeliveryError(RuntimeError):
    """The drift email could not be delivered after every attempt (the report is still on disk)."""


# --------------------------------------------------------------------------------------------
# drift
# --------------------------------------------------------------------------------------------


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    categorical: list[str],
    spec: ModelSpec,
    out_dir: Location,
    key: str,
    champion_version: str | None,
    interval_start: datetime,
    interval_end: datetime,
) -> DriftResult:
    """Drift of `current` against `reference` over `columns`; writes out_dir/<key>.html and <key>.json.

    `columns` are the model's feature columns; "prediction" is added when both frames have it.
    `categorical` names the categorical ones (any other non-numeric column is treated as categorical
    too). The reference is sampled down to `drift.reference_rows` and each side to `drift.max_rows`
    (seeded by spec.seed). Re-running with the same key overwrites both files.
    """
    _check_key(key)
    run = _score(reference, current, columns, categorical, spec, key, champion_version, interval_end)
    html_path = storage.join(out_dir, f"{key}.html")
    json_path = storage.join(out_dir, f"{key}.json")
    scores = run["scores"]
    result = DriftResult(
        model=spec.name,
        interval_start=interval_start.isoformat(),
        interval_end=interval_end.isoformat(),
        champion_version=champion_version,
        rows_reference=scores.rows_reference,
        rows_current=scores.rows_current,
        columns=scores.columns,
        drifted_share=scores.drifted_share,
        drift_detected=scores.drift_detected,
        report_html=html_path,
        verdict_json=json_path,
        rows_current_total=run["rows_current_total"],
    )
    _write_atomic(html_path, run["snapshot"].get_html_str(as_iframe=False).encode("utf-8"))
    _write_atomic(json_path, json.dumps(_json_safe(result.to_dict()), indent=2).encode())
    log.info(
        "%s: drift in %d/%d columns (%.0f%%, threshold %.0f%%) → %s; report %s",
        spec.name,
        result.drifted_count,
        len(result.columns),
        100 * result.drifted_share,
        100 * spec.drift.drift_share,
        "drift detected" if result.drift_detected else "no drift",
        html_path,
    )
    return result


def drift_scores(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], categorical: list[str], spec: ModelSpec
) -> ColumnScores:
    """The per-column verdicts `compute_drift` would record, without writing a report (tests, benches)."""
    return _score(reference, current, columns, categorical, spec, "scores", None, None)["scores"]


def sample_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most `n` rows of `frame`, a seeded uniform sample without replacement (n <= 0: all rows)."""
    if n > 0 and len(frame) > n:
        return frame.sample(n=n, random_state=seed)
    return frame


def _score(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    categorical: list[str],
    spec: ModelSpec,
    key: str,
    champion_version: str | None,
    interval_end: datetime | None,
) -> dict[str, Any]:
    if len(current) == 0:
        raise ValueError(
            f"{spec.name}: no current rows for drift report {key!r}; nothing to compare. "
            "Check that scoring ran for this interval (or that data landed)."
        )
    if len(reference) == 0:
        raise ValueError(
            f"{spec.name}: the reference frame is empty; drift needs the champion's training window "
            "(or another reference). Check the reference query for this model."
        )

    cols = _select_columns(reference, current, columns, spec.name)
    total_current = len(current)
    ref, cur = _prepare_frames(reference, current, cols, spec)
    cat_set = {c for c in categorical if c in cols}
    for c in cols:
        if c not in cat_set and not (_is_numeric(ref[c]) and _is_numeric(cur[c])):
            if not (_is_bool(ref[c]) or _is_bool(cur[c])):
                log.warning(
                    "%s: column %r is not numeric in both frames (%s / %s) and not listed as "
                    "categorical; treating it as categorical",
                    spec.name,
                    c,
                    ref[c].dtype,
                    cur[c].dtype,
                )
            cat_set.add(c)
    cat_cols = [c for c in cols if c in cat_set]
    num_cols = [c for c in cols if c not in cat_set]
    ref, cur = _normalise_types(ref, cur, num_cols, cat_cols)

    verdicts: dict[str, dict] = {}
    # A column with no values in a frame cannot be scored by Evidently (it raises). Decide it here:
    # values that vanished or appeared are drift; a column empty on both sides is not.
    evaluable: list[str] = []
    for c in cols:
        ref_empty, cur_empty = bool(ref[c].isna().all()), bool(cur[c].isna().all())
        if ref_empty or cur_empty:
            drifted = ref_empty != cur_empty
            where = "both frames" if ref_empty and cur_empty else ("current" if cur_empty else "reference")
            log.warning(
                "%s: column %r has no values in %s; recorded as %s",
                spec.name,
                c,
                where,
                "drifted" if drifted else "not drifted",
            )
            verdicts[c] = {
                "score": 1.0 if drifted else 0.0,
                "drifted": drifted,
                "method": f"all values missing in {where}",
                "method_id": "missing",
                "kind": "distance",
                "threshold": float(spec.drift.threshold),
            }
        else:
            evaluable.append(c)
    if not evaluable:
        raise ValueError(
            f"{spec.name}: every drift column ({', '.join(cols)}) is entirely null in the "
            "reference or the current frame; check the feature pipeline for this interval."
        )

    methods = {c: _method_for(c, c in cat_set, ref, cur, spec) for c in evaluable}
    thresholds = {c: spec.drift.threshold_for(c, m) for c, m in methods.items()}
    for n, what in ((len(ref), "reference"), (len(cur), "current")):
        if n < SMALL_SAMPLE_ROWS:
            log.warning("%s: only %d %s rows; drift distances on small samples are noisy", spec.name, n, what)

    snapshot = _run_evidently(
        ref,
        cur,
        evaluable,
        [c for c in num_cols if c in evaluable],
        [c for c in cat_cols if c in evaluable],
        methods,
        thresholds,
        spec,
        key,
        champion_version,
        interval_end,
    )
    verdicts.update(_column_verdicts(snapshot.dict(), methods, thresholds, cat_set, spec.name))
    columns_out = {c: verdicts[c] for c in cols}
    share = sum(1 for v in columns_out.values() if v["drifted"]) / len(columns_out)
    scores = ColumnScores(columns_out, share, share >= spec.drift.drift_share, len(ref), len(cur))
    return {
        "scores": scores,
        "snapshot": snapshot,
        "rows_current_total": total_current if total_current > len(cur) else None,
    }


def _run_evidently(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    cols: list[str],
    num_cols: list[str],
    cat_cols: list[str],
    methods: dict[str, str],
    thresholds: dict[str, float],
    spec: ModelSpec,
    key: str,
    champion_version: str | None,
    interval_end: datetime | None,
) -> Any:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=num_cols, categorical_columns=cat_cols)
    report = Report(
        [
            DataDriftPreset(
                columns=cols,
                per_column_method=methods,
                per_column_threshold=thresholds,
                threshold=float(spec.drift.threshold),
                drift_share=float(spec.drift.drift_share),
            )
        ],
        include_tests=True,  # per-column pass/fail: Evidently's own drifted verdict, method-aware
        metadata={"model": spec.name, "key": key, "champion_version": champion_version or ""},
        tags=["flywheel", spec.name],
    )
    return report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
        timestamp=interval_end,
    )


def _column_verdicts(
    snap: dict, methods: dict[str, str], thresholds: dict[str, float], categorical: set[str], model: str
) -> dict[str, dict]:
    """Per-column score from the ValueDrift metrics, drifted from their tests (FAIL = drift)."""
    from pipelines.spec import DRIFT_METHODS

    by_id: dict[str, str] = {}
    scores: dict[str, float] = {}
    for m in snap["metrics"]:
        cfg = m.get("config") or {}
        if str(cfg.get("type", "")).endswith(":ValueDrift"):
            by_id[m["id"]] = cfg["column"]
            scores[cfg["column"]] = float(m["value"])
    status: dict[str, str] = {}
    for t in snap["tests"]:
        col = by_id.get((t.get("metric_config") or {}).get("metric_id", ""))
        if col is not None:
            s = t["status"]
            status[col] = str(getattr(s, "value", s)).upper()
    out: dict[str, dict] = {}
    for col, method in methods.items():
        if col not in scores:
            raise RuntimeError(
                f"{model}: Evidently returned no drift score for column {col!r}; "
                f"got {sorted(scores)}. Is the evidently version the pinned 0.7.23?"
            )
        score, threshold, kind = scores[col], thresholds[col], DRIFT_METHODS[method][0]
        st = status.get(col)
        if st in ("SUCCESS", "FAIL"):
            drifted = st == "FAIL"
        else:  # no test result (or an error): fall back to the method's rule
            drifted = not math.isfinite(score) or (score >= threshold if kind == "distance" else score < threshold)
            log.warning(
                "%s: no Evidently test status for %r (%s); drifted=%s from score %.4f", model, col, st, drifted, score
            )
        out[col] = {
            "score": score,
            "drifted": bool(drifted),
            "method": _method_label(method, col in categorical),
            "method_id": method,
            "kind": kind,
            "threshold": threshold,
        }
    return out


def _select_columns(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], model: str) -> list[str]:
    cols = list(dict.fromkeys(columns))
    if PREDICTION_COLUMN not in cols and PREDICTION_COLUMN in reference and PREDICTION_COLUMN in current:
        cols.append(PREDICTION_COLUMN)
    if not cols:
        raise ValueError(f"{model}: no columns to check for drift; pass the model's feature columns.")
    for frame, name in ((reference, "reference"), (current, "current")):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{model}: the {name} frame lacks drift column(s) {missing}; it has "
                f"{list(frame.columns)}. Fix the column list or the query that built the frame."
            )
    return cols


def _prepare_frames(
    reference: pd.DataFrame, current: pd.DataFrame, cols: list[str], spec: ModelSpec
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded samples: the reference to min(reference_rows, max_rows), the current to max_rows."""
    d = spec.drift
    caps = [n for n in (int(d.reference_rows), int(d.max_rows)) if n > 0]
    ref_cap = min(caps) if caps else 0
    ref = sample_rows(reference, ref_cap, spec.seed)[cols]
    cur = sample_rows(current, int(d.max_rows), spec.seed + 1)[cols]
    if len(cur) < len(current):
        log.info("%s: current window sampled from %d to %d rows (drift.max_rows)", spec.name, len(current), len(cur))
    return ref.reset_index(drop=True), cur.reset_index(drop=True)


def _is_numeric(s: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))


def _is_bool(s: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_bool_dtype(s))


def _normalise_types(
    ref: pd.DataFrame, cur: pd.DataFrame, num_cols: list[str], cat_cols: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Numeric columns as float, categorical ones as str (nulls kept) so 3 and "3" are one category."""
    import pandas as pd

    def fix(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        for c in num_cols:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        for c in cat_cols:
            s = df[c].astype(object)
            df[c] = s.where(s.isna(), s.astype(str))
        return df

    return fix(ref), fix(cur)


def _method_for(col: str, categorical: bool, ref: pd.DataFrame, cur: pd.DataFrame, spec: ModelSpec) -> str:
    """The spec's stat test for this column; low-cardinality numerics get the categorical one if it fits."""
    import pandas as pd

    from pipelines.spec import DRIFT_METHODS

    drift = spec.drift
    kind: Literal["numeric", "categorical"] = "categorical" if categorical else "numeric"
    method = drift.method_for(col, kind)
    override = col in drift.columns and drift.columns[col].method
    if not categorical and not override:
        cat_method = drift.methods["categorical"]
        if "numeric" in DRIFT_METHODS[cat_method][1] and pd.concat([ref[col], cur[col]]).nunique() <= LOW_CARDINALITY:
            method = cat_method
    if kind not in DRIFT_METHODS[method][1]:
        raise ValueError(
            f"{spec.path}: drift.columns.{col}.method {method!r} does not apply to {kind} columns; use one of "
            f"{', '.join(m for m, v in DRIFT_METHODS.items() if kind in v[1])}."
        )
    return method


def _method_label(method: str, categorical: bool) -> str:
    """Evidently's display name of a stat test ("Wasserstein distance (normed)"), else its id."""
    try:
        from evidently.legacy.calculations.stattests.registry import get_registered_stattest
        from evidently.legacy.core import ColumnType

        kind = ColumnType.Categorical if categorical else ColumnType.Numerical
        return str(get_registered_stattest(method, kind).display_name)
    except Exception:  # a label only; never fail the stage for it
        return method


def _severity(v: Mapping[str, Any]) -> float:
    """How far past its threshold a column is: score/threshold for distances, threshold/p for p-values."""
    score, thr = float(v["score"]), float(v["threshold"]) or 1.0
    if not math.isfinite(score):
        return math.inf
    if v.get("kind", "distance") == "p_value":
        return thr / max(score, 1e-300)
    return score / thr


def _ranked(columns: dict[str, dict]) -> list[str]:
    return sorted(columns, key=lambda c: (not columns[c]["drifted"], -_severity(columns[c]), c))


# --------------------------------------------------------------------------------------------
# performance drift
# --------------------------------------------------------------------------------------------


def performance_drift(
    spec: ModelSpec,
    labels: np.ndarray | pd.Series | None,
    predictions: np.ndarray | pd.Series | None,
    reference_value: float | None,
    *,
    unavailable: str | None = None,
    rows_pending: int = 0,
) -> dict[str, Any]:
    """The primary metric on the window's labelled rows vs the champion's gate-time holdout value.

    status: "degraded" (worse by more than drift.performance.max_drop, relative), "ok",
    "unknown" (no gate-time value to compare with), "insufficient_labels" (fewer than min_rows labelled
    rows, fewer than min_positives positives, or a one-class window) or "not_applicable" (`unavailable`
    says why, e.g. the label kind cannot be joined row by row). Pure: no I/O.
    """
    import numpy as np

    from pipelines.metrics import metric

    d = spec.drift
    out: dict[str, Any] = {
        "metric": spec.primary_metric,
        "higher_is_better": spec.higher_is_better,
        "value": None,
        "reference_value": reference_value,
        "reference": f"champion's gate holdout ({GATE_VALUE_TAG})",
        "drop": None,
        "max_drop": d.performance_max_drop,
        "labelled_rows": 0,
        "rows_pending": int(rows_pending),
        "triggers_retrain": d.performance_retrain,
    }
    if unavailable is not None:
        return {**out, "status": "not_applicable", "detail": unavailable}
    y = np.asarray(labels if labels is not None else [], dtype="float64")
    p = np.asarray(predictions if predictions is not None else [], dtype="float64")
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    out["labelled_rows"] = int(len(y))
    need = f"needs >= {d.performance_min_rows} labelled rows"
    if spec.task == "binary":
        out["positives"] = int((y > 0.5).sum())
        need += f" and >= {d.performance_min_positives} positives"
    if len(y) < d.performance_min_rows or (spec.task == "binary" and out["positives"] < d.performance_min_positives):
        got = f"{len(y)} labelled rows" + (f", {out['positives']} positives" if spec.task == "binary" else "")
        return {**out, "status": "insufficient_labels", "detail": f"{got}; {need}"}
    value = metric(spec.primary_metric).value(y, p)   # the registry's estimate, as at the gate
    if not math.isfinite(value):
        return {**out, "status": "insufficient_labels", "detail": f"{spec.primary_metric} is undefined on these labels"}
    out["value"] = float(value)
    if reference_value is None or not math.isfinite(reference_value):
        return {
            **out,
            "reference_value": None,
            "status": "unknown",
            "detail": f"the champion has no usable {GATE_VALUE_TAG} tag; nothing to compare with",
        }
    worse = (reference_value - value) if spec.higher_is_better else (value - reference_value)
    drop = worse / abs(reference_value) if reference_value != 0 else (math.inf if worse > 0 else 0.0)
    out["drop"] = float(drop)
    status = "degraded" if drop > d.performance_max_drop else "ok"
    detail = (
        f"{spec.primary_metric} {value:.4g} on {len(y):,} labelled rows vs {reference_value:.4g} at the gate "
        f"({100 * drop:+.0f}% worse; limit {100 * d.performance_max_drop:.0f}%)"
    )
    return {**out, "status": status, "detail": detail}


# --------------------------------------------------------------------------------------------
# retrain decision
# --------------------------------------------------------------------------------------------


def needs_email(result: DriftResult, decision: RetrainDecision) -> bool:
    """The owners are emailed on an alarm, and on a performance drop even when it is not an alarm."""
    return bool(decision.alarm or result.drift_detected or result.performance_degraded)


def is_alarm(result: DriftResult, drift: DriftSpec) -> bool:
    """Does this window count towards a retrain? Data drift, or a performance drop if the spec says so."""
    return bool(result.drift_detected or (drift.performance_retrain and result.performance_degraded))


def decide_retrain(
    result: DriftResult,
    spec: ModelSpec,
    champion_trained_until: datetime | None,
    now: datetime,
    *,
    history: Iterable[Mapping[str, Any]] = (),
    retrain_in_flight: int = 0,
) -> RetrainDecision:
    """Request a retrain or say which rule held it back. Pure: every input is an argument.

    Rules, in order: the window must alarm (`is_alarm`); >= `drift.hysteresis.alarms` of the last
    `drift.hysteresis.windows` windows must have alarmed (`history`: earlier index entries with
    `interval_end` and `alarm`, e.g. from `list_reports`; entries at or after this window's end are
    ignored, so re-runs and backfills decide the same way; a window that was never monitored, e.g. a
    blocked batch, is not a window here); no retrain may be queued or running
    (`retrain_in_flight`, counted by the DAG); the champion must be older than `drift.cooldown_days`.
    `now` is the end of the monitored interval (never the wall clock). Naive datetimes are UTC.
    """
    d = spec.drift
    summary = _drift_summary(result, spec)
    alarm = is_alarm(result, d)
    if not alarm:
        return RetrainDecision(False, f"no drift: {summary}", "no_alarm", False)
    if result.performance_degraded and d.performance_retrain:
        summary += f"; performance: {result.performance.get('detail', 'degraded')}"
    if d.of_windows > 1:
        end = _utc(datetime.fromisoformat(result.interval_end))
        prior = sorted(
            (h for h in history if _utc(datetime.fromisoformat(str(h["interval_end"]))) < end),
            key=lambda h: _utc(datetime.fromisoformat(str(h["interval_end"]))),
        )[-(d.of_windows - 1) :]
        alarms = 1 + sum(1 for h in prior if h.get("alarm"))
        if alarms < d.alarm_windows:
            seen = len(prior) + 1
            return RetrainDecision(
                False,
                f"suppressed (hysteresis): alarm in {alarms} of the last {seen} window(s), a retrain needs "
                f"{d.alarm_windows} of {d.of_windows}; {summary}",
                "hysteresis",
                True,
            )
    if retrain_in_flight > 0:
        runs = "1 run" if retrain_in_flight == 1 else f"{retrain_in_flight} runs"
        return RetrainDecision(
            False,
            f"suppressed (dedupe): a retrain is already queued or running ({runs} of train__{spec.name}); {summary}",
            "dedupe",
            True,
        )
    if champion_trained_until is None:
        return RetrainDecision(True, f"{summary}; no champion yet", "requested", True)
    age = _utc(now) - _utc(champion_trained_until)
    cooldown = int(d.cooldown_days)
    champ = _champion_label(result.champion_version)
    days = age.total_seconds() / 86400
    if age.total_seconds() < 0:
        return RetrainDecision(
            False,
            f"suppressed: {champ} was trained on data up to "
            f"{_utc(champion_trained_until).date()}, after this interval "
            f"(ends {_utc(now).date()}); {summary}",
            "champion_newer",
            True,
        )
    if days < cooldown:
        until = (_utc(champion_trained_until) + timedelta(days=cooldown)).date()
        return RetrainDecision(
            False,
            f"suppressed: {champ} trained {_days(days)} ago, inside the {cooldown}-day cooldown "
            f"(until {until}); {summary}",
            "cooldown",
            True,
        )
    return RetrainDecision(
        True, f"{summary}; {champ} trained {_days(days)} ago (cooldown {cooldown} days)", "requested", True
    )


def _drift_summary(result: DriftResult, spec: ModelSpec) -> str:
    n, total = result.drifted_count, len(result.columns)
    pct, limit = round(100 * result.drifted_share), round(100 * spec.drift.drift_share)
    cmp = ">=" if result.drift_detected else "<"
    names = result.drifted_columns
    shown = ", ".join(names[:6]) + (f", +{len(names) - 6} more" if len(names) > 6 else "")
    return f"drift in {n}/{total} columns ({pct}% {cmp} {limit}%)" + (f": {shown}" if names else "")


def _champion_label(version: str | None) -> str:
    if not version:
        return "the champion"
    return f"champion {version}" if str(version).lower().startswith("v") else f"champion v{version}"


def _days(days: float) -> str:
    whole = int(days)
    return "1 day" if whole == 1 else f"{whole} days"


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# email
# --------------------------------------------------------------------------------------------


def compose_drift_email(
    spec: ModelSpec, result: DriftResult, decision: RetrainDecision, links: dict[str, str]
) -> Email:
    """The drift email to spec.owners, with the Evidently report attached gzipped (<key>.html.gz).

    A `.html` attachment trips Airflow's EmailOperator templating, hence the gzip; if the gzip is
    larger than MAX_ATTACHMENT_BYTES the JSON verdict is attached instead.
    """
    window = f"{result.interval_start[:10]} → {result.interval_end[:10]}"
    n, total = result.drifted_count, len(result.columns)
    if result.drift_detected:
        subject = f"[Flywheel] {spec.name}: drift detected in {n}/{total} features ({window})"
    elif result.performance_degraded:
        subject = f"[Flywheel] {spec.name}: performance drop, no data drift ({n}/{total} features drifted, {window})"
    else:
        subject = f"[Flywheel] {spec.name}: no drift ({n}/{total} features drifted, {window})"

    attachment, note = _report_attachment(result)
    body = _email_html(spec, result, decision, links, window, note)
    return Email(to=tuple(spec.owners), subject=subject, html=body, attachments=(attachment,))


def send_drift_report(
    spec: ModelSpec,
    verdict_json: Location,
    links: dict[str, str],
    send: Callable[[list[str], str, str, list[str]], None],
    *,
    final_try: bool = True,
    attempts: int = 3,
    retry_delay_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Email the verdict at `verdict_json` to the owners through `send(to, subject, html, files)`.

    `send` is tried `attempts` times (waiting retry_delay_s, then twice that, ...). The outcome is
    recorded in the verdict JSON (`email`, `email_failed`) and the reports index, and returned. When
    every attempt failed: on the final try (`final_try`) the failure is logged and returned, so the
    monitor run stays green and the retrain request is unaffected; otherwise EmailDeliveryError is
    raised so the caller (an Airflow task with retries) tries again later. The report files are never
    removed: the verdict names them.
    """
    path = os.fspath(verdict_json)
    raw = json.loads(storage.read_text(path))
    result = DriftResult.from_dict(raw)
    decision = RetrainDecision(**raw["decision"]) if raw.get("decision") else RetrainDecision(False, "")
    mail = compose_drift_email(spec, result, decision, links)
    errors: list[str] = []
    for attempt in range(1, max(1, attempts) + 1):
        try:
            send(list(mail.to), mail.subject, mail.html, list(mail.attachments))
        except Exception as exc:  # SMTP down, refused, timed out: all retried the same way
            errors.append(f"{type(exc).__name__}: {exc}")
            log.warning("%s: email attempt %d/%d failed: %s", spec.name, attempt, attempts, errors[-1])
            if attempt < attempts:
                sleep(retry_delay_s * attempt)
            continue
        status = {
            "status": "sent",
            "to": list(mail.to),
            "subject": mail.subject,
            "attempts": attempt,
            "attachments": [storage.name(a) for a in mail.attachments],
        }
        _record_email(path, result, status)
        log.info("%s: drift email sent to %s (attempt %d): %s", spec.name, ", ".join(mail.to), attempt, mail.subject)
        return status
    status = {
        "status": "failed",
        "to": list(mail.to),
        "subject": mail.subject,
        "attempts": len(errors),
        "error": errors[-1],
        "final": final_try,
        "report_html": result.report_html,
        "verdict_json": path,
    }
    _record_email(path, result, status)
    if not final_try:
        raise EmailDeliveryError(
            f"{spec.name}: drift email not delivered after {len(errors)} attempt(s) ({errors[-1]}); "
            f"the task will be retried. The report stays at {result.report_html}."
        )
    log.error(
        "%s: drift email NOT delivered after %d attempt(s) (%s); recorded as email_failed in %s. The report "
        "stays at %s; check the SMTP connection and forward it by hand.",
        spec.name,
        len(errors),
        errors[-1],
        path,
        result.report_html,
    )
    return status


def _record_email(verdict_path: str, result: DriftResult, status: dict[str, Any]) -> None:
    raw = json.loads(storage.read_text(verdict_path))
    raw["email"] = status
    raw["email_failed"] = status["status"] == "failed"
    _write_atomic(verdict_path, json.dumps(_json_safe(raw), indent=2).encode())
    key = storage.stem(verdict_path)
    _update_index(storage.parent(verdict_path), key, {"email": status["status"]})


def _report_attachment(result: DriftResult) -> tuple[str, str]:
    src = result.report_html
    src_name = storage.name(src)
    if not storage.is_file(src):
        log.warning("%s: report %s is missing; attaching the JSON verdict", result.model, src)
        return result.verdict_json, f"The HTML report {src_name} was not found; the JSON verdict is attached."
    gz = src + ".gz"
    buf = io.BytesIO()
    with gzip.GzipFile(filename=src_name, mode="wb", fileobj=buf, mtime=0) as fout:  # mtime=0: same input, same bytes
        fout.write(storage.read_bytes(src))
    storage.write_bytes(buf.getvalue(), gz)
    size = len(buf.getvalue())
    if size > MAX_ATTACHMENT_BYTES:
        log.warning(
            "%s: gzipped report is %.1f MB (> %.0f MB); attaching the JSON verdict instead",
            result.model,
            size / 1e6,
            MAX_ATTACHMENT_BYTES / 2**20,
        )
        return result.verdict_json, (
            f"The full report ({size / 1e6:.1f} MB gzipped) is too large to attach; "
            f"it is at {src}. The JSON verdict is attached."
        )
    return gz, f"The full Evidently report is attached ({storage.name(gz)}; open it after gunzip)."


_NEXT_STEP = {
    "requested": "<b>Retrain requested.</b> The Asset <code>{model}__retrain_request</code> starts "
    "<code>train__{model}</code>; its challenger is promoted only if the gate finds it better "
    "than the champion on the same fresh holdout.",
    "cooldown": "<b>No retrain requested</b> (cooldown): the champion is recent; alarms are reported, and the "
    "first alarm after the cooldown requests a retrain.",
    "champion_newer": "<b>No retrain requested</b>: the champion was trained on data newer than this window.",
    "hysteresis": "<b>No retrain requested yet</b> (hysteresis): a retrain needs an alarm in {n} of {m} "
    "consecutive windows; the next windows decide.",
    "dedupe": "<b>No new retrain requested</b>: a retrain of this model is already queued or running; its "
    "challenger goes through the gate.",
    "no_alarm": "Nothing to do.",
    "performance_only": "<b>No retrain requested</b>: the performance drop is reported, not acted on "
    "(<code>drift.performance.retrain</code> is off for this model); trigger <code>train__{model}</code> by hand "
    "if it persists.",
}


def _email_html(
    spec: ModelSpec,
    result: DriftResult,
    decision: RetrainDecision,
    links: dict[str, str],
    window: str,
    note: str,
) -> str:
    e = html.escape
    n, total = result.drifted_count, len(result.columns)
    verdict = (
        "Drift detected"
        if result.drift_detected
        else ("Performance drop" if result.performance_degraded else "No drift")
    )
    colour = "#b42318" if result.drift_detected or result.performance_degraded else "#067647"

    ranked = _ranked(result.columns)
    top = ranked[: max(min(n, EMAIL_TOP_COLUMNS), min(5, len(ranked)))]
    rows = "\n".join(
        "<tr>"
        f"<td>{e(c)}</td>"
        f"<td style='text-align:right'>{_fmt_score(result.columns[c]['score'])}</td>"
        f"<td>{e(str(result.columns[c]['method']))}</td>"
        f"<td style='text-align:right'>{_fmt_threshold(result.columns[c])}</td>"
        f"<td>{'yes' if result.columns[c]['drifted'] else 'no'}</td>"
        "</tr>"
        for c in top
    )
    more = f"<p>{len(ranked) - len(top)} more column(s) in the attached report.</p>" if len(ranked) > len(top) else ""

    rule = decision.rule or ("requested" if decision.request else ("no_alarm" if not result.drift_detected else ""))
    if rule == "no_alarm" and result.performance_degraded:
        rule = "performance_only"
    template = _NEXT_STEP.get(rule)
    if template:
        lead = template.format(model=e(spec.name), n=spec.drift.alarm_windows, m=spec.drift.of_windows)
        next_step = f"{lead} {e(decision.reason)}"
    elif decision.request:
        next_step = f"<b>Retrain requested.</b> {e(decision.reason)}"
    else:
        next_step = f"<b>No retrain requested.</b> {e(decision.reason)}"

    small = ""
    if min(result.rows_current, result.rows_reference) < SMALL_SAMPLE_ROWS:
        small = (
            f"<p><i>Few rows (current {result.rows_current:,}, reference {result.rows_reference:,}): "
            "drift scores on small samples are noisy.</i></p>"
        )
    sampled = ""
    if result.rows_current_total:
        sampled = (
            f"<p><i>The window's {result.rows_current_total:,} rows were sampled to "
            f"{result.rows_current:,} for the comparison (drift.max_rows).</i></p>"
        )

    link_items = "".join(
        f'<li><a href="{e(url, quote=True)}">{e(label)}</a></li>' for label, url in links.items() if url
    )
    link_block = f"<h3>Links</h3><ul>{link_items}</ul>" if link_items else ""
    champion = e(_champion_label(result.champion_version)) if result.champion_version else "no champion yet"

    return f"""<html><body style="font-family:sans-serif">
<h2 style="color:{colour}">{e(spec.name)}: {verdict}</h2>
<p>{n} of {total} monitored columns drifted ({100 * result.drifted_share:.0f}%; the model's drift share is
{100 * spec.drift.drift_share:.0f}%, default per-column threshold {spec.drift.threshold:g}).</p>
<p>Window {e(window)} ({result.rows_current:,} rows) against the reference ({result.rows_reference:,} rows),
{champion}.</p>
{small}{sampled}
<h3>Most drifted columns</h3>
<table border="1" cellpadding="4" cellspacing="0" style="border-collapse:collapse">
<tr><th>Column</th><th>Score</th><th>Method</th><th>Threshold</th><th>Drifted</th></tr>
{rows}
</table>
{more}
<h3>Performance</h3>
{_performance_html(result.performance)}
<h3>What happens next</h3>
<p>{next_step}</p>
{link_block}
<p>{e(note)}</p>
<p style="color:#667085">{e(spec.description)} Owners: {e(", ".join(spec.owners))}.</p>
</body></html>
"""


def _performance_html(perf: Mapping[str, Any]) -> str:
    e = html.escape
    if not perf:
        return "<p>Not checked in this run.</p>"
    status = str(perf.get("status", "unknown"))
    metric = e(str(perf.get("metric", "")))
    value, ref = perf.get("value"), perf.get("reference_value")
    cells = (
        f"<tr><td>{metric}</td><td style='text-align:right'>{_fmt_score(value)}</td>"
        f"<td style='text-align:right'>{_fmt_score(ref)}</td>"
        f"<td style='text-align:right'>{perf.get('labelled_rows', 0):,}</td><td>{e(status)}</td></tr>"
    )
    table = (
        "<table border='1' cellpadding='4' cellspacing='0' style='border-collapse:collapse'>"
        "<tr><th>Metric</th><th>This window (labelled rows)</th><th>Champion at the gate</th>"
        f"<th>Labelled rows</th><th>Status</th></tr>{cells}</table>"
    )
    return f"{table}<p>{e(str(perf.get('detail', '')))}</p>"


def _fmt_score(score: Any) -> str:
    if score is None:
        return "n/a"
    s = float(score)
    return "n/a" if not math.isfinite(s) else f"{s:.3f}"


def _fmt_threshold(col: Mapping[str, Any]) -> str:
    thr = f"{float(col['threshold']):.3g}"
    return f"p &lt; {thr}" if col.get("kind") == "p_value" else f"≥ {thr}"


# --------------------------------------------------------------------------------------------
# reports index: one line per key, the verdicts of every run
# --------------------------------------------------------------------------------------------


def list_reports(reports_dir: Location) -> list[dict[str, Any]]:
    """Every drift report of a model (reports/<model>/index.jsonl), oldest window first.

    Each entry: key, interval_start, interval_end, champion_version, rows_current, drifted_share,
    drift_detected, drifted_columns, performance (status), alarm, request, rule, reason, report_html,
    verdict_json and email (sent | failed | None when no email was due or it has not run yet).
    """
    path = storage.join(reports_dir, INDEX_FILE)
    if not storage.is_file(path):
        return []
    entries = [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
    return sorted(entries, key=lambda h: (str(h.get("interval_end", "")), str(h.get("key", ""))))


def index_entry(key: str, result: DriftResult, decision: RetrainDecision) -> dict[str, Any]:
    return {
        "key": key,
        "interval_start": result.interval_start,
        "interval_end": result.interval_end,
        "champion_version": result.champion_version,
        "rows_current": result.rows_current_total or result.rows_current,
        "drifted_share": round(result.drifted_share, 4),
        "drift_detected": result.drift_detected,
        "drifted_columns": result.drifted_columns,
        "performance": result.performance.get("status"),
        "alarm": decision.alarm,
        "request": decision.request,
        "rule": decision.rule,
        "reason": decision.reason,
        "report_html": result.report_html,
        "verdict_json": result.verdict_json,
        "email": None,
    }


def record_verdict(
    reports_dir: Location, key: str, result: DriftResult, decision: RetrainDecision, spec: ModelSpec
) -> str:
    """Write the full verdict JSON (drift, performance, policy, decision) and upsert the key's index line."""
    _check_key(key)
    d = spec.drift
    policy = {
        "drift_share": d.drift_share,
        "threshold": d.threshold,
        "methods": dict(d.methods),
        "column_overrides": {c: asdict(r) for c, r in d.columns.items()},
        "max_rows": d.max_rows,
        "hysteresis": {"alarms": d.alarm_windows, "windows": d.of_windows},
        "cooldown_days": d.cooldown_days,
        "performance": {
            "max_drop": d.performance_max_drop,
            "min_rows": d.performance_min_rows,
            "min_positives": d.performance_min_positives,
            "retrain": d.performance_retrain,
        },
    }
    verdict = {
        **result.to_dict(),
        "decision": decision.to_dict(),
        "alarm": decision.alarm,
        "policy": policy,
        "email": None,
        "email_failed": False,
    }
    path = result.verdict_json
    _write_atomic(path, json.dumps(_json_safe(verdict), indent=2).encode())
    _upsert_index(reports_dir, index_entry(key, result, decision))
    return path


def _upsert_index(reports_dir: Location, entry: dict[str, Any]) -> None:
    kept = [h for h in list_reports(reports_dir) if h.get("key") != entry["key"]]
    entries = sorted([*kept, entry], key=lambda h: (str(h.get("interval_end", "")), str(h.get("key", ""))))
    data = "".join(json.dumps(_json_safe(h), sort_keys=True) + "\n" for h in entries)
    _write_atomic(storage.join(reports_dir, INDEX_FILE), data.encode())


def _update_index(reports_dir: Location, key: str, changes: dict[str, Any]) -> None:
    for h in list_reports(reports_dir):
        if h.get("key") == key:
            _upsert_index(reports_dir, {**h, **changes})
            return
    log.warning("no index entry for %s in %s; email status not indexed", key, reports_dir)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _check_key(key: str) -> None:
    if not key or "/" in key or "\\" in key or key in (".", ".."):
        raise ValueError(
            f"drift report key {key!r} must be a plain file name (no path separators), "
            "e.g. the interval key '2026-03-02'."
        )


def _write_atomic(path: Location, data: bytes) -> None:
    storage.write_bytes(data, path)


def _json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# the monitor stage: production log of the last window vs the champion's training reference
# --------------------------------------------------------------------------------------------


def check_drift(
    spec: ModelSpec,
    scores_dir: Location,
    reports_dir: Location,
    interval_end: datetime,
    key: str,
    *,
    validated_dir: Location | None = None,
    retrain_in_flight: int = 0,
    download_dir: Path | None = None,
) -> tuple[DriftResult, RetrainDecision]:
    """Drift and performance of the last `drift.window_days` of scores vs the champion; retrain or not.

    `validated_dir` (the model's validated batches) is where delayed labels are read from; None skips
    the performance part. `retrain_in_flight` is the number of `train__<model>` runs queued or running
    (the DAG asks Airflow). Writes <key>.html, <key>.json and the index line; returns the verdict and
    the decision. Scores, validated batches and reports are local paths or URIs (pipelines/storage.py).
    The champion's features.json and training reference are downloaded from MLflow into `download_dir`
    (local); by default reports_dir/_champion/<key> when reports_dir is local, else a temporary folder.
    """
    import pandas as pd

    from pipelines.model import champion_info
    from pipelines.score import join_delayed_labels, label_join_unsupported, read_scores

    if download_dir is None and not storage.is_remote(reports_dir):
        download_dir = storage.local_path(reports_dir) / "_champion" / key
    with tempfile.TemporaryDirectory(prefix="flywheel-champion-") as tmp:
        champ = champion_info(spec.registered_model_name, download_dir or Path(tmp))
        reference = pd.read_parquet(champ.reference_path) if champ is not None else None
    if champ is None or reference is None:
        raise ValueError(f"{spec.name}: no champion, so no reference to compare with; train a model first.")
    start = interval_end - timedelta(days=spec.drift.window_days)
    current = read_scores(scores_dir, start, interval_end)
    if len(current) == 0:
        raise ValueError(
            f"{spec.name}: no scored rows in {start.isoformat()} → {interval_end.isoformat()} under {scores_dir}; "
            "check that score__<model> ran for this interval (or that the batch was not blocked)."
        )
    result = compute_drift(
        reference,
        current,
        champ.features,
        champ.categorical,
        spec,
        reports_dir,
        key,
        champ.version,
        start,
        interval_end,
    )

    unsupported = label_join_unsupported(spec)
    if validated_dir is None:
        perf = performance_drift(spec, None, None, None, unavailable="no validated batches given: not checked")
    elif unsupported:
        perf = performance_drift(spec, None, None, None, unavailable=unsupported)
    else:
        labelled = join_delayed_labels(spec, current, validated_dir, interval_end)
        perf = performance_drift(
            spec,
            labelled["label"],
            labelled[PREDICTION_COLUMN],
            _gate_value(spec.registered_model_name, champ.version),
            rows_pending=len(current) - len(labelled),
        )
    result = replace(result, performance=perf)

    trained_at = datetime.fromisoformat(champ.trained_as_of) if champ.trained_as_of else None
    decision = decide_retrain(
        result, spec, trained_at, interval_end, history=list_reports(reports_dir), retrain_in_flight=retrain_in_flight
    )
    record_verdict(reports_dir, key, result, decision, spec)
    log.info(
        "%s drift %s: %.0f%% columns drifted; performance %s; %s",
        spec.name,
        key,
        100 * result.drifted_share,
        perf.get("status"),
        decision.reason,
    )
    return result, decision


def _gate_value(model_name: str, version: str) -> float | None:
    """The champion's primary metric on its gate holdout (version tag GATE_VALUE_TAG), None if absent."""
    from mlflow import MlflowClient

    try:
        raw = MlflowClient().get_model_version(model_name, version).tags.get(GATE_VALUE_TAG)
        value = float(raw) if raw not in (None, "", "None") else None
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value):
        log.warning(
            "%s v%s has no usable %s tag; performance drift is recorded as unknown", model_name, version, GATE_VALUE_TAG
        )
        return None
    return value
