"""Drift stage of `monitor__<model>`: compare this window's rows with the reference, decide on a retrain.

Evidently computes the statistics (`Report([DataDriftPreset(...)])`); this module picks the columns,
pins the drift methods so `spec.drift.threshold` always means a distance, turns the snapshot into a
small verdict, decides whether to request a retrain and composes the email to the model's owners.

Nothing heavy is imported at module level: pandas and evidently are imported inside functions.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)

PREDICTION_COLUMN = "prediction"
# Evidently's own defaults for a reference above 1,000 rows, pinned for every size so that
# spec.drift.threshold is always a distance (drift when score >= threshold). Left to itself, Evidently
# switches to p-value tests (KS, chi-square, z) at <= 1,000 reference rows, where the same threshold
# would mean the opposite (drift when p < threshold).
NUMERIC_METHOD = "wasserstein"  # normed by the reference std
CATEGORICAL_METHOD = "jensenshannon"  # also used for numeric columns with <= 5 distinct values
LOW_CARDINALITY = 5
SMALL_SAMPLE_ROWS = 1000  # below this, distance scores are noisy; said in the log and the email
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
EMAIL_TOP_COLUMNS = 15


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftResult:
    model: str
    interval_start: str  # ISO, the window of current data
    interval_end: str
    champion_version: str | None
    rows_reference: int  # after sampling down to spec.drift.reference_rows
    rows_current: int
    columns: dict[str, dict]  # column -> {"score", "drifted", "method", "threshold"}
    drifted_share: float
    drift_detected: bool  # drifted_share >= spec.drift.drift_share
    report_html: str  # path of the Evidently HTML report
    verdict_json: str  # path of the JSON verdict (this object as dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def drifted_columns(self) -> list[str]:
        """Drifted columns, most drifted first (score relative to its threshold)."""
        return [c for c in _ranked(self.columns) if self.columns[c]["drifted"]]

    @property
    def drifted_count(self) -> int:
        return sum(1 for v in self.columns.values() if v["drifted"])


@dataclass(frozen=True)
class RetrainDecision:
    request: bool
    reason: str


@dataclass(frozen=True)
class Email:
    to: tuple[str, ...]
    subject: str
    html: str
    attachments: tuple[str, ...]  # file paths


# --------------------------------------------------------------------------------------------
# drift
# --------------------------------------------------------------------------------------------


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    categorical: list[str],
    spec: ModelSpec,
    out_dir: Path,
    key: str,
    champion_version: str | None,
    interval_start: datetime,
    interval_end: datetime,
) -> DriftResult:
    """Drift of `current` against `reference` over `columns`; writes out_dir/<key>.html and <key>.json.

    `columns` are the model's feature columns; "prediction" is added when both frames have it.
    `categorical` names the categorical ones (any other non-numeric column is treated as categorical
    too). The reference is sampled down to spec.drift.reference_rows (seeded by spec.seed). Re-running
    with the same key overwrites both files.
    """
    _check_key(key)
    if len(current) == 0:
        raise ValueError(
            f"{spec.name}: no current rows in {interval_start.isoformat()} → {interval_end.isoformat()}; "
            "nothing to compare. Check that scoring ran for this interval (or that data landed)."
        )
    if len(reference) == 0:
        raise ValueError(
            f"{spec.name}: the reference frame is empty; drift needs the champion's training window "
            "(or another reference). Check the reference query for this model."
        )

    cols = _select_columns(reference, current, columns, spec.name)
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

    threshold = float(spec.drift.threshold)
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
                "threshold": threshold,
            }
        else:
            evaluable.append(c)
    if not evaluable:
        raise ValueError(
            f"{spec.name}: every drift column ({', '.join(cols)}) is entirely null in the "
            "reference or the current frame; check the feature pipeline for this interval."
        )

    methods = {c: _method_for(c, c in cat_set, ref, cur) for c in evaluable}
    for n, what in ((len(ref), "reference"), (len(cur), "current")):
        if n < SMALL_SAMPLE_ROWS:
            log.warning("%s: only %d %s rows; drift distances on small samples are noisy", spec.name, n, what)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"{key}.html"
    json_path = out_dir / f"{key}.json"

    snapshot = _run_evidently(
        ref,
        cur,
        evaluable,
        [c for c in num_cols if c in evaluable],
        [c for c in cat_cols if c in evaluable],
        methods,
        spec,
        key,
        champion_version,
        interval_end,
    )
    verdicts.update(_column_verdicts(snapshot.dict(), methods, cat_set, threshold, spec.name))
    columns_out = {c: verdicts[c] for c in cols}

    n_drifted = sum(1 for v in columns_out.values() if v["drifted"])
    share = n_drifted / len(columns_out)
    result = DriftResult(
        model=spec.name,
        interval_start=interval_start.isoformat(),
        interval_end=interval_end.isoformat(),
        champion_version=champion_version,
        rows_reference=len(ref),
        rows_current=len(cur),
        columns=columns_out,
        drifted_share=share,
        drift_detected=share >= spec.drift.drift_share,
        report_html=str(html_path),
        verdict_json=str(json_path),
    )
    _write_atomic(html_path, snapshot.get_html_str(as_iframe=False).encode("utf-8"))
    _write_atomic(json_path, json.dumps(_json_safe(result.to_dict()), indent=2).encode())
    log.info(
        "%s: drift in %d/%d columns (%.0f%%, threshold %.0f%%) → %s; report %s",
        spec.name,
        n_drifted,
        len(columns_out),
        100 * share,
        100 * spec.drift.drift_share,
        "drift detected" if result.drift_detected else "no drift",
        html_path,
    )
    return result


def _run_evidently(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    cols: list[str],
    num_cols: list[str],
    cat_cols: list[str],
    methods: dict[str, str],
    spec: ModelSpec,
    key: str,
    champion_version: str | None,
    interval_end: datetime,
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
    snap: dict, methods: dict[str, str], categorical: set[str], threshold: float, model: str
) -> dict[str, dict]:
    """Per-column score from the ValueDrift metrics, drifted from their tests (FAIL = drift)."""
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
        score = scores[col]
        st = status.get(col)
        if st in ("SUCCESS", "FAIL"):
            drifted = st == "FAIL"
        else:  # no test result (or an error): fall back to the distance rule
            drifted = not math.isfinite(score) or score >= threshold
            log.warning(
                "%s: no Evidently test status for %r (%s); drifted=%s from score %.4f", model, col, st, drifted, score
            )
        out[col] = {
            "score": score,
            "drifted": bool(drifted),
            "method": _method_label(method, col in categorical),
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
    ref = reference[cols]
    n = int(spec.drift.reference_rows)
    if n > 0 and len(ref) > n:
        ref = ref.sample(n=n, random_state=spec.seed)
    return ref.reset_index(drop=True), current[cols].reset_index(drop=True)


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


def _method_for(col: str, categorical: bool, ref: pd.DataFrame, cur: pd.DataFrame) -> str:
    if categorical:
        return CATEGORICAL_METHOD
    import pandas as pd

    distinct = pd.concat([ref[col], cur[col]]).nunique()
    return CATEGORICAL_METHOD if distinct <= LOW_CARDINALITY else NUMERIC_METHOD


def _method_label(method: str, categorical: bool) -> str:
    """Evidently's display name of a stat test ("Wasserstein distance (normed)"), else its id."""
    try:
        from evidently.legacy.calculations.stattests.registry import get_registered_stattest
        from evidently.legacy.core import ColumnType

        kind = ColumnType.Categorical if categorical else ColumnType.Numerical
        return str(get_registered_stattest(method, kind).display_name)
    except Exception:  # a label only; never fail the stage for it
        return method


