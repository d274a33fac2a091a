"""The evaluation gate and the registry moves that follow it. Fails closed.

What the gate decides, and how (thresholds come from the spec's `gate:` section, never from code):

* **Same data.** Challenger and champion are scored on the same, newest labelled holdout (the days
  after the training window; no row of it was trained on).
* **Metrics** come from the registry (pipelines/metrics.py): its direction, its estimate on the
  holdout and its vectorised resampling kernel. Every registered metric can be the primary one.
* **Improvement** is measured in the metric's better direction: `challenger - champion` when higher
  is better (average precision, ROC AUC), `champion - challenger` when lower is better (log loss, MAE,
  RMSE). Positive means the challenger is better. **Relative improvement** is
  `improvement / |champion|`, the champion's value on the same holdout.
* **Paired bootstrap.** `bootstrap_resamples` resamples of the holdout rows (seeded with the spec's
  `training.seed`, so a re-run gives the same interval); both models are scored on the same resample,
  which cancels the noise they share. The interval is the percentile interval at `confidence`
  (two-sided: the lower bound is the `(1 - confidence) / 2` quantile of the resampled improvements).
* **Tolerance.** `min_delta` (absolute) and `min_relative_delta` (relative) are the improvement the
  challenger must show *beyond noise*: the lower bound of the interval must be strictly greater. With
  0, a challenger whose improvement is within noise (a tie, or a lower bound at or below 0) is not
  promoted and the champion stays; noise alone never promotes. A negative tolerance would accept a
  "not worse than" challenger; the shipped specs do not use one.
* **Slices** (`gate.slices`): per-slice metrics on the same rows. A slice blocks promotion when the
  challenger is worse than the champion there by more than `slice_tolerance` beyond noise (the upper
  bound of the slice's improvement interval is below `-slice_tolerance`), so noise alone never
  blocks either. Slices with fewer than `slice_min_rows` rows (or, for classifiers,
  `slice_min_positives` positives or no negatives) are ignored and recorded as too small.
* **Operational checks:** the Brier score of a classifier must be <= `max_brier` (calibration), and
  the p95 latency of single-row predictions must be <= `max_latency_p95_ms`.
* **Fail closed:** a NaN or missing metric, an empty or too-small holdout, a missing threshold, an
  unreadable challenger or champion all mean "not promoted", with the reason. The first model ever
  (no champion) is judged on the value thresholds only, recorded as `mode = first_model`.

Registry moves are MLflow aliases: `champion` (what scoring loads), `previous-champion` (what a
rollback restores) and `challenger` (the newest evaluated version). Every move is appended to the
alias history, kept as registered-model tags `flywheel.alias_history.<UTC timestamp>.<id>` holding one
JSON entry each (who, what, when, why): one write per entry, so concurrent writers never overwrite
each other; it lives on the registered model itself (shown in the MLflow UI, survives with the model,
no extra store); `alias_history(spec)` returns it oldest first.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import tags
from pipelines.util import json_safe

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipelines.metrics import Metric
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous-champion", "challenger"
DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SLICE_MIN_ROWS = 100
DEFAULT_SLICE_MIN_POSITIVES = 5
DEFAULT_LATENCY_SAMPLES = 300


class PromotionError(RuntimeError):
    """An alias move that cannot be made (no previous champion, unknown version, no reason...)."""


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class Interval:
    """A paired-bootstrap interval of the improvement (positive = the challenger is better)."""

    estimate: float          # on the whole holdout
    low: float
    high: float
    confidence: float
    resamples: int
    valid: int               # resamples where both metrics were defined
    seed: int
    units: int = 0           # what was resampled: rows, or clusters (entities) when given

    @property
    def defined(self) -> bool:
        return _finite(self.low) and _finite(self.high) and _finite(self.estimate)


@dataclass(frozen=True)
class SliceResult:
    column: str
    value: str
    rows: int
    positives: int | None
    challenger: float | None
    champion: float | None
    improvement: Interval | None
    status: str              # ok | regressed | too_small | undefined | not_compared
    detail: str


@dataclass(frozen=True)
class Evidence:
    """Everything the decision is made from; built by `compare_on_holdout` (pure numpy)."""

    holdout_rows: int
    holdout_positives: int | None = None       # classifiers only
    challenger: dict[str, float] = field(default_factory=dict)
    champion_version: str | None = None
    champion: dict[str, float] | None = None
    improvement: Interval | None = None
    slices: tuple[SliceResult, ...] = ()
    latency_p95_ms: float | None = None
    latency_p50_ms: float | None = None
    challenger_error: str | None = None
    champion_error: str | None = None
    release_checks: tuple[Check, ...] = ()      # golden sets and fairness rules (pipelines/release/checks.py)
    release: dict[str, Any] = field(default_factory=dict)   # their full results, for the artifact and the card


@dataclass(frozen=True)
class GateDecision:
    model: str
    challenger_version: str
    champion_version: str | None
    promote: bool
    reason: str
    metric: str
    challenger_value: float | None
    champion_value: float | None
    holdout_rows: int
    checks: tuple[Check, ...] = field(default=())
    mode: str = "vs_champion"               # or first_model: value thresholds only
    improvement: Interval | None = None
    slices: tuple[SliceResult, ...] = ()
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    latency_p95_ms: float | None = None
    holdout_positives: int | None = None
    release: dict[str, Any] = field(default_factory=dict)   # golden sets and fairness parity, in full

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN/inf become None: the reason and the checks say what was undefined)."""
        return json_safe(asdict(self))

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x: float | None, signed: bool = False) -> str:
    if not _finite(x):
        return str(x)
    return f"{x:+.4f}" if signed else f"{x:.4f}"


