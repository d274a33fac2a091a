"""The guardrail after a promotion: is the new champion worse than the one it replaced, on the same labelled rows?

The gate judges a challenger on one holdout; delayed labels can still prove it wrong. For `guard_days` after
each promotion, scoring also writes the previous champion's predictions for the same rows (shadow scores),
and once labels arrive the monitor asks `judge_guard`: a paired bootstrap (the gate's, resampling entities) of
the champion's improvement over the previous champion on exactly those rows. The champion is rolled back
only when the whole interval lies below `-tolerance`: worse beyond noise AND beyond what the spec tolerates.

Fails safe: no previous champion, no shadow scores, too few labelled rows or positives, a NaN prediction or
an interval the resamples cannot define all mean "no automatic action", with the reason said. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ACTOR = "guardrail"   # who the audited rollback names


@dataclass(frozen=True)
class GuardSpec:
    """The model spec's `guardrail:` section."""
    guard_days: int = 14            # how long after a promotion the champion is watched
    tolerance: float = 0.0          # how much worse (metric units) it may be before a rollback
    min_rows: int = 200             # labelled rows needed to judge
    min_positives: int = 10         # binary tasks: positives needed among them
    confidence: float = 0.95
    resamples: int = 1000
    action: str = "rollback"        # rollback | alert (judge and email, never move the alias)
    seed: int = 0
    shadow_rows: int = 200_000      # rows per interval the shadows score (a sample by row id above it)


@dataclass(frozen=True)
class GuardVerdict:
    action: str                     # "rollback" | "alert" | "none"
    reason: str
    champion: str | None
    previous: str | None
    metric: str
    rows: int = 0
    positives: int | None = None
    champion_value: float | None = None
    previous_value: float | None = None
    improvement: dict[str, Any] | None = None   # the paired-bootstrap interval (champion over previous)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def worse(self) -> bool:
        return self.action in ("rollback", "alert")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_look(spec: GuardSpec, cadence_days: float) -> GuardSpec:
    """The spec with the confidence of ONE judgment, when the guard period holds several: the monitor judges every
    interval of the guard period (ceil(guard_days / cadence_days) looks), each on all the labelled rows so far, and
    each look may roll back. Splitting the error rate over the looks (Bonferroni) bounds the false-rollback rate
    of a whole guard period by the spec's: 3 weekly looks at 95% are judged at 98.3% each."""
    import math

    looks = max(1, math.ceil(spec.guard_days / max(cadence_days, 1e-9)))
    return replace(spec, confidence=1.0 - (1.0 - spec.confidence) / looks)


def in_guard_period(promoted_at: datetime | None, now: datetime, spec: GuardSpec) -> bool:
    return promoted_at is not None and promoted_at <= now < promoted_at + timedelta(days=spec.guard_days)


def judge_guard(metric: str, task: str, y: np.ndarray, champion_pred: np.ndarray | None,
                previous_pred: np.ndarray | None, spec: GuardSpec, *, champion: str | None, previous: str | None,
                promoted_at: datetime | None, now: datetime, clusters: np.ndarray | None = None) -> GuardVerdict:
    """Roll back (or alert, per `spec.action`) when the champion is worse than the previous champion on the same
    labelled rows beyond noise and beyond `spec.tolerance`; otherwise "none", saying why."""
    import numpy as np

    from pipelines.gate import paired_bootstrap
    from pipelines.metrics import metric as registered

    def none(reason: str, **more: Any) -> GuardVerdict:
        return GuardVerdict("none", reason, champion, previous, metric, **more)

    if champion is None:
        return none("no champion: nothing to guard")
    if previous is None:
        return none(f"v{champion} has no previous champion to compare with: no automatic action")
    if not in_guard_period(promoted_at, now, spec):
        since = f"promoted {promoted_at:%Y-%m-%d}" if promoted_at else "promotion time unknown"
        return none(f"v{champion} is outside its {spec.guard_days}-day guard period ({since}): no automatic action")
    if champion_pred is None or previous_pred is None:
        missing = "champion" if champion_pred is None else f"previous champion v{previous}"
        return none(f"no shadow scores of the {missing} for these rows: no automatic action")
    y = np.asarray(y, dtype="float64")
    a, b = np.asarray(champion_pred, dtype="float64"), np.asarray(previous_pred, dtype="float64")
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"labels, champion and previous predictions differ in length: {len(y)}, {len(a)}, {len(b)}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return none("a prediction is NaN or infinite (an unreadable model?): no automatic action")
    keep = np.isfinite(y)
    y, a, b = y[keep], a[keep], b[keep]
    groups = None if clusters is None else np.asarray(clusters)[keep]
    positives = int((y > 0.5).sum()) if task == "binary" else None
    if len(y) < spec.min_rows or (positives is not None and positives < spec.min_positives):
        got = f"{len(y)} labelled rows" + (f", {positives} positives" if positives is not None else "")
        need = f">= {spec.min_rows} rows" + (f" and >= {spec.min_positives} positives" if positives is not None else "")
        return none(f"too few labels to judge v{champion} against v{previous} ({got}; needs {need}): "
                    "no automatic action", rows=len(y), positives=positives)
    m = registered(metric)
    iv = paired_bootstrap(m, y, a, b, spec.resamples, spec.confidence, spec.seed, clusters=groups)
    values: dict[str, Any] = {"rows": len(y), "positives": positives, "champion_value": float(m.value(y, a)),
              "previous_value": float(m.value(y, b)),
              "improvement": {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "confidence": iv.confidence,
                              "resamples": iv.resamples, "valid": iv.valid, "units": iv.units}}
    if not iv.defined:
        return none(f"the paired bootstrap of {metric} is undefined on these rows ({iv.valid}/{iv.resamples} "
                    "resamples usable): no automatic action", **values)
    shown = (f"{metric} v{champion} {values['champion_value']:.4g} vs v{previous} {values['previous_value']:.4g} "
             f"on {len(y):,} labelled rows; improvement {iv.estimate:+.4g} "
             f"[{100 * iv.confidence:.3g}% CI {iv.low:+.4g}, {iv.high:+.4g}]")
    if iv.high < -spec.tolerance:
        action = "rollback" if spec.action == "rollback" else "alert"
        what = "rolled back" if action == "rollback" else "to be rolled back by a person (guardrail.action: alert)"
        return GuardVerdict(action, f"v{champion} is worse than v{previous} beyond noise and beyond the tolerance "
                            f"{spec.tolerance:g}: {shown}; {what}", champion, previous, metric,
                            evidence={"tolerance": spec.tolerance}, **values)
    why = "better" if iv.low > 0 else "within noise" if iv.high >= 0 else f"within the tolerance {spec.tolerance:g}"
    return GuardVerdict("none", f"v{champion} is not worse than v{previous} beyond noise and tolerance ({why}): "
                        f"{shown}", champion, previous, metric, evidence={"tolerance": spec.tolerance}, **values)
