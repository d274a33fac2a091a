"""The metrics registry: one place for each metric's direction, tasks, estimate and bootstrap kernel.

Every primary-metric number Flywheel reports comes from here: the spec loader (`HIGHER_IS_BETTER`,
`METRIC_TASKS`: which metrics a spec may name, and for which task), training (`metrics_for` in
pipelines/model.py), the gate (the holdout estimate and the paired bootstrap in pipelines/gate.py) and
the monitor (performance drift in pipelines/monitor.py).

A metric has two entry points:

* `value(y, pred)`: the metric on all rows, a float; NaN when it is undefined (no rows, non-finite
  labels or predictions, a label that is not 0/1 for a binary metric, a probability outside [0, 1]
  for log loss, one class only for a ranking metric).
* `weighted(y, pred, w)`: the metric under each row of `w`, a (B, n) matrix of non-negative row
  weights; B values. With the counts of a bootstrap resample (how often each row was drawn) it equals
  the metric on the physically resampled rows, so the paired bootstrap never copies or re-sorts data
  per resample. `value` is `weighted` with weights of 1.

Definitions (each equal to scikit-learn's on the same rows; tests/unit/test_metrics.py checks it):

* `average_precision`: sum over score thresholds of (recall step x precision), tied scores forming one
  threshold (`sklearn.metrics.average_precision_score`).
* `roc_auc`: the probability that a random positive scores above a random negative, ties counting one
  half (average ranks; `sklearn.metrics.roc_auc_score`).
* `log_loss`: mean negative log-likelihood; the probability given to the true class is clipped to
  [eps, 1 - eps] with eps the float64 machine epsilon (2.2e-16), as `sklearn.metrics.log_loss` does
  since scikit-learn 1.5 (older releases clipped at 1e-15).
* `mae`, `rmse`: mean absolute error, root mean squared error.

Only the standard library is imported at module level: the spec loader imports this module when DAG
files are parsed. numpy is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """One metric: its direction, the tasks it serves, and how it is estimated."""

    name: str
    higher_is_better: bool
    tasks: tuple[str, ...]
    description: str
    # (y, pred, w) -> B values, inputs already checked and float64: see the `_..._kernel` functions
    kernel: Kernel = field(repr=False, compare=False)
    binary_labels: bool = False       # labels must be 0/1
    probabilities: bool = False       # predictions must be probabilities in [0, 1]
    # what XGBoost minimises and watches for early stopping when this is the primary metric: a model judged
    # on RMSE learns the conditional mean (squared error), one judged on MAE the median (absolute error)
    objective: str = "binary:logistic"
    eval_metric: str = "aucpr"

    @property
    def sign(self) -> float:
        """+1 when higher is better, -1 when lower is: `sign * (a - b) > 0` means a is better than b."""
        return 1.0 if self.higher_is_better else -1.0

    def value(self, y: np.ndarray, pred: np.ndarray) -> float:
        """The metric on all rows; NaN when undefined."""
        import numpy as np

        n = len(np.asarray(y))
        return float(self.weighted(y, pred, np.ones((1, n)))[0])

    def weighted(self, y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The metric under each row of weights `w` (B, n) (counts of a resample, or any non-negative
        weights); B values, NaN where undefined (e.g. a resample without a positive row)."""
        import numpy as np

        y = np.asarray(y, dtype=np.float64).ravel()
        pred = np.asarray(pred, dtype=np.float64).ravel()
        w = np.atleast_2d(np.asarray(w, dtype=np.float64))
        n = len(y)
        if len(pred) != n or w.ndim != 2 or w.shape[1] != n:
            raise ValueError(f"{self.name}: {n} labels, {len(pred)} predictions and weights of shape "
                             f"{w.shape}; the weights must be (resamples, {n}).")
        if n and (w < 0).any():
            raise ValueError(f"{self.name}: resample weights must be non-negative.")
        undefined = np.full(w.shape[0], np.nan)
        if n == 0 or not (np.isfinite(y).all() and np.isfinite(pred).all() and np.isfinite(w).all()):
            return undefined
        if self.binary_labels and not np.isin(y, (0.0, 1.0)).all():
            return undefined
        if self.probabilities and ((pred < 0.0).any() or (pred > 1.0).any()):
            return undefined
        return self.kernel(y, pred, w)


# --------------------------------------------------------------------------------------------------
# Kernels: y (n,), pred (n,), w (B, n), all float64 and finite; B values out.