# --------------------------------------------------------------------------------------------------
# The paired bootstrap. A resample is a column of counts (how often each cluster, or row, was drawn): the
# metric of the resampled data equals the count-weighted metric, computed by the registry's `resampler`
# (pipelines/metrics.py) from statistics prepared once per model (the scores are sorted once, not per
# resample), B resamples at a time.

_COUNTS_BUDGET = 1 << 25     # cluster counts held at once: (clusters x resamples) <= 2^25 (128 MB in float32)


def _draw_counts(rng: np.random.Generator, n: int, size: int, dtype: type) -> np.ndarray:
    """(size, n) draw counts: resample r is `rng.integers(0, n, n)` counted, drawn in order, so the counts
    do not depend on how the resamples are split into chunks (an int32 and an int64 request draw the same
    numbers; int32 is faster)."""
    import numpy as np

    draw = np.int32 if n < 2**31 else np.int64
    out: np.ndarray = np.empty((size, n), dtype=dtype)
    for r in range(size):
        out[r] = np.bincount(rng.integers(0, n, size=n, dtype=draw), minlength=n)
    return out


def resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """`size` bootstrap resamples of `n` rows as a (size, n) matrix of draw counts."""
    import numpy as np

    return _draw_counts(rng, n, size, np.float64)


def cluster_counts(rng: np.random.Generator, k: int, size: int) -> np.ndarray:
    """The same draws as `resample_counts(rng, k, size)`, transposed: (k, size), one column per resample,
    float32 (exact: a count is at most k < 2^24) or float64 beyond that; what `Metric.resampler` takes."""
    import numpy as np

    dtype = np.float32 if k < 2**24 else np.float64
    return np.ascontiguousarray(_draw_counts(rng, k, size, dtype).T)


def paired_bootstrap(metric: str | Metric, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                     resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                     clusters: np.ndarray | None = None) -> Interval:
    """Percentile interval of the improvement (challenger over champion, in the metric's better direction,
    from the registry), both models scored on the same resamples. With `clusters` (e.g. the entity key of
    each row) whole clusters are resampled, so rows of one customer move together and the interval is not
    too narrow. Undefined (NaN bounds) when over 10% of the resamples leave the metric undefined for either
    model (e.g. a resample without a positive row): the interval would then describe a different population.

    Each model's statistics are prepared once (`Metric.resampler`: sorted scores, per-cluster sums), then
    the resamples are drawn and scored in chunks of bounded memory; the draws do not depend on the chunk
    size, so a seed gives the same resamples as it always did."""
    import numpy as np

    from pipelines.metrics import metric as registered

    m = registered(metric) if isinstance(metric, str) else metric
    n = len(y)
    estimate = m.sign * (m.value(y, challenger) - m.value(y, champion))
    if n == 0 or resamples <= 0 or not (np.all(np.isfinite(challenger)) and np.all(np.isfinite(champion))):
        return Interval(estimate, math.nan, math.nan, confidence, resamples, 0, seed)
    if clusters is not None and len(clusters) == n:
        _, member = np.unique(clusters, return_inverse=True)
        member = member.ravel()
    else:
        member = np.arange(n)
    k = int(member.max()) + 1
    ours, theirs = m.resampler(y, challenger, member, k), m.resampler(y, champion, member, k)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _COUNTS_BUDGET // k))        # bounded memory on big holdouts
    deltas = []
    for start in range(0, resamples, chunk):
        counts = cluster_counts(rng, k, min(chunk, resamples - start))
        deltas.append(m.sign * (ours(counts) - theirs(counts)))
    d = np.concatenate(deltas)
    d = d[np.isfinite(d)]
    if len(d) < 0.9 * resamples:
        return Interval(estimate, math.nan, math.nan, confidence, resamples, len(d), seed, k)
    low, high = np.quantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(estimate, float(low), float(high), confidence, resamples, len(d), seed, k)


def brier_score(y: np.ndarray, prob: np.ndarray) -> float:
    import numpy as np

    if len(y) == 0 or not np.all(np.isfinite(prob)):
        return math.nan
    return float(np.mean((prob - y) ** 2))


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width probability bins: sum of |observed rate - mean prediction| x bin share."""
    import numpy as np

    if len(y) == 0 or not np.all(np.isfinite(prob)):
        return math.nan
    b = np.clip((prob * bins).astype(int), 0, bins - 1)
    count = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, weights=y, minlength=bins) - np.bincount(b, weights=prob, minlength=bins))
    return float(gap.sum() / count.sum())


def holdout_metrics(spec: ModelSpec, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The challenger's (or champion's) metrics on the holdout (every registered metric of the task, the
    primary one included, plus the calibration checks of a classifier); NaN where undefined."""
    from pipelines import model as m

    out = m.metrics_for(spec, y, pred)
    if spec.task == "binary":
        out["brier"] = brier_score(y, pred)
        out["ece"] = expected_calibration_error(y, pred)
    return out


