"""Parity between the groups of a declared column: is the model as good (or as generous) for each group?

For every `fairness:` rule of the spec (pipelines/release/specs.py) the gate computes the rule's metric per
group of the column on the gate holdout, then the parity across the groups large enough to judge:
`difference` = max - min of the group values (at most `threshold`), `ratio` = min / max (at least
`threshold`). Groups below `min_rows` rows, or whose value is undefined (recall of a group without a positive),
are listed and left out of the parity. Reported for every version in its card;
a breach blocks promotion only when the rule says `blocking: true`. Pure: numpy in, dataclasses out.

Metrics (binary: a score >= `cutoff` is a predicted positive):
  positive_rate        share of rows predicted positive
  recall               predicted positives among the actual positives (true positive rate)
  false_positive_rate  predicted positives among the actual negatives
  error_rate           share of rows where the prediction disagrees with the label
  mae                  (regression) mean absolute error
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from pipelines.release.specs import ParitySpec


@dataclass(frozen=True)
class GroupValue:
    group: str
    rows: int
    positives: int | None
    value: float
    judged: bool          # large enough to count in the parity


@dataclass(frozen=True)
class ParityResult:
    column: str
    metric: str
    parity: str
    threshold: float
    value: float          # the parity (difference or ratio) over the judged groups; NaN when < 2 groups
    passed: bool
    blocking: bool
    groups: tuple[GroupValue, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        from pipelines.util import json_safe

        return json_safe(asdict(self))


def group_metric(metric: str, y: np.ndarray, pred: np.ndarray, cutoff: float) -> float:
    """The rule's metric on one group's rows (NaN where undefined: no rows, or no positive for recall)."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if len(y) == 0:
        return math.nan
    if metric == "mae":
        return float(np.mean(np.abs(pred - y)))
    flagged = pred >= cutoff
    actual = y >= 0.5
    if metric == "positive_rate":
        return float(np.mean(flagged))
    if metric == "recall":
        return float(np.mean(flagged[actual])) if actual.any() else math.nan
    if metric == "false_positive_rate":
        return float(np.mean(flagged[~actual])) if (~actual).any() else math.nan
    if metric == "error_rate":
        return float(np.mean(flagged != actual))
    raise ValueError(f"unknown parity metric {metric!r}")


def parity(rule: ParitySpec, y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> ParityResult:
    """The rule on one model's predictions: the metric per group, then the parity across judged groups."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    labels = np.asarray(groups).astype(str)
    values = []
    for g in sorted(set(labels.tolist())):
        mask = labels == g
        rows = int(mask.sum())
        positives = int((y[mask] >= 0.5).sum()) if rule.metric != "mae" else None
        v = group_metric(rule.metric, y[mask], pred[mask], rule.cutoff)
        values.append(GroupValue(g, rows, positives, v, rows >= rule.min_rows and math.isfinite(v)))
    judged = [g for g in values if g.judged]
    left_out = [g.group for g in values if not g.judged]
    where = f"{rule.metric} by {rule.column}"
    if len(judged) < 2:
        return ParityResult(rule.column, rule.metric, rule.parity, rule.threshold, math.nan, not rule.blocking,
                            rule.blocking, tuple(values),
                            f"{where}: fewer than 2 groups with >= {rule.min_rows} rows and a defined value "
                            f"({len(values)} groups); parity not judged" + (" — blocking rule: not promoted"
                                                                           if rule.blocking else ""))
    hi = max(judged, key=lambda g: g.value)
    lo = min(judged, key=lambda g: g.value)
    if rule.parity == "difference":
        value = hi.value - lo.value
        passed = value <= rule.threshold
        text = f"max - min = {value:.4f} (must be <= {rule.threshold:g})"
    else:
        value = lo.value / hi.value if hi.value > 0 else math.nan
        passed = math.isfinite(value) and value >= rule.threshold
        text = f"min / max = {value:.4f} (must be >= {rule.threshold:g})"
    detail = (f"{where}: {text}; lowest {lo.group} {lo.value:.4f}, highest {hi.group} {hi.value:.4f} over "
              f"{len(judged)} groups" + (f"; too small, reported only: {', '.join(left_out)}" if left_out else ""))
    return ParityResult(rule.column, rule.metric, rule.parity, rule.threshold, float(value), bool(passed),
                        rule.blocking, tuple(values), detail)