def _ranked(columns: dict[str, dict]) -> list[str]:
    def severity(c: str) -> float:
        v = columns[c]
        score, thr = float(v["score"]), float(v["threshold"]) or 1.0
        return math.inf if not math.isfinite(score) else score / thr

    return sorted(columns, key=lambda c: (not columns[c]["drifted"], -severity(c), c))


# --------------------------------------------------------------------------------------------
# retrain decision
# --------------------------------------------------------------------------------------------


def decide_retrain(
    result: DriftResult, spec: ModelSpec, champion_trained_until: datetime | None, now: datetime
) -> RetrainDecision:
    """Request a retrain when drift was detected, unless the champion is younger than the cooldown.

    `now` is the end of the monitored interval (never the wall clock), so re-runs and backfills
    decide the same way. Naive datetimes are taken as UTC.
    """
    summary = _drift_summary(result, spec)
    if not result.drift_detected:
        return RetrainDecision(False, f"no drift: {summary}")
    if champion_trained_until is None:
        return RetrainDecision(True, f"{summary}; no champion yet")
    age = _utc(now) - _utc(champion_trained_until)
    cooldown = int(spec.drift.cooldown_days)
    champ = _champion_label(result.champion_version)
    days = age.total_seconds() / 86400
    if age.total_seconds() < 0:
        return RetrainDecision(
            False,
            f"suppressed: {champ} was trained on data up to "
            f"{_utc(champion_trained_until).date()}, after this interval "
            f"(ends {_utc(now).date()}); {summary}",
        )
    if days < cooldown:
        return RetrainDecision(
            False, f"suppressed: {champ} trained {_days(days)} ago, inside the {cooldown}-day cooldown; {summary}"
        )
    return RetrainDecision(True, f"{summary}; {champ} trained {_days(days)} ago (cooldown {cooldown} days)")


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
    else:
        subject = f"[Flywheel] {spec.name}: no drift ({n}/{total} features drifted, {window})"

    attachment, note = _report_attachment(result)
    body = _email_html(spec, result, decision, links, window, note)
    return Email(to=tuple(spec.owners), subject=subject, html=body, attachments=(attachment,))


