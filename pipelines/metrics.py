"""The metrics registry: one place for each metric's direction, tasks, estimate and bootstrap kernel.

Every primary-metric number Flywheel reports comes from here: the spec loader (`HIGHER_IS_BETTER`,
`METRIC_TASKS`: which metrics a spec may name, and for which task), training (`metrics_for` in
pipelines/model.py), the gate (the holdout estimate and the paired bootstrap in pipelines/gate.py) and
the monitor (performance drift in pipelines/monitor.py).

A metric has three entry points:

* `value(y, pred)`: the metric on all rows, a float; NaN when it is undefined (no rows, non-finite
  labels or predictions, a label that is not 0/1 for a binary metric, a probability outside [0, 1]
  for log loss, one class only for a ranking metric).
* `weighted(y, pred, w)`: the metric under each row of `w`, a (B, n) matrix of non-negative row
  weights; B values. With the counts of a bootstrap resample (how often each row was drawn) it equals
  the metric on the physically resampled rows, so the paired bootstrap never copies data per resample.
  `value` is `weighted` with weights of 1.
* `resampler(y, pred, member, k)`: the same numbers for resamples of whole clusters (`member` maps each
  row to one of `k` clusters; a resample is a column of cluster counts), prepared once per model:
  `resampler(...)(counts)` equals `weighted(y, pred, counts.T[:, member])`. A metric that registers a
  `clustered` fast path computes it from sufficient statistics, so a resample costs O(clusters), not a
  sort of the rows: per-cluster sums for the means (log loss, MAE, RMSE); for the ranking metrics, the
  rows sorted once, and per "positive tie group" (a group of tied scores holding a positive row) the
  positives, the negatives tied with them and the negatives ranked just above them, as a sparse
  (bins x clusters) matrix times the counts. A metric without a fast path is computed through `weighted`.

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
    # cluster counts (k, B) -> B values
    Resampler = Callable[[np.ndarray], np.ndarray]
    # (y, pred, member, k) -> Resampler, inputs already checked and float64: see `_cluster_mean`, `_cluster_ranking`
    ClusterKernel = Callable[[np.ndarray, np.ndarray, np.ndarray, int], Resampler]


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
    # the bootstrap's fast path (sufficient statistics per cluster), equal to `kernel` on the cluster counts;
    # None: `resampler` goes through `kernel`
    clustered: ClusterKernel | None = field(default=None, repr=False, compare=False)

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
        if not (np.isfinite(w).all() and self._defined(y, pred)):
            return np.full(w.shape[0], np.nan)
        return self.kernel(y, pred, w)

    def resampler(self, y: np.ndarray, pred: np.ndarray, member: np.ndarray, k: int) -> Resampler:
        """The metric under resamples of whole clusters, prepared once: row i belongs to cluster `member[i]`
        (0 <= member < k); the returned function maps cluster counts (k, B) (column b: how often each
        cluster was drawn in resample b; non-negative integers) to B values, equal (to floating-point
        rounding) to `weighted(y, pred, counts.T[:, member])` and NaN where that is undefined."""
        import numpy as np

        y = np.asarray(y, dtype=np.float64).ravel()
        pred = np.asarray(pred, dtype=np.float64).ravel()
        member = np.asarray(member, dtype=np.intp).ravel()
        n = len(y)
        if len(pred) != n or len(member) != n:
            raise ValueError(f"{self.name}: {n} labels, {len(pred)} predictions and {len(member)} cluster "
                             "indices; give one of each per row.")
        if n and (member.min() < 0 or member.max() >= k):
            raise ValueError(f"{self.name}: cluster indices must be in [0, {k}).")
        if not self._defined(y, pred):
            return lambda counts: np.full(np.shape(counts)[1], np.nan)
        if self.clustered is not None:
            return self.clustered(y, pred, member, k)
        kernel = self.kernel

        def through_kernel(counts: np.ndarray) -> np.ndarray:
            step = max(1, 2_000_000 // n)                   # bounded memory: (step, n) weights at a time
            return np.concatenate([kernel(y, pred, np.asarray(counts[member, s:s + step].T, dtype=np.float64))
                                   for s in range(0, counts.shape[1], step)] or [np.empty(0)])
        return through_kernel

    def _defined(self, y: np.ndarray, pred: np.ndarray) -> bool:
        """Whether the metric is defined on these rows at all (before any weights)."""
        import numpy as np

        if len(y) == 0 or not (np.isfinite(y).all() and np.isfinite(pred).all()):
            return False
        if self.binary_labels and not np.isin(y, (0.0, 1.0)).all():
            return False
        return not (self.probabilities and ((pred < 0.0).any() or (pred > 1.0).any()))


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


def _log_loss_rows(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    import numpy as np

    # the probability of the true class, clipped as scikit-learn does (1 - p is formed before clipping)
    p_true = np.clip(np.where(y == 1.0, prob, 1.0 - prob), _EPS, 1.0 - _EPS)
    return -np.log(p_true)


def _absolute_errors(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.abs(y - pred)


def _squared_errors(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return (y - pred) ** 2


def _log_loss_kernel(y: np.ndarray, prob: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _weighted_mean(w, _log_loss_rows(y, prob))


def _mae_kernel(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _weighted_mean(w, _absolute_errors(y, pred))


def _rmse_kernel(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.sqrt(_weighted_mean(w, _squared_errors(y, pred)))


# --------------------------------------------------------------------------------------------------
# Cluster kernels (the bootstrap's fast path): y (n,), pred (n,) float64 and checked, member (n,) in
# [0, k); each returns a function of cluster counts (k, B) -> B values equal to the kernel above under
# the row weights counts.T[:, member].

_FLOAT32_EXACT = 2.0 ** 24     # float32 sums of integers are exact below this


def _dot(stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """stats (s, k) float64 @ counts (k, B), accumulated in float64 whatever the counts' dtype (a float32
    counts matrix through `@` would be cast whole first, or take numpy's slow mixed-type loop)."""
    import numpy as np

    return np.einsum("sk,kb->sb", stats, counts, dtype=np.float64, casting="safe")