# --------------------------------------------------------------------------------------------------
# Slices


def slice_labels(spec: ModelSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per slice column of the spec, each row's slice label (numeric columns bucketed by `bins`).
    A slice column missing from the holdout gives an empty dict entry (recorded as undefined)."""
    import numpy as np
    import pandas as pd

    out: dict[str, np.ndarray] = {}
    for s in spec.slices:
        if s.column not in frame.columns:
            out[s.column] = np.array([], dtype=object)
            continue
        col = frame[s.column]
        if s.bins:
            edges = [-math.inf, *s.bins, math.inf]
            labels = [_bucket_label(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
            cut = pd.cut(pd.to_numeric(col, errors="coerce"), edges, right=False, labels=labels)
            out[s.column] = cut.astype(object).where(cut.notna(), "missing").to_numpy()
        else:
            out[s.column] = col.astype(object).where(col.notna(), "missing").astype(str).to_numpy()
    return out


def _bucket_label(lo: float, hi: float) -> str:
    if math.isinf(lo):
        return f"<{hi:g}"
    if math.isinf(hi):
        return f">={lo:g}"
    return f"[{lo:g}, {hi:g})"


def compare_slices(spec: ModelSpec, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray | None,
                   labels: dict[str, np.ndarray], clusters: np.ndarray | None = None) -> tuple[SliceResult, ...]:
    from pipelines.metrics import metric as registered

    metric = spec.primary_metric
    primary = registered(metric)
    min_rows = spec.gate.get("slice_min_rows", DEFAULT_SLICE_MIN_ROWS)
    min_pos = spec.gate.get("slice_min_positives", DEFAULT_SLICE_MIN_POSITIVES)
    tol = spec.gate.get("slice_tolerance")
    resamples = int(spec.gate.get("bootstrap_resamples", DEFAULT_RESAMPLES))
    confidence = spec.gate.get("confidence", DEFAULT_CONFIDENCE)
    results: list[SliceResult] = []
    for column, lab in labels.items():
        if len(lab) != len(y):
            results.append(SliceResult(column, "*", 0, None, None, None, None, "undefined",
                                       f"slice column `{column}` is not in the holdout"))
            continue
        for value in sorted(set(lab.tolist()), key=str):
            mask = lab == value
            rows = int(mask.sum())
            ys, pc = y[mask], challenger[mask]
            pos = int(ys.sum()) if spec.task == "binary" else None
            name = f"{column}={value}"
            if rows < min_rows or (pos is not None and (pos < min_pos or pos == rows)):
                need = f"need >= {min_rows:g} rows" + (f" and >= {min_pos:g} positives and a negative"
                                                         if pos is not None else "")
                results.append(SliceResult(column, str(value), rows, pos, None, None, None, "too_small",
                                           f"{name}: ignored, {rows} rows" + (f", {pos} positives" if pos is not None
                                                                              else "") + f" ({need})"))
                continue
            cv = primary.value(ys, pc)
            if champion is None:
                results.append(SliceResult(column, str(value), rows, pos, cv, None, None, "not_compared",
                                           f"{name}: {metric} {_fmt(cv)} ({rows} rows)"))
                continue
            iv = paired_bootstrap(primary, ys, pc, champion[mask], resamples, confidence, spec.seed,
                                  clusters[mask] if clusters is not None else None)
            hv = primary.value(ys, champion[mask])
            if not iv.defined:
                status, text = "undefined", "improvement undefined"
            elif tol is not None and iv.high < -tol:
                status, text = "regressed", f"regression beyond the {tol:g} tolerance"
            else:
                status, text = "ok", "within tolerance"
            results.append(SliceResult(
                column, str(value), rows, pos, cv, hv, iv, status,
                f"{name}: {metric} {_fmt(cv)} vs {_fmt(hv)}, improvement {_fmt(iv.estimate, True)} "
                f"[{_fmt(iv.low, True)}, {_fmt(iv.high, True)}] ({rows} rows): {text}"))
    return tuple(results)


# --------------------------------------------------------------------------------------------------
# Evidence and decision (pure)


def compare_on_holdout(spec: ModelSpec, y: np.ndarray, challenger_pred: np.ndarray | None,
                       champion_pred: np.ndarray | None = None, champion_version: str | None = None,
                       slices: dict[str, np.ndarray] | None = None, latency: dict[str, float] | None = None,
                       challenger_error: str | None = None, champion_error: str | None = None,
                       clusters: np.ndarray | None = None) -> Evidence:
    """Metrics, the paired bootstrap of the primary metric's improvement (resampling `clusters`, e.g.
    entities, when given) and the slices."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    unlabelled = int((~np.isfinite(y)).sum())
    positives = int(np.nansum(y)) if spec.task == "binary" else None
    if unlabelled:
        challenger_error = f"{unlabelled} holdout rows have no label: the holdout is broken"
    if challenger_pred is None or len(challenger_pred) != n or unlabelled:
        challenger_error = challenger_error or "challenger made no predictions"
        return Evidence(n, positives, {spec.primary_metric: math.nan}, champion_version, None, None, (),
                        None, None, challenger_error, champion_error)
    chal = holdout_metrics(spec, y, challenger_pred)
    champ_metrics, improvement = None, None
    if champion_pred is not None and champion_error is None:
        if len(champion_pred) != n:
            champion_error = "champion made no predictions on the holdout"
        else:
            champ_metrics = holdout_metrics(spec, y, champion_pred)
            improvement = paired_bootstrap(
                spec.primary_metric, y, challenger_pred, champion_pred,
                int(spec.gate.get("bootstrap_resamples", DEFAULT_RESAMPLES)),
                spec.gate.get("confidence", DEFAULT_CONFIDENCE), spec.seed, clusters)
    compared = champion_pred if champ_metrics is not None else None
    slice_results = compare_slices(spec, y, challenger_pred, compared, slices or {}, clusters) if n else ()
    lat = latency or {}
    return Evidence(n, positives, chal, champion_version, champ_metrics, improvement, slice_results,
                    lat.get("p95_ms"), lat.get("p50_ms"), challenger_error, champion_error)


