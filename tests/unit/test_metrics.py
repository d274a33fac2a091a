"""The metrics registry: every metric equals scikit-learn's, resampled or not, and is NaN where undefined.

The gate's paired bootstrap (tests/unit/test_gate.py) and the monitor rest on these estimates, so each
metric is checked against the library on random data with many tied scores.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from pipelines import metrics as reg
from pipelines.metrics import HIGHER_IS_BETTER, METRIC_TASKS, METRICS, metric

pytestmark = pytest.mark.unit

SKLEARN = {
    "average_precision": skm.average_precision_score,
    "roc_auc": skm.roc_auc_score,
    "log_loss": lambda y, p, **kw: skm.log_loss(y, p, labels=[0, 1], **kw),
    "mae": skm.mean_absolute_error,
    "rmse": skm.root_mean_squared_error,
}
BINARY = sorted(n for n, m in METRICS.items() if "binary" in m.tasks)
REGRESSION = sorted(n for n, m in METRICS.items() if "regression" in m.tasks)


def data(name: str, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions for the metric's task; binary scores rounded to one decimal (many ties for
    the ranking metrics), with exact 0s and 1s (log loss must clip them as scikit-learn does)."""
    rng = np.random.default_rng(seed)
    if "binary" in METRICS[name].tasks:
        y = (rng.random(n) < 0.2).astype(float)
        p = np.round(np.clip(rng.random(n) * 0.8 + 0.3 * y - 0.05, 0.0, 1.0), 1)
        return y, p
    y = rng.gamma(2.0, 50.0, n)
    return y, y + rng.normal(0.0, 30.0, n)


def test_the_registry_covers_both_tasks_with_the_right_directions():
    assert set(METRICS) >= {"average_precision", "roc_auc", "log_loss", "mae", "rmse"}
    assert {n: m.higher_is_better for n, m in METRICS.items() if n in SKLEARN} == {
        "average_precision": True, "roc_auc": True, "log_loss": False, "mae": False, "rmse": False}
    assert set(BINARY) >= {"average_precision", "roc_auc", "log_loss"} and set(REGRESSION) >= {"mae", "rmse"}
    for name, m in METRICS.items():
        assert m.name == name and m.description
        assert HIGHER_IS_BETTER[name] is m.higher_is_better and METRIC_TASKS[name] == m.tasks
        assert m.sign == (1.0 if m.higher_is_better else -1.0)
    assert [m.name for m in reg.for_task("regression")] == REGRESSION


def test_the_spec_loader_reads_direction_and_tasks_from_the_registry():
    from pipelines import spec

    assert spec.HIGHER_IS_BETTER is HIGHER_IS_BETTER and spec.METRIC_TASKS is METRIC_TASKS