def _cluster_mean(per_row: Callable[[np.ndarray, np.ndarray], np.ndarray],
                  finish: Callable[[np.ndarray], np.ndarray] | None = None) -> ClusterKernel:
    """A `_weighted_mean` kernel from per-cluster sums: a resample's mean is (counts . sums) / (counts . rows)."""

    def prepare(y: np.ndarray, pred: np.ndarray, member: np.ndarray, k: int) -> Resampler:
        import numpy as np

        stats = np.stack([np.bincount(member, weights=per_row(y, pred), minlength=k),
                          np.bincount(member, minlength=k).astype(np.float64)])

        def of(counts: np.ndarray) -> np.ndarray:
            s, total = _dot(stats, counts)
            mean = np.divide(s, total, out=np.full_like(s, np.nan), where=total > 0)
            return finish(mean) if finish is not None else mean
        return of
    return prepare


def _ranked_bins(y: np.ndarray, score: np.ndarray, member: np.ndarray, k: int
                 ) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
    """The sufficient statistics of the ranking metrics, prepared once per model. Rows sorted by descending
    score form tie groups; only the groups holding a positive ("positive groups", J of them) can add a
    recall step (AP) or positive-negative pairs (AUC). Every row falls in one bin per positive group j:
    the negatives ranked above group j and below group j-1, the negatives tied in group j, or the positives
    of group j (the negatives below the last positive group only count in the total). One sparse
    (3J x k) matrix of row counts per (bin, cluster), built once, times the cluster counts (k, B) gives
    every bin's resampled weight for B resamples in one product, with no sort per resample.

    Returns a function of counts (k, B) -> (neg_above, neg_tied, pos) each (J, B), and the resampled
    totals of positives and negatives (B,)."""
    import numpy as np
    from scipy import sparse

    order = np.argsort(-score, kind="stable")
    ys, ss = y[order], score[order]
    group = np.cumsum(np.r_[True, ss[1:] != ss[:-1]]) - 1
    positive = ys == 1.0
    holds_positive = np.zeros(int(group[-1]) + 1, dtype=bool)
    holds_positive[group[positive]] = True
    last_positive_group = np.cumsum(holds_positive) - 1   # per group: the last positive group at or above it
    n_bins = int(holds_positive.sum())
    in_positive_group = holds_positive[group]
    j = np.where(in_positive_group, last_positive_group[group], last_positive_group[group] + 1)
    kind = np.where(positive, 2, np.where(in_positive_group, 1, 0))
    keep = j < n_bins                                          # below the last positive group: totals only
    rows = (3 * j + kind)[keep]
    counts_of = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, member[order][keep])),
                                  shape=(3 * n_bins, k))
    counts_of.sum_duplicates()
    widest_bin = float(np.bincount(rows, minlength=1).max()) if len(rows) else 0.0
    totals = np.stack([np.bincount(member, weights=y, minlength=k),
                       np.bincount(member, weights=1.0 - y, minlength=k)])

    def sums(counts: np.ndarray) -> tuple[np.ndarray, ...]:
        b = counts.shape[1]
        # float32 products are exact integers while no bin's sum can reach 2^24; float64 otherwise
        if counts.dtype == np.float32 and widest_bin * float(counts.max(initial=0.0)) < _FLOAT32_EXACT:
            binned = counts_of @ counts
        else:
            binned = counts_of.astype(np.float64) @ np.asarray(counts, dtype=np.float64)
        per_bin = np.asarray(binned, dtype=np.float64).reshape(n_bins, 3, b)
        positives, negatives = _dot(totals, counts)
        return per_bin[:, 0], per_bin[:, 1], per_bin[:, 2], positives, negatives
    return sums