def _tie_groups(score: np.ndarray, w: np.ndarray, y: np.ndarray,
                descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative weighted positives and negatives at the end of each group of tied scores, in score
    order: two (B, groups) matrices."""
    import numpy as np

    order = np.argsort(-score if descending else score, kind="stable")
    ys, ss, ws = y[order], score[order], w[:, order]
    ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])       # last row of each tie group
    return np.cumsum(ws * ys, axis=1)[:, ends], np.cumsum(ws * (1.0 - ys), axis=1)[:, ends]


def _average_precision_kernel(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    import numpy as np

    tp, fp = _tie_groups(score, w, y, descending=True)
    seen = tp + fp
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    recall_step = np.diff(tp, axis=1, prepend=0.0)
    positives, negatives = tp[:, -1], fp[:, -1]
    ap = (recall_step * precision).sum(axis=1)
    return np.divide(ap, positives, out=np.full_like(ap, np.nan), where=(positives > 0) & (negatives > 0))


def _roc_auc_kernel(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney: each (positive, negative) pair counts 1 when the positive scores higher, 1/2 when
    tied; a tie group's positives beat every negative of the lower groups and half of their own group's."""
    import numpy as np

    pos_c, neg_c = _tie_groups(score, w, y, descending=False)
    pos_g = np.diff(pos_c, axis=1, prepend=0.0)
    neg_g = np.diff(neg_c, axis=1, prepend=0.0)
    pairs = (pos_g * (neg_c - 0.5 * neg_g)).sum(axis=1)
    positives, negatives = pos_c[:, -1], neg_c[:, -1]
    total = positives * negatives
    return np.divide(pairs, total, out=np.full_like(pairs, np.nan), where=total > 0)


_EPS = 2.220446049250313e-16   # numpy.finfo(float64).eps: scikit-learn's log_loss clip


def _weighted_mean(w: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    import numpy as np

    total = w.sum(axis=1)
    s = w @ per_row
    return np.divide(s, total, out=np.full_like(s, np.nan), where=total > 0)


def _log_loss_kernel(y: np.ndarray, prob: np.ndarray, w: np.ndarray) -> np.ndarray:
    import numpy as np

    # the probability of the true class, clipped as scikit-learn does (1 - p is formed before clipping)
    p_true = np.clip(np.where(y == 1.0, prob, 1.0 - prob), _EPS, 1.0 - _EPS)
    return _weighted_mean(w, -np.log(p_true))


def _mae_kernel(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    import numpy as np

    return _weighted_mean(w, np.abs(y - pred))


def _rmse_kernel(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.sqrt(_weighted_mean(w, (y - pred) ** 2))


# --------------------------------------------------------------------------------------------------
# The registry

BINARY, REGRESSION = ("binary",), ("regression",)

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("average_precision", True, BINARY,
           "area under the precision-recall curve (step-wise, tied scores one threshold); rewards ranking "
           "the rare positives first", _average_precision_kernel, binary_labels=True),
    Metric("roc_auc", True, BINARY,
           "probability that a random positive scores above a random negative (ties count 1/2)",
           _roc_auc_kernel, binary_labels=True, eval_metric="auc"),
    Metric("log_loss", False, BINARY,
           "mean negative log-likelihood of the labels under the predicted probabilities",
           _log_loss_kernel, binary_labels=True, probabilities=True, eval_metric="logloss"),
    Metric("mae", False, REGRESSION, "mean absolute error", _mae_kernel,
           objective="reg:absoluteerror", eval_metric="mae"),
    Metric("rmse", False, REGRESSION, "root mean squared error", _rmse_kernel,
           objective="reg:squarederror", eval_metric="rmse"),
)}

# what the spec loader checks (derived: the registry above is the one source)
HIGHER_IS_BETTER: dict[str, bool] = {name: m.higher_is_better for name, m in METRICS.items()}
METRIC_TASKS: dict[str, tuple[str, ...]] = {name: m.tasks for name, m in METRICS.items()}


def metric(name: str) -> Metric:
    """The registered metric called `name`."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}.") from None


def for_task(task: str) -> tuple[Metric, ...]:
    """Every registered metric a model of `task` (binary, regression) is measured with."""
    return tuple(m for m in METRICS.values() if task in m.tasks)


def values(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of `task` on all rows (NaN where undefined)."""
    return {m.name: m.value(y, pred) for m in for_task(task)}