def test_importing_the_registry_does_not_import_numpy():
    """spec.py imports it when DAG files are parsed: stdlib only at module level."""
    code = "import sys, pipelines.metrics; sys.exit('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_an_unknown_metric_names_the_known_ones():
    with pytest.raises(ValueError) as err:
        metric("accuracy")
    assert "accuracy" in str(err.value)
    for name in METRICS:
        assert name in str(err.value)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_value_equals_sklearn_with_ties(name, seed):
    y, p = data(name, seed=seed)
    if name in BINARY:
        assert len(np.unique(p)) < len(p) / 4                   # heavily tied scores
    assert metric(name).value(y, p) == pytest.approx(SKLEARN[name](y, p), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_weighted_with_unit_weights_equals_value(name):
    y, p = data(name)
    got = metric(name).weighted(y, p, np.ones((3, len(y))))
    assert got.shape == (3,)
    assert np.allclose(got, metric(name).value(y, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_weighted_with_counts_equals_the_metric_on_the_repeated_rows(name):
    y, p = data(name, n=250, seed=3)
    rng = np.random.default_rng(7)
    counts = rng.poisson(1.0, size=(5, len(y))).astype(float)  # zeros, ones and repeats
    got = metric(name).weighted(y, p, counts)
    for r in range(5):
        idx = np.repeat(np.arange(len(y)), counts[r].astype(int))
        assert got[r] == pytest.approx(SKLEARN[name](y[idx], p[idx]), rel=1e-10, abs=1e-12)
        assert got[r] == pytest.approx(metric(name).value(y[idx], p[idx]), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_weighted_with_real_weights_equals_sklearn_sample_weight(name):
    y, p = data(name, n=300, seed=4)
    w = np.random.default_rng(5).random(len(y))
    assert metric(name).weighted(y, p, w)[0] == pytest.approx(SKLEARN[name](y, p, sample_weight=w), rel=1e-9)


def test_roc_auc_counts_ties_as_one_half():
    y = np.array([0, 1, 0, 1.0])
    assert metric("roc_auc").value(y, np.full(4, 0.3)) == 0.5
    assert metric("roc_auc").value(y, np.array([0.1, 0.5, 0.5, 0.9])) == pytest.approx(0.875)


def test_log_loss_clips_like_sklearn():
    y = np.array([1.0, 0.0, 1.0])
    p = np.array([0.0, 1.0, 1.0])                               # two confident mistakes
    assert metric("log_loss").value(y, p) == pytest.approx(skm.log_loss(y, p))
    assert math.isfinite(metric("log_loss").value(y, p))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_undefined_inputs_give_nan(name):
    m = metric(name)
    y, p = data(name, n=50)
    assert math.isnan(m.value(np.array([]), np.array([])))
    assert np.isnan(m.weighted(np.array([]), np.array([]), np.ones((2, 0)))).all()
    for bad in (math.nan, math.inf):
        q = p.copy()
        q[3] = bad
        assert math.isnan(m.value(y, q))
        z = y.copy()
        z[3] = bad
        assert math.isnan(m.value(z, p))
    assert np.isnan(m.weighted(y, p, np.zeros((1, len(y)))))[0]   # a resample with no weight at all


@pytest.mark.parametrize("name", ["average_precision", "roc_auc"])
def test_ranking_metrics_of_one_class_are_nan(name):
    p = np.linspace(0, 1, 20)
    assert math.isnan(metric(name).value(np.zeros(20), p))
    assert math.isnan(metric(name).value(np.ones(20), p))
    y = np.r_[np.ones(2), np.zeros(18)]
    w = np.ones((2, 20))
    w[0, :2] = 0.0                                              # a resample without a positive
    got = metric(name).weighted(y, p, w)
    assert math.isnan(got[0]) and math.isfinite(got[1])


@pytest.mark.parametrize("name", BINARY)
def test_binary_metrics_need_0_1_labels(name):
    assert math.isnan(metric(name).value(np.array([0.0, 1.0, 2.0]), np.array([0.1, 0.5, 0.9])))


def test_log_loss_of_one_class_is_defined_and_needs_probabilities():
    p = np.array([0.1, 0.2, 0.3])
    assert metric("log_loss").value(np.zeros(3), p) == pytest.approx(skm.log_loss(np.zeros(3), p, labels=[0, 1]))
    assert math.isnan(metric("log_loss").value(np.array([0.0, 1.0, 1.0]), np.array([0.1, 1.2, 0.5])))
    assert math.isnan(metric("log_loss").value(np.array([0.0, 1.0, 1.0]), np.array([-0.1, 0.2, 0.5])))


def test_mismatched_shapes_and_negative_weights_are_errors():
    m = metric("mae")
    with pytest.raises(ValueError, match="weights"):
        m.weighted(np.ones(3), np.ones(3), np.ones((2, 4)))
    with pytest.raises(ValueError):
        m.value(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        m.weighted(np.ones(3), np.ones(3), np.array([[1.0, -1.0, 1.0]]))


# --- the bootstrap's fast path: `resampler` on cluster counts = `weighted` on the rows' counts -------------


def clustered_case(name: str, n: int = 3000, k: int = 400, seed: int = 0):
    """Rows of `k` clusters (random sizes), heavily tied scores for the binary metrics, and 40 resamples of the
    clusters as counts (k, 40); plus two crafted resamples: no cluster holding a positive (or, for the
    regressions, only the first cluster), and no cluster at all."""
    rng = np.random.default_rng(seed)
    member = rng.integers(0, k, n)
    if "binary" in METRICS[name].tasks:
        y = (rng.random(n) < 0.05).astype(float)
        p = np.round(np.clip(rng.random(n) * 0.7 + 0.3 * y, 0.0, 1.0), 2)     # ~100 distinct scores
    else:
        y, p = rng.gamma(2.0, 50.0, n), rng.gamma(2.0, 50.0, n)
    counts = np.stack([np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(40)], axis=1)
    no_positive = (np.bincount(member, weights=y, minlength=k) == 0).astype(float)
    if "binary" not in METRICS[name].tasks:
        no_positive = np.r_[1.0, np.zeros(k - 1)]
    counts = np.column_stack([counts, no_positive, np.zeros(k)]).astype(np.float32)
    return y, p, member, k, counts


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resampler_equals_weighted_on_the_rows_counts(name, dtype):
    y, p, member, k, counts = clustered_case(name)
    counts = counts.astype(dtype)
    m = metric(name)
    assert m.clustered is not None                                  # every shipped metric has a fast path
    got = m.resampler(y, p, member, k)(counts)
    want = m.weighted(y, p, counts.T.astype(np.float64)[:, member])
    assert got.shape == (counts.shape[1],)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.allclose(got, want, rtol=1e-12, atol=1e-13, equal_nan=True)
    assert math.isnan(got[-1])                                      # a resample with no row at all
    if name in ("average_precision", "roc_auc"):
        assert math.isnan(got[-2])                                  # a resample without a positive
    else:
        assert math.isfinite(got[-2])                               # one cluster is enough for a mean


@pytest.mark.parametrize("name", sorted(METRICS))
def test_resampler_of_a_single_row_per_cluster_and_of_all_ones_is_the_metric(name):
    y, p = data(name, n=500, seed=9)
    n = len(y)
    got = metric(name).resampler(y, p, np.arange(n), n)(np.ones((n, 2), dtype=np.float32))
    assert got == pytest.approx([SKLEARN[name](y, p)] * 2, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", ["average_precision", "roc_auc", "mae"])
def test_a_metric_without_a_fast_path_resamples_through_its_kernel(name):
    """A newly registered metric needs only its kernel: `resampler` falls back to `weighted` (in chunks)."""
    import dataclasses

    y, p, member, k, counts = clustered_case(name, seed=2)
    slow = dataclasses.replace(metric(name), clustered=None)
    got = slow.resampler(y, p, member, k)(counts)
    assert np.allclose(got, metric(name).resampler(y, p, member, k)(counts), rtol=1e-12, atol=1e-13,
                       equal_nan=True)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_resampler_of_undefined_inputs_is_nan(name):
    m = metric(name)
    y, p, member, k, counts = clustered_case(name, n=200, k=30)
    q = p.copy()
    q[5] = math.nan
    assert np.isnan(m.resampler(y, q, member, k)(counts)).all()
    if name in BINARY:
        z = y.copy()
        z[0] = 2.0                                                  # not a 0/1 label
        assert np.isnan(m.resampler(z, p, member, k)(counts)).all()
    with pytest.raises(ValueError, match="cluster indices"):
        m.resampler(y, p, member, int(member.max()))                 # k too small for the indices
    with pytest.raises(ValueError, match="one of each per row"):
        m.resampler(y, p[:-1], member, k)


@pytest.mark.parametrize("name", ["average_precision", "roc_auc"])
def test_ranking_resampler_handles_all_ties_and_one_class(name):
    m = metric(name)
    y = np.r_[np.ones(3), np.zeros(7)]
    member = np.arange(10) % 4
    counts = np.array([[1, 0, 2], [1, 1, 0], [1, 2, 1], [1, 1, 1]], dtype=np.float32)
    for p in (np.full(10, 0.3), np.linspace(1, 0, 10), np.linspace(0, 1, 10)):
        want = m.weighted(y, p, counts.T.astype(np.float64)[:, member])
        assert np.allclose(m.resampler(y, p, member, 4)(counts), want, equal_nan=True)
    assert np.isnan(m.resampler(np.zeros(10), np.linspace(0, 1, 10), member, 4)(counts)).all()