def required_thresholds(spec: ModelSpec, has_champion: bool) -> list[str]:
    keys = ["min_primary" if spec.higher_is_better else "max_primary", "max_latency_p95_ms"]
    if spec.task == "binary":
        keys.append("max_brier")
    if has_champion:
        keys.append("min_delta")
        if spec.slices:
            keys.append("slice_tolerance")
    return keys


def decide_promotion(spec: ModelSpec, challenger_version: str, ev: Evidence) -> GateDecision:
    """Promote only if every check passes; anything missing or undefined means "not promoted"."""
    metric, hib, gate = spec.primary_metric, spec.higher_is_better, spec.gate
    first_model = ev.champion_version is None and ev.champion_error is None
    value = ev.challenger.get(metric)
    checks: list[Check] = []

    missing = [k for k in required_thresholds(spec, not first_model) if k not in gate]
    checks.append(Check("thresholds_configured", not missing, float(len(missing)), 0.0,
                        f"missing {', '.join('gate.' + k for k in missing)} in {spec.path.name}: refusing to promote "
                        "without them" if missing else "every required threshold is configured"))
    min_rows = max(1.0, gate.get("min_holdout_rows", 1.0))
    checks.append(Check("holdout_size", ev.holdout_rows >= min_rows, float(ev.holdout_rows), min_rows,
                        f"{ev.holdout_rows} holdout rows (need >= {min_rows:g})"))
    if spec.task == "binary":
        pos = ev.holdout_positives or 0
        min_pos = max(1.0, gate.get("min_holdout_positives", 1.0))
        checks.append(Check("holdout_positives", pos >= min_pos and pos < ev.holdout_rows, float(pos), min_pos,
                            f"{pos} positive holdout rows of {ev.holdout_rows} (need >= {min_pos:g} and a negative)"))
    defined = _finite(value) and ev.challenger_error is None
    checks.append(Check("challenger_metric_defined", defined, value if _finite(value) else None, None,
                        f"challenger {metric} = {_fmt(value)}"
                        + (f" ({ev.challenger_error})" if ev.challenger_error else "")))

    floor_key = "min_primary" if hib else "max_primary"
    checks.append(_bound_check("value_threshold", f"challenger {metric}", value, gate.get(floor_key), hib,
                               floor_key, spec))
    if spec.task == "binary":
        brier = ev.challenger.get("brier")
        c = _bound_check("calibration", "challenger Brier score", brier, gate.get("max_brier"), False, "max_brier",
                         spec)
        ece = ev.challenger.get("ece")
        checks.append(Check(c.name, c.passed, c.value, c.threshold, c.detail + (f"; ECE {_fmt(ece)}" if _finite(ece)
                                                                               else "")))
    checks.append(_bound_check("latency", "p95 single-row latency (ms)", ev.latency_p95_ms,
                               gate.get("max_latency_p95_ms"), False, "max_latency_p95_ms", spec))

    champ_value = (ev.champion or {}).get(metric)
    if first_model:
        checks.append(Check("vs_champion", True, None, None, "no champion yet: value thresholds only"))
    elif not defined:
        checks.append(Check("vs_champion", False, None, None,
                            f"challenger {metric} is undefined ({_fmt(value)}): cannot compare"))
    elif ev.champion_error is not None or not _finite(champ_value):
        checks.append(Check("vs_champion", False, None, None,
                            f"champion v{ev.champion_version} could not be evaluated: "
                            f"{ev.champion_error or _fmt(champ_value)}"))
    else:
        checks += _change_checks(spec, value, champ_value, ev)  # type: ignore[arg-type]

    if first_model:
        checks.append(Check("slices", True, None, None, "no champion yet: slices recorded, not compared"))
    elif spec.slices and ev.champion is None:
        checks.append(Check("slices", False, None, gate.get("slice_tolerance"),
                            "slices not compared: the champion could not be evaluated"))
    elif spec.slices:
        regressed = [s for s in ev.slices if s.status == "regressed"]
        undefined = [s for s in ev.slices if s.status == "undefined"]
        small = [s for s in ev.slices if s.status == "too_small"]
        compared = [s for s in ev.slices if s.status in ("ok", "regressed")]
        ok = bool(compared or small) and not regressed and not undefined and "slice_tolerance" in gate
        parts = [s.detail for s in regressed + undefined]
        parts.append(f"{len(compared)} slices compared, {len(regressed)} regressed beyond "
                     f"{gate.get('slice_tolerance', 'an unconfigured')} tolerance, {len(small)} too small (ignored)")
        checks.append(Check("slices", ok, float(len(regressed)), gate.get("slice_tolerance"), "; ".join(parts)))

    checks += ev.release_checks
    failed = [c for c in checks if not c.passed]
    vs = [c for c in checks if c.name.startswith("vs_champion")]
    if not failed:
        reason = "promoted: " + "; ".join(c.detail for c in checks if c.name == "value_threshold" or c in vs)
    else:
        context = [c.detail for c in vs if c.passed and not first_model]
        reason = "rejected: " + "; ".join([c.detail for c in failed] + context)
    return GateDecision(spec.name, challenger_version, ev.champion_version, not failed, reason, metric,
                        value, champ_value, ev.holdout_rows, tuple(checks),
                        "first_model" if first_model else "vs_champion", ev.improvement, ev.slices,
                        dict(ev.challenger), dict(ev.champion) if ev.champion is not None else None,
                        ev.latency_p95_ms, ev.holdout_positives, dict(ev.release))