def _cluster_ranking(finish: Callable[..., np.ndarray]) -> ClusterKernel:
    def prepare(y: np.ndarray, score: np.ndarray, member: np.ndarray, k: int) -> Resampler:
        sums = _ranked_bins(y, score, member, k)
        return lambda counts: finish(*sums(counts))
    return prepare


def _average_precision_of_bins(neg_above: np.ndarray, neg_tied: np.ndarray, pos: np.ndarray,
                               positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """`_average_precision_kernel` over the positive groups only (the others add no recall step)."""
    import numpy as np

    tp = np.cumsum(pos, axis=0)
    seen = tp + np.cumsum(neg_above + neg_tied, axis=0)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    ap = (pos * precision).sum(axis=0)
    return np.divide(ap, positives, out=np.full_like(ap, np.nan), where=(positives > 0) & (negatives > 0))


def _roc_auc_of_bins(neg_above: np.ndarray, neg_tied: np.ndarray, pos: np.ndarray,
                     positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """`_roc_auc_kernel` over the positive groups: a group's positives beat every negative below it and
    half of those tied with it."""
    import numpy as np

    neg_at_or_above = np.cumsum(neg_above + neg_tied, axis=0)
    pairs = (pos * (negatives - neg_at_or_above + 0.5 * neg_tied)).sum(axis=0)
    total = positives * negatives
    return np.divide(pairs, total, out=np.full_like(pairs, np.nan), where=total > 0)


def _sqrt(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.sqrt(x)


# --------------------------------------------------------------------------------------------------
# The registry

BINARY, REGRESSION = ("binary",), ("regression",)

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("average_precision", True, BINARY,
           "area under the precision-recall curve (step-wise, tied scores one threshold); rewards ranking "
           "the rare positives first", _average_precision_kernel, binary_labels=True,
           clustered=_cluster_ranking(_average_precision_of_bins)),
    Metric("roc_auc", True, BINARY,
           "probability that a random positive scores above a random negative (ties count 1/2)",
           _roc_auc_kernel, binary_labels=True, eval_metric="auc", clustered=_cluster_ranking(_roc_auc_of_bins)),
    Metric("log_loss", False, BINARY,
           "mean negative log-likelihood of the labels under the predicted probabilities",
           _log_loss_kernel, binary_labels=True, probabilities=True, eval_metric="logloss",
           clustered=_cluster_mean(_log_loss_rows)),
    Metric("mae", False, REGRESSION, "mean absolute error", _mae_kernel,
           objective="reg:absoluteerror", eval_metric="mae", clustered=_cluster_mean(_absolute_errors)),
    Metric("rmse", False, REGRESSION, "root mean squared error", _rmse_kernel,
           objective="reg:squarederror", eval_metric="rmse", clustered=_cluster_mean(_squared_errors, _sqrt)),
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

