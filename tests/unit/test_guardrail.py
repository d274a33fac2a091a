"""The guardrail's decision (pipelines/guardrail.py): worse, not worse, within noise, too few labels, no previous
champion, outside the guard period, unreadable predictions; and A/A: identical models never roll back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pipelines.guardrail import GuardSpec, judge_guard

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 20, tzinfo=UTC)
PROMOTED = NOW - timedelta(days=5)
SPEC = GuardSpec(guard_days=14, tolerance=0.01, min_rows=200, min_positives=10, resamples=400)


def world(n: int = 3000, seed: int = 0, base_rate: float = 0.1):
    """Labels, a good model (informative score) and a bad one (mostly noise), and entity ids (5 rows each)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < base_rate).astype(float)
    good = np.clip(0.6 * y + rng.normal(0.2, 0.2, n), 0, 1)
    bad = np.clip(0.1 * y + rng.normal(0.2, 0.2, n), 0, 1)
    return y, good, bad, np.repeat(np.arange(n // 5 + 1), 5)[:n]


def judge(y, champion_pred, previous_pred, spec=SPEC, **kw):
    args = {"champion": "3", "previous": "2", "promoted_at": PROMOTED, "now": NOW, **kw}
    return judge_guard("average_precision", "binary", y, champion_pred, previous_pred, spec, **args)


def test_a_champion_worse_beyond_noise_and_tolerance_is_rolled_back():
    y, good, bad, ids = world()
    v = judge(y, bad, good, clusters=ids)
    assert v.action == "rollback" and v.worse
    assert v.improvement["high"] < -SPEC.tolerance and v.champion_value < v.previous_value
    assert "v3 is worse than v2" in v.reason and "rolled back" in v.reason
    assert v.rows == 3000 and v.positives == int(y.sum()) and v.improvement["units"] == 600   # entities resampled


def test_alert_mode_judges_the_same_but_leaves_the_alias_to_a_person():
    y, good, bad, _ = world()
    v = judge(y, bad, good, spec=GuardSpec(**{**SPEC.__dict__, "action": "alert"}))
    assert v.action == "alert" and v.worse and "guardrail.action: alert" in v.reason


def test_a_better_champion_stays():
    y, good, bad, _ = world()
    v = judge(y, good, bad)
    assert v.action == "none" and "(better)" in v.reason and v.improvement["low"] > 0


def test_worse_within_the_tolerance_stays():
    y, good, _, _ = world(seed=3)
    rng = np.random.default_rng(9)
    slightly = np.clip(good + rng.normal(0, 0.08, len(y)), 0, 1)   # a little worse
    strict = judge(y, slightly, good, spec=GuardSpec(**{**SPEC.__dict__, "tolerance": 0.0}))
    lenient = judge(y, slightly, good, spec=GuardSpec(**{**SPEC.__dict__, "tolerance": 0.5}))
    assert strict.improvement["high"] < 0, "the construction must be worse beyond noise"
    assert strict.action == "rollback"
    assert lenient.action == "none" and "within the tolerance 0.5" in lenient.reason


def test_within_noise_stays():
    y, good, _, _ = world(n=400, seed=5)
    rng = np.random.default_rng(2)
    twin = np.clip(good + rng.normal(0, 0.01, len(y)), 0, 1)
    v = judge(y, twin, good)
    assert v.action == "none" and v.improvement["low"] <= 0 <= v.improvement["high"]


@pytest.mark.parametrize("case,kw,needle", [
    ("no previous champion", {"previous": None}, "no previous champion"),
    ("no champion", {"champion": None}, "no champion"),
    ("guard period over", {"promoted_at": NOW - timedelta(days=15)}, "outside its 14-day guard period"),
    ("promotion time unknown", {"promoted_at": None}, "promotion time unknown"),
])
def test_fail_safe_cases_take_no_action(case, kw, needle):
    y, good, bad, _ = world()
    v = judge(y, bad, good, **kw)
    assert v.action == "none" and needle in v.reason, (case, v.reason)


def test_too_few_labels_or_positives_take_no_action():
    y, good, bad, _ = world()
    few = judge(y[:150], bad[:150], good[:150])
    assert few.action == "none" and "too few labels" in few.reason and "150 labelled rows" in few.reason
    y2 = np.zeros(3000)
    y2[:5] = 1
    rare = judge(y2, bad, good)
    assert rare.action == "none" and "5 positives" in rare.reason
    unlabelled = judge(np.full(3000, np.nan), bad, good)
    assert unlabelled.action == "none" and "0 labelled rows" in unlabelled.reason


def test_missing_or_unreadable_predictions_take_no_action():
    y, good, bad, _ = world()
    assert "no shadow scores of the previous champion v2" in judge(y, bad, None).reason
    broken = bad.copy()
    broken[7] = np.nan
    v = judge(y, broken, good)
    assert v.action == "none" and "NaN" in v.reason


def test_a_regression_metric_in_its_own_direction():
    rng = np.random.default_rng(1)
    y = rng.normal(3.5, 1.0, 2000)
    good, bad = y + rng.normal(0, 0.5, 2000), y + rng.normal(0, 1.5, 2000)
    args = {"champion": "3", "previous": "2", "promoted_at": PROMOTED, "now": NOW}
    worse = judge_guard("rmse", "regression", y, bad, good, SPEC, **args)
    better = judge_guard("rmse", "regression", y, good, bad, SPEC, **args)
    assert worse.action == "rollback" and worse.champion_value > worse.previous_value   # higher RMSE is worse
    assert better.action == "none" and worse.positives is None


def test_a_a_identical_models_never_roll_back_over_seeds():
    for seed in range(30):
        y, good, _, ids = world(n=1500, seed=seed)
        spec = GuardSpec(**{**SPEC.__dict__, "tolerance": 0.0, "seed": seed, "resamples": 200})
        v = judge(y, good, good.copy(), spec=spec, clusters=ids)
        assert v.action == "none", (seed, v.reason)


def test_each_look_of_a_guard_period_spends_a_share_of_the_error_rate():
    """Weekly looks over 21 days: 3 chances to roll back a model that is not worse, each judged at 1 - 0.05/3."""
    from pipelines.guardrail import per_look

    spec = GuardSpec(guard_days=21, confidence=0.95)
    assert per_look(spec, 7).confidence == pytest.approx(1 - 0.05 / 3)
    assert per_look(spec, 30).confidence == pytest.approx(0.95)          # one monthly look
    assert per_look(spec, 1).confidence == pytest.approx(1 - 0.05 / 21)  # daily batches: 21 looks
    assert per_look(spec, 7).guard_days == 21 and spec.confidence == 0.95  # the declared spec is unchanged