def _bound_check(name: str, what: str, value: float | None, bound: float | None, is_floor: bool, key: str,
                 spec: ModelSpec) -> Check:
    op = ">=" if is_floor else "<="
    if bound is None:
        return Check(name, False, value if _finite(value) else None, None,
                     f"{what} {_fmt(value)}: no `gate.{key}` in {spec.path.name}, refusing to promote without one")
    ok = _finite(value) and (value >= bound if is_floor else value <= bound)  # type: ignore[operator]
    return Check(name, bool(ok), value if _finite(value) else None, bound,
                 f"{what} {_fmt(value)} (must be {op} {bound:g})")


def _change_checks(spec: ModelSpec, value: float, champ_value: float, ev: Evidence) -> list[Check]:
    gate, iv = spec.gate, ev.improvement
    v = ev.champion_version
    head = f"challenger {_fmt(value)} vs champion v{v} {_fmt(champ_value)}"
    if iv is None or not iv.defined:
        valid = f"{iv.valid}/{iv.resamples} resamples defined" if iv is not None else "no bootstrap"
        return [Check("vs_champion", False, None, gate.get("min_delta"),
                      f"{head}: improvement undefined ({valid}); cannot tell signal from noise")]
    ci = (f"improvement {_fmt(iv.estimate, True)}, {iv.confidence:.0%} CI [{_fmt(iv.low, True)}, "
          f"{_fmt(iv.high, True)}] over {iv.resamples} paired resamples")
    out = []
    min_delta = gate.get("min_delta")
    if min_delta is None:
        out.append(Check("vs_champion", False, iv.low, None,
                         f"{head}: {ci}; no `gate.min_delta` in {spec.path.name}: refusing to promote without one"))
    else:
        ok = iv.low > min_delta
        verdict = ("clears" if ok else "within noise: a tie is not promoted" if iv.low <= 0 <= iv.high
                   else "does not clear")
        out.append(Check("vs_champion", ok, iv.low, min_delta,
                         f"{head}: {ci}; lower bound must be > {min_delta:g} ({verdict})"))
    min_rel = gate.get("min_relative_delta")
    if min_rel is not None:
        if champ_value == 0:
            out.append(Check("vs_champion_relative", False, None, min_rel,
                             "relative improvement undefined: the champion's value is 0"))
        else:
            rel = iv.low / abs(champ_value)
            out.append(Check("vs_champion_relative", rel > min_rel, rel, min_rel,
                             f"relative improvement lower bound {rel:+.2%} of the champion's {_fmt(champ_value)} "
                             f"(must be > {min_rel:+.2%})"))
    return out


# --------------------------------------------------------------------------------------------------
# The gate as the train DAG runs it (I/O)


def evaluate_gate(spec: ModelSpec, challenger_version: str, holdout_path: str, features: list[str],
                  out_dir: Path, actor: str = "gate", run_key: str | None = None) -> GateDecision:
    """Score challenger and champion on the same holdout, decide, record it in MLflow, move `challenger`.
    What the gate cost (pipelines/release/cost.py) is logged on the challenger's run."""
    from pipelines.release.cost import measured, record_cost

    with measured() as cost:
        decision = _evaluate_gate(spec, challenger_version, holdout_path, features, out_dir, actor, run_key)
    try:
        client = _client()
        mv = client.get_model_version(spec.registered_model_name, str(challenger_version))
        when = mv.tags.get(tags.TRAINED_AS_OF) or mv.tags.get(tags.TRAINED_UNTIL)
        record_cost(client, mv.run_id, "gate", cost, datetime.fromisoformat(when) if when else _now())
    except Exception:   # the decision is recorded; a cost that could not be logged must not undo it
        log.exception("the gate's cost of v%s could not be logged", challenger_version)
    return decision