def _report_attachment(result: DriftResult) -> tuple[str, str]:
    src = Path(result.report_html)
    if not src.exists():
        log.warning("%s: report %s is missing; attaching the JSON verdict", result.model, src)
        return result.verdict_json, f"The HTML report {src.name} was not found; the JSON verdict is attached."
    gz = src.with_name(src.name + ".gz")
    tmp = gz.with_name(gz.name + ".tmp")
    with (
        src.open("rb") as fin,
        tmp.open("wb") as raw,
        gzip.GzipFile(
            filename=src.name,
            mode="wb",
            fileobj=raw,
            mtime=0,  # mtime=0: same input, same bytes
        ) as fout,
    ):
        shutil.copyfileobj(fin, fout)
    os.replace(tmp, gz)
    size = gz.stat().st_size
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
    return str(gz), f"The full Evidently report is attached ({gz.name}; open it after gunzip)."


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
    verdict = "Drift detected" if result.drift_detected else "No drift"
    colour = "#b42318" if result.drift_detected else "#067647"

    ranked = _ranked(result.columns)
    top = ranked[: max(min(n, EMAIL_TOP_COLUMNS), min(5, len(ranked)))]
    rows = "\n".join(
        "<tr>"
        f"<td>{e(c)}</td>"
        f"<td style='text-align:right'>{_fmt_score(result.columns[c]['score'])}</td>"
        f"<td>{e(str(result.columns[c]['method']))}</td>"
        f"<td style='text-align:right'>{float(result.columns[c]['threshold']):.3g}</td>"
        f"<td>{'yes' if result.columns[c]['drifted'] else 'no'}</td>"
        "</tr>"
        for c in top
    )
    more = f"<p>{len(ranked) - len(top)} more column(s) in the attached report.</p>" if len(ranked) > len(top) else ""

    if decision.request:
        next_step = f"<b>Retrain requested.</b> {e(decision.reason)}"
    elif result.drift_detected:
        next_step = f"<b>No retrain requested.</b> {e(decision.reason)}"
    else:
        next_step = f"Nothing to do. {e(decision.reason)}"

    small = ""
    if min(result.rows_current, result.rows_reference) < SMALL_SAMPLE_ROWS:
        small = (
            f"<p><i>Few rows (current {result.rows_current:,}, reference {result.rows_reference:,}): "
            "drift scores on small samples are noisy.</i></p>"
        )

    link_items = "".join(
        f'<li><a href="{e(url, quote=True)}">{e(label)}</a></li>' for label, url in links.items() if url
    )
    link_block = f"<h3>Links</h3><ul>{link_items}</ul>" if link_items else ""
    champion = e(_champion_label(result.champion_version)) if result.champion_version else "no champion yet"

    return f"""<html><body style="font-family:sans-serif">
<h2 style="color:{colour}">{e(spec.name)}: {verdict}</h2>
<p>{n} of {total} monitored columns drifted ({100 * result.drifted_share:.0f}%; the model's drift share is
{100 * spec.drift.drift_share:.0f}%, per-column threshold {spec.drift.threshold:g}).</p>
<p>Window {e(window)} ({result.rows_current:,} rows) against the reference ({result.rows_reference:,} rows),
{champion}.</p>
{small}
<h3>Most drifted columns</h3>
<table border="1" cellpadding="4" cellspacing="0" style="border-collapse:collapse">
<tr><th>Column</th><th>Score</th><th>Method</th><th>Threshold</th><th>Drifted</th></tr>
{rows}
</table>
{more}
<h3>What happens next</h3>
<p>{next_step}</p>
{link_block}
<p>{e(note)}</p>
<p style="color:#667085">{e(spec.description)} Owners: {e(", ".join(spec.owners))}.</p>
</body></html>
"""


def _fmt_score(score: Any) -> str:
    s = float(score)
    return "n/a" if not math.isfinite(s) else f"{s:.3f}"


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _check_key(key: str) -> None:
    if not key or "/" in key or "\\" in key or key in (".", ".."):
        raise ValueError(
            f"drift report key {key!r} must be a plain file name (no path separators), "
            "e.g. the interval key '2026-03-02'."
        )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


def check_drift(spec: ModelSpec, scores_dir: Path, reports_dir: Path, interval_end: datetime,
                key: str) -> tuple[DriftResult, RetrainDecision]:
    """Drift of the last `drift.window_days` of scores vs the champion's reference; retrain or not."""
    from datetime import timedelta

    import pandas as pd

    from pipelines.model import champion_info
    from pipelines.score import read_scores

    champ = champion_info(spec.registered_model_name, reports_dir / "_champion" / key)
    if champ is None:
        raise ValueError(f"{spec.name}: no champion, so no reference to compare with; train a model first.")
    start = interval_end - timedelta(days=spec.drift.window_days)
    current = read_scores(scores_dir, start, interval_end)
    reference = pd.read_parquet(champ.reference_path)
    result = compute_drift(reference, current, champ.features, champ.categorical, spec, reports_dir, key,
                           champ.version, start, interval_end)
    trained_at = datetime.fromisoformat(champ.trained_as_of) if champ.trained_as_of else None
    decision = decide_retrain(result, spec, trained_at, interval_end)
    log.info("%s drift %s: %.0f%% columns drifted; %s", spec.name, key, 100 * result.drifted_share, decision.reason)
    return result, decision
