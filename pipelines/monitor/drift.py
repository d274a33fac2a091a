"""Data drift per column with Evidently: column selection, sampling, stat tests, per-column verdicts.

`compute_drift` writes the Evidently report and the JSON verdict of one window; `drift_scores` gives
the same verdicts without files (tests, benches).
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pipelines import storage
from pipelines.monitor.reports import _check_key, _write_atomic
from pipelines.monitor.results import ColumnScores, DriftResult
from pipelines.util import json_safe

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)

PREDICTION_COLUMN = "prediction"
LOW_CARDINALITY = 5  # numeric columns with this few distinct values are scored like categories
SMALL_SAMPLE_ROWS = 1000  # below this, distance scores are noisy; said in the log and the email


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
    _write_atomic(json_path, json.dumps(json_safe(result.to_dict()), indent=2).encode())
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