def _evaluate_gate(spec: ModelSpec, challenger_version: str, holdout_path: str, features: list[str],
                   out_dir: Path, actor: str, run_key: str | None) -> GateDecision:
    import pandas as pd

    from pipelines import model as m
    from pipelines.training import LABEL

    holdout = pd.read_parquet(holdout_path)
    y = holdout[LABEL].to_numpy(dtype="float64")
    name = spec.registered_model_name
    chal_pred, chal_error, latency = None, None, None
    try:
        booster = m.load_version(name, challenger_version)
        # each version reads the holdout with its own recorded categories
        x = m.to_matrix_frame(holdout, spec, features, m.load_categories(name, challenger_version))
        chal_pred = m.predict(booster, x)
        if len(x):
            latency = m.single_row_latency_ms(booster, x, int(spec.gate.get("latency_samples",
                                                                           DEFAULT_LATENCY_SAMPLES)))
    except Exception as exc:  # fail closed: an unreadable challenger is not promoted
        log.exception("challenger v%s could not be evaluated", challenger_version)
        chal_error = f"challenger unreadable: {exc}"
    champ_pred, champ_version, champ_error = None, None, None
    try:
        champ = m.champion(name)
        champ_version = str(champ.version) if champ is not None else None
        if champ_version == str(challenger_version):
            # a re-run after this version was promoted: compare with the champion it replaced, as the
            # first evaluation did, so the same run gives the same decision (none: first-model rules)
            champ_version = _alias(_client(), name, PREVIOUS)
    except Exception as exc:  # the registry could not say who the champion is: do not guess
        log.exception("the champion alias of %s could not be resolved", name)
        champ_version, champ_error = "?", f"champion alias unreadable: {exc}"
    if champ_version is not None and champ_error is None:
        if champ_version == str(challenger_version):
            champ_error = "challenger is already the champion"
        else:
            try:
                champ_x = m.to_matrix_frame(holdout, spec, features, m.load_categories(name, champ_version))
                champ_pred = m.predict(m.load_version(name, champ_version), champ_x)
            except Exception as exc:
                log.exception("champion v%s could not be evaluated", champ_version)
                champ_error = str(exc)
    clusters = holdout[spec.entity_key].to_numpy() if spec.entity_key in holdout.columns else None
    ev = compare_on_holdout(spec, y, chal_pred, champ_pred, champ_version, slice_labels(spec, holdout), latency,
                            chal_error, champ_error, clusters)
    if spec.golden or spec.fairness:
        from dataclasses import replace

        from pipelines.release.checks import release_checks

        loaded: dict[str, Any] = {}   # each version read from MLflow once, whatever the number of golden sets

        def predict_version(version: str, frame: pd.DataFrame) -> Any:
            if version not in loaded:
                loaded[version] = (m.load_version(name, version), m.load_categories(name, version))
            booster, categories = loaded[version]
            return m.predict(booster, m.to_matrix_frame(frame, spec, features, categories))

        extra, record = release_checks(spec, holdout, y, chal_pred, features, predict_version,
                                       str(challenger_version), champ_version if champ_error is None else None)
        ev = replace(ev, release_checks=tuple(extra), release=record)
        client = _client()
        for g in record["golden"]:   # which frozen sets this version was judged on, and their verdicts
            client.set_model_version_tag(name, str(challenger_version), f"{tags.GOLDEN_PREFIX}{g['name']}",
                                         f"{'PASS' if g['passed'] else 'FAIL'} sha256={g.get('sha256')}")
    decision = decide_promotion(spec, str(challenger_version), ev)
    record_decision(spec, decision, out_dir)
    _move_aliases(spec, "evaluate", {CHALLENGER: str(challenger_version)}, actor,
                  f"gate {'promoted' if decision.promote else 'rejected'} v{challenger_version}", run_key)
    return decision


def record_decision(spec: ModelSpec, decision: GateDecision, out_dir: Path) -> Path:
    """Tags on the challenger version (the decision and every check) plus the JSON artifact on its run."""
    from pipelines import model as m

    m.configure_mlflow_env()
    from mlflow import MlflowClient

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gate_v{decision.challenger_version}.json"
    path.write_text(json.dumps(decision.to_dict(), indent=2, default=str))
    client = MlflowClient()
    name = spec.registered_model_name
    iv = decision.improvement
    values = {tags.GATE_DECISION: "promoted" if decision.promote else "rejected",
              tags.GATE_REASON: decision.reason[:5000],
              tags.GATE_MODE: decision.mode,
              tags.GATE_METRIC: decision.metric,
              tags.GATE_CHALLENGER_VALUE: str(decision.challenger_value),
              tags.GATE_CHAMPION_VALUE: str(decision.champion_value),
              tags.GATE_CHAMPION_VERSION: str(decision.champion_version),
              tags.GATE_HOLDOUT_ROWS: str(decision.holdout_rows),
              tags.GATE_IMPROVEMENT: (f"{_fmt(iv.estimate, True)} [{_fmt(iv.low, True)}, {_fmt(iv.high, True)}] "
                                      f"{iv.confidence:.0%} CI, {iv.resamples} resamples, seed {iv.seed}"
                                      if iv is not None else "n/a"),
              tags.GATE_ARTIFACT: f"gate/{path.name}"}
    for c in decision.checks:
        values[f"{tags.GATE_CHECK_PREFIX}{c.name}"] = (f"{'PASS' if c.passed else 'FAIL'} value={_fmt(c.value)} "
                                                       f"threshold={_fmt(c.threshold)} | {c.detail}")[:5000]
    if decision.slices:
        counts: dict[str, int] = {}
        for s in decision.slices:
            counts[s.status] = counts.get(s.status, 0) + 1
        bad = [f"{s.column}={s.value}" for s in decision.slices if s.status in ("regressed", "undefined")]
        values[tags.GATE_SLICES] = (", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                                    + (f"; blocking: {', '.join(bad)}" if bad else ""))
    for k, v in values.items():
        client.set_model_version_tag(name, decision.challenger_version, k, v)
    run_id = client.get_model_version(name, decision.challenger_version).run_id
    client.log_artifact(run_id, str(path), artifact_path="gate")
    log.info("gate %s v%s: %s", spec.name, decision.challenger_version, decision.reason)
    for c in decision.checks:
        log.info("  %-24s %s  %s", c.name, "PASS" if c.passed else "FAIL", c.detail)
    return path


def read_decision(spec: ModelSpec, version: str, download_dir: Path) -> dict[str, Any] | None:
    """The gate's JSON decision for `version` (None if the gate never ran on it)."""
    from pipelines import model as m

    m.configure_mlflow_env()
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(spec.registered_model_name, version)
    rel = mv.tags.get(tags.GATE_ARTIFACT)
    if not rel:
        return None
    download_dir.mkdir(parents=True, exist_ok=True)
    return json.loads(Path(client.download_artifacts(str(mv.run_id), rel, str(download_dir))).read_text())


# --------------------------------------------------------------------------------------------------
# Aliases and their history


def _now() -> datetime:
    # audit time of a registry move: when it happened in the world, not the data interval
    return datetime.now(UTC)


def _client() -> Any:
    from pipelines import model as m

    m.configure_mlflow_env()
    from mlflow import MlflowClient

    return MlflowClient()


def _alias(client: Any, name: str, alias: str) -> str | None:
    from pipelines import model as m

    mv = m.version_by_alias(client, name, alias)
    return None if mv is None else str(mv.version)


def alias_history(spec: ModelSpec, client: Any = None) -> list[dict[str, Any]]:
    """Every recorded alias move of the spec's registered model, oldest first."""
    client = client or _client()
    from mlflow.exceptions import MlflowException

    try:
        model_tags = client.get_registered_model(spec.registered_model_name).tags
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            return []
        raise
    return [json.loads(v) for k, v in sorted(model_tags.items()) if k.startswith(tags.ALIAS_HISTORY_PREFIX)]


def _record(client: Any, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    at = datetime.fromisoformat(entry["at"])
    key = f"{tags.ALIAS_HISTORY_PREFIX}{at:%Y%m%dT%H%M%S%f}Z.{uuid.uuid4().hex[:8]}"
    client.set_registered_model_tag(name, key, json.dumps(entry, default=str))
    return entry


def _move_aliases(spec: ModelSpec, action: str, targets: dict[str, str | None], actor: str, reason: str,
                  run_key: str | None, client: Any = None, extra: dict[str, Any] | None = None,
                  always_record: bool = False) -> dict[str, Any]:
    """Point each alias at its target version (None deletes it) and append one history entry.

    The entry is written first, with the run key: a retried task finds it and only re-applies its
    moves, so the history neither loses a move nor records one twice. Without a move nothing is
    recorded, unless `always_record` (an audited decision that moved no alias)."""
    client = client or _client()
    name = spec.registered_model_name
    done = next((e for e in alias_history(spec, client) if run_key and e.get("run_key") == run_key
                 and e.get("action") == action), None)
    if done is not None:
        entry = done
    else:
        current = {a: _alias(client, name, a) for a in targets}
        moves = [{"alias": a, "from": current[a], "to": t} for a, t in targets.items() if current[a] != t]
        entry = {"at": _now().isoformat(), "model": name, "action": action, "moves": moves, "actor": actor,
                 "reason": reason[:2000], "run_key": run_key, **(extra or {})}
        if not moves and not always_record:
            return entry
        _record(client, name, entry)
    for mv in entry["moves"]:
        if mv["to"] is None:
            if _alias(client, name, mv["alias"]) is not None:
                client.delete_registered_model_alias(name, mv["alias"])
        else:
            client.set_registered_model_alias(name, mv["alias"], mv["to"])
    log.info("%s %s by %s: %s (%s)", name, action, actor,
             ", ".join(f"{m['alias']} {m['from']} -> {m['to']}" for m in entry["moves"]) or "no alias moved", reason)
    return entry


def promote(spec: ModelSpec, version: str, reason: str, when: datetime, *, actor: str = "gate",
            run_key: str | None = None, expected_champion: str | None | bool = False,
            action: str = "promote") -> dict[str, str | None]:
    """Move `champion` to `version`; the old champion keeps the `previous-champion` alias.

    `expected_champion` (the version the gate compared against; None = there was none) guards against
    a champion that moved since the gate ran: then nothing moves and PromotionError says what to do."""
    client = _client()
    name = spec.registered_model_name
    version = str(version)
    old = _alias(client, name, CHAMPION)
    if old == version:
        return {"champion": version, "previous": None}
    rolled_back = client.get_model_version(name, version).tags.get(tags.GUARDRAIL_ROLLED_BACK)
    if rolled_back and not action.startswith("override"):
        raise PromotionError(f"{name} v{version} was rolled back by the guardrail at {rolled_back}: it is not "
                             "promoted again without a person's decision. Trigger override__<model> with "
                             "action=promote and a reason to promote it anyway.")
    if expected_champion is not False:
        expected = str(expected_champion) if expected_champion is not None else None
        if old != expected:
            raise PromotionError(f"{name}: the champion is v{old} now, but the gate compared v{version} against "
                                 f"v{expected}; re-run the train DAG so the gate compares with the current champion.")
    targets: dict[str, str | None] = {PREVIOUS: old, CHAMPION: version} if old is not None else {CHAMPION: version}
    _move_aliases(spec, action, targets, actor, reason, run_key, client, {"data_as_of": when.isoformat()})
    client.set_model_version_tag(name, version, tags.PROMOTED_AT, when.isoformat())
    client.set_model_version_tag(name, version, tags.PROMOTED_REASON, reason[:5000])
    log.info("%s: champion -> v%s (was %s)", name, version, old)
    return {"champion": version, "previous": old}


def _require_reason(reason: str | None) -> str:
    if not reason or not str(reason).strip():
        raise PromotionError("a reason is required (it goes into the audit history): pass a non-empty `reason`.")
    return str(reason).strip()


def rollback(spec: ModelSpec, reason: str, actor: str, run_key: str | None = None) -> dict[str, Any]:
    """`champion` back to `previous-champion` in one move. The rolled-back version loses both aliases,
    so a second rollback cannot bring it back (promote a chosen version with an override instead)."""
    reason = _require_reason(reason)
    client = _client()
    name = spec.registered_model_name
    done = next((e for e in alias_history(spec, client) if run_key and e.get("run_key") == run_key
                 and e.get("action") == "rollback"), None)
    if done is None:
        current, previous = _alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)
        if previous is None:
            raise PromotionError(f"{name} has no `{PREVIOUS}` alias: nothing to roll back to (champion: v{current}). "
                                 f"Promote a chosen version with override__{spec.name} instead.")
        if previous == current:
            raise PromotionError(f"{name}: `{PREVIOUS}` and `{CHAMPION}` both point at v{current}; "
                                 "nothing to roll back.")
        targets: dict[str, str | None] = {CHAMPION: previous, PREVIOUS: None}
        extra = {"from_version": current, "to_version": previous}
    else:   # a retry of the same run: re-apply its moves, never roll back twice
        targets, extra = {}, {}
    entry = _move_aliases(spec, "rollback", targets, actor, reason, run_key, client, extra)
    if entry.get("from_version") is not None:
        client.set_model_version_tag(name, entry["from_version"], tags.ROLLED_BACK_AT, entry["at"])
        client.set_model_version_tag(name, entry["from_version"], tags.ROLLED_BACK_REASON, reason[:5000])
    return {"champion": entry["to_version"], "rolled_back": entry["from_version"], "at": entry["at"]}


def override(spec: ModelSpec, version: str, action: str, reason: str, actor: str,
             run_key: str | None = None) -> dict[str, Any]:
    """A human decision over the gate's, audited as an override: force-promote `version`, or
    force-reject it (it loses `champion`, falling back to `previous-champion`, and `previous-champion`)."""
    from mlflow.exceptions import MlflowException

    reason = _require_reason(reason)
    if action not in ("promote", "reject"):
        raise PromotionError(f"action {action!r} must be `promote` or `reject`.")
    version = str(version).strip().lstrip("v")
    client = _client()
    name = spec.registered_model_name
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise PromotionError(f"{name} has no version {version!r}: pick one from the MLflow UI "
                             f"(Models -> {name}).") from exc
    champ, previous = _alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)
    kind = f"override-{action}"
    extra = {"version": version}
    if action == "promote":
        if champ == version:   # nothing to move; the decision is still audited
            _move_aliases(spec, kind, {}, actor, reason, run_key, client, extra, always_record=True)
        else:
            promote(spec, version, reason, _now(), actor=actor, run_key=run_key, action=kind)
    else:
        targets: dict[str, str | None] = {}
        if champ == version:
            if previous is None or previous == version:
                raise PromotionError(f"v{version} is the champion of {name} and there is no `{PREVIOUS}` to fall "
                                     "back to; promote another version with action=promote instead.")
            targets = {CHAMPION: previous, PREVIOUS: None}
        elif previous == version:
            targets = {PREVIOUS: None}
        _move_aliases(spec, kind, targets, actor, reason, run_key, client, extra, always_record=True)
    for k, v in {tags.OVERRIDE_ACTION: action, tags.OVERRIDE_REASON: reason[:5000],
                 tags.OVERRIDE_BY: actor, tags.OVERRIDE_AT: _now().isoformat()}.items():
        client.set_model_version_tag(name, version, k, v)
    log.info("%s override %s v%s by %s: %s", name, action, version, actor, reason)
    return {"action": action, "version": version, "champion": _alias(client, name, CHAMPION),
            "previous": _alias(client, name, PREVIOUS)}
