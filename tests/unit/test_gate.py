"""The evaluation gate: every decision with its reason, and the statistics it rests on.

Decisions are built from real numbers: seeded synthetic holdouts are scored by a "champion" and a
"challenger", and `compare_on_holdout` + `decide_promotion` run exactly as in the train DAG (only the
MLflow I/O around them is left to tests/integration/test_promotion.py). Thresholds are pinned here, so
these tests pin the gate's semantics, not the shipped tuning in models/*.yaml.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines import gate as g
from pipelines.gate import Evidence, GateDecision, compare_on_holdout, decide_promotion, paired_bootstrap
from pipelines.metrics import METRICS, metric
from pipelines.spec import REPO_ROOT, ModelSpec, SliceSpec, SpecError, load_spec, load_specs

pytestmark = pytest.mark.unit

SPECS = load_specs(REPO_ROOT / "models")
GATE = {"min_primary": 0.20, "max_brier": 0.10, "max_latency_p95_ms": 50.0, "min_delta": 0.0,
        "min_relative_delta": 0.0, "min_holdout_rows": 500.0, "min_holdout_positives": 20.0,
        "bootstrap_resamples": 1000.0, "confidence": 0.95, "slice_tolerance": 0.10, "slice_min_rows": 100.0,
        "slice_min_positives": 5.0}
FRAUD = dataclasses.replace(SPECS["fraud"], gate=GATE, slices=(SliceSpec("channel"),))  # AP: higher is better
SPEND = dataclasses.replace(SPECS["spend"], gate={"max_primary": 500.0, "max_latency_p95_ms": 50.0, "min_delta": 0.0,
                                                  "min_holdout_rows": 200.0, "slice_tolerance": 50.0},
                            slices=())                                                # MAE: lower is better
FAST = {"p95_ms": 2.0, "p50_ms": 1.0}
N = 4000


def holdout(n: int = N, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels (~8% positives) and a channel per row (`wallet` is rare: a too-small slice)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.08).astype(float)
    channel = rng.choice(np.array(["pos", "online", "wallet"], dtype=object), size=n, p=[0.55, 0.43, 0.02])
    return y, channel


def scores(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """Calibrated-ish probabilities whose ranking quality grows with `signal`."""
    rng = np.random.default_rng(seed)
    z = signal * y + rng.normal(size=len(y)) - 3.0
    return 1.0 / (1.0 + np.exp(-z))


def decide(spec, y, challenger, champion=None, champion_version=None, slices=None, latency=FAST, **kw) -> GateDecision:
    ev = compare_on_holdout(spec, y, challenger, champion, champion_version, slices, latency, **kw)
    return decide_promotion(spec, "3", ev)


def checks(d: GateDecision) -> dict[str, bool]:
    return {c.name: c.passed for c in d.checks}


# --- decisions ---------------------------------------------------------------------------------------


def test_better_challenger_is_promoted_with_its_interval_in_the_reason():
    y, ch = holdout()
    d = decide(FRAUD, y, scores(y, 3.0, 10), scores(y, 2.0, 11), "2", {"channel": ch})
    assert d.promote is True, d.reason
    assert d.reason.startswith("promoted") and "v2" in d.reason and "95% CI" in d.reason
    assert all(checks(d).values())
    assert d.mode == "vs_champion" and d.champion_version == "2"
    vs = d.check("vs_champion")
    assert vs is not None and vs.value == pytest.approx(d.improvement.low) and vs.value > 0 and vs.threshold == 0.0
    assert d.improvement.low < d.improvement.estimate < d.improvement.high
    assert d.challenger_value > d.champion_value


def test_worse_challenger_is_rejected_with_both_values_in_the_reason():
    y, ch = holdout()
    d = decide(FRAUD, y, scores(y, 1.5, 10), scores(y, 3.0, 11), "2", {"channel": ch})
    assert d.promote is False
    assert d.reason.startswith("rejected") and "improvement" in d.reason and "v2" in d.reason
    assert f"{d.challenger_value:.4f}" in d.reason and f"{d.champion_value:.4f}" in d.reason
    assert checks(d)["vs_champion"] is False and checks(d)["value_threshold"] is True
    assert d.improvement.high < 0


def test_tie_within_noise_is_not_promoted():
    """Same skill, independent noise: the point estimate may even be positive; the interval spans 0."""
    y, ch = holdout()
    d = decide(FRAUD, y, scores(y, 2.5, 10), scores(y, 2.5, 11), "2", {"channel": ch})
    assert d.improvement.low <= 0 <= d.improvement.high
    assert d.promote is False
    assert checks(d)["vs_champion"] is False
    assert "within noise: a tie is not promoted" in d.reason
    # identical predictions: every resampled improvement is exactly 0, and 0 does not clear "> 0"
    same = scores(y, 2.5, 10)
    d = decide(FRAUD, y, same, same.copy(), "2", {"channel": ch})
    assert d.improvement.low == d.improvement.high == 0.0 and d.promote is False


def test_min_delta_and_relative_delta_are_tolerances_on_the_lower_bound():
    y, ch = holdout()
    args = (y, scores(y, 3.0, 10), scores(y, 2.0, 11), "2", {"channel": ch})
    low = decide(FRAUD, *args).improvement.low
    above = dataclasses.replace(FRAUD, gate={**GATE, "min_delta": low + 0.01})
    d = decide(above, *args)
    assert d.promote is False and checks(d)["vs_champion"] is False
    champ_ap = decide(FRAUD, *args).champion_value
    rel = dataclasses.replace(FRAUD, gate={**GATE, "min_relative_delta": low / champ_ap + 0.01})
    d = decide(rel, *args)
    assert d.promote is False and checks(d)["vs_champion"] is True and checks(d)["vs_champion_relative"] is False
    assert "relative improvement lower bound" in d.reason


def test_slice_regression_blocks_promotion_and_small_slices_are_ignored():
    """Better on `pos`, much worse on `online`: the slice blocks although the challenger may look fine."""
    y, ch = holdout()
    champion = scores(y, 2.5, 11)
    challenger = np.where(ch == "online", scores(y, 0.3, 12), scores(y, 4.5, 10))
    d = decide(FRAUD, y, challenger, champion, "2", {"channel": ch})
    assert d.promote is False
    assert checks(d)["slices"] is False
    by = {s.value: s for s in d.slices}
    assert by["online"].status == "regressed" and by["online"].improvement.high < -0.10
    assert by["pos"].status == "ok"
    assert by["wallet"].status == "too_small" and "ignored" in by["wallet"].detail
    assert "channel=online" in d.reason and "regression beyond the 0.1 tolerance" in d.reason


def test_slice_within_tolerance_does_not_block():
    y, ch = holdout()
    loose = dataclasses.replace(FRAUD, gate={**GATE, "slice_tolerance": 1.0})
    champion = scores(y, 2.5, 11)
    challenger = np.where(ch == "online", scores(y, 2.0, 12), scores(y, 4.5, 10))
    d = decide(loose, y, challenger, champion, "2", {"channel": ch})
    assert checks(d)["slices"] is True


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_predictions_give_an_undefined_metric_and_a_rejection(bad):
    y, ch = holdout()
    pred = scores(y, 3.0, 10)
    pred[5] = bad
    for champ in ((scores(y, 2.0, 11), "2"), (None, None)):
        d = decide(FRAUD, y, pred, *champ, {"channel": ch})
        assert d.promote is False
        assert checks(d)["challenger_metric_defined"] is False and checks(d)["value_threshold"] is False
        assert "rejected" in d.reason and "nan" in d.reason.lower()


@pytest.mark.parametrize("bad", [math.nan, None])
def test_nan_or_missing_metric_in_the_evidence_is_rejected(bad):
    challenger = {"brier": 0.01} if bad is None else {"average_precision": bad, "brier": 0.01}
    ev = Evidence(holdout_rows=1000, holdout_positives=80, challenger=challenger, latency_p95_ms=1.0)
    d = decide_promotion(FRAUD, "3", ev)
    assert d.promote is False and checks(d)["challenger_metric_defined"] is False
    assert f"average_precision = {bad}" in d.reason


def test_missing_calibration_metric_is_rejected():
    ev = Evidence(1000, 80, {"average_precision": 0.9}, latency_p95_ms=1.0)
    d = decide_promotion(FRAUD, "3", ev)
    assert d.promote is False and checks(d)["calibration"] is False and "Brier score None" in d.reason


@pytest.mark.parametrize("rows", [0, 1, 499])
def test_empty_or_too_small_holdout_is_rejected(rows):
    y, ch = holdout(rows, seed=4)
    y[:1] = 1.0
    d = decide(FRAUD, y, scores(y, 3.0, 10), scores(y, 2.0, 11), "2", {"channel": ch})
    assert d.promote is False
    assert checks(d)["holdout_size"] is False
    assert f"{rows} holdout rows" in d.reason and "500" in d.reason


def test_empty_holdout_is_rejected_even_without_a_row_minimum():
    no_min = dataclasses.replace(FRAUD, gate={k: v for k, v in GATE.items() if k != "min_holdout_rows"})
    empty = np.array([])
    d = decide(no_min, empty, empty, None, None, {"channel": np.array([], dtype=object)})
    assert d.promote is False and checks(d)["holdout_size"] is False


def test_a_holdout_without_enough_positives_is_rejected():
    y, ch = holdout()
    y[:] = 0.0
    y[:5] = 1.0
    d = decide(FRAUD, y, scores(y, 3.0, 10), None, None, {"channel": ch})
    assert d.promote is False and checks(d)["holdout_positives"] is False and "5 positive" in d.reason


def test_unlabelled_holdout_rows_fail_closed():
    y, ch = holdout()
    y[3] = math.nan
    d = decide(FRAUD, y, scores(np.nan_to_num(y), 3.0, 10), None, None, {"channel": ch})
    assert d.promote is False and "no label" in d.reason


def test_no_thresholds_configured_is_rejected_naming_the_keys():
    y, ch = holdout()
    bare = dataclasses.replace(FRAUD, gate={})
    for champ in ((None, None), (scores(y, 2.0, 11), "2")):
        d = decide(bare, y, scores(y, 3.0, 10), *champ, {"channel": ch})
        assert d.promote is False
        assert checks(d)["thresholds_configured"] is False
        assert "gate.min_primary" in d.reason and "gate.max_brier" in d.reason and "gate.max_latency_p95_ms" in d.reason
        assert FRAUD.path.name in d.reason
    assert "gate.min_delta" in d.reason and "gate.slice_tolerance" in d.reason   # with a champion


@pytest.mark.parametrize("spec,key", [(FRAUD, "min_primary"), (FRAUD, "max_brier"), (FRAUD, "max_latency_p95_ms"),
                                      (SPEND, "max_primary")])
def test_one_missing_value_threshold_is_rejected_naming_the_key(spec, key):
    broken = dataclasses.replace(spec, gate={k: v for k, v in spec.gate.items() if k != key})
    ev = Evidence(1000, 80 if spec.task == "binary" else None,
                  {spec.primary_metric: 0.9 if spec.higher_is_better else 10.0, "brier": 0.01}, latency_p95_ms=1.0)
    d = decide_promotion(broken, "3", ev)
    assert d.promote is False
    assert f"gate.{key}" in d.reason and spec.path.name in d.reason


def test_missing_min_delta_matters_only_with_a_champion():
    y, ch = holdout()
    broken = dataclasses.replace(FRAUD, gate={k: v for k, v in GATE.items() if k != "min_delta"})
    d = decide(broken, y, scores(y, 3.0, 10), scores(y, 2.0, 11), "2", {"channel": ch})
    assert d.promote is False and "gate.min_delta" in d.reason
    assert decide(broken, y, scores(y, 3.0, 10), None, None, {"channel": ch}).promote is True


def test_no_champion_yet_uses_value_thresholds_only_and_says_so():
    y, ch = holdout()
    ok = decide(FRAUD, y, scores(y, 3.0, 10), None, None, {"channel": ch})
    assert ok.promote is True and ok.mode == "first_model"
    assert "no champion yet: value thresholds only" in ok.reason
    assert ok.check("vs_champion").detail == "no champion yet: value thresholds only"
    assert {s.status for s in ok.slices} == {"not_compared", "too_small"}   # recorded for the model card
    low = decide(FRAUD, y, scores(y, 0.5, 10), None, None, {"channel": ch})
    assert low.promote is False and low.mode == "first_model"
    assert f"{low.challenger_value:.4f}" in low.reason and "must be >= 0.2" in low.reason


def test_unreadable_champion_is_rejected_with_the_error():
    y, ch = holdout()
    d = decide(FRAUD, y, scores(y, 3.0, 10), None, "2", {"channel": ch}, champion_error="model artifact missing")
    assert d.promote is False and d.mode == "vs_champion"
    assert checks(d)["vs_champion"] is False and checks(d)["slices"] is False
    assert "v2" in d.reason and "model artifact missing" in d.reason


def test_champion_with_undefined_predictions_is_rejected():
    y, ch = holdout()
    bad = scores(y, 2.0, 11)
    bad[0] = math.nan
    d = decide(FRAUD, y, scores(y, 3.0, 10), bad, "2", {"channel": ch})
    assert d.promote is False and checks(d)["vs_champion"] is False


def test_calibration_breach_is_rejected_even_with_a_perfect_ranking():
    """Same ranking as a good model, squeezed into [0.6, 1]: AP is unchanged, the Brier score is not."""
    y, ch = holdout()
    good = scores(y, 3.0, 10)
    squeezed = 0.6 + 0.4 * good
    d = decide(FRAUD, y, squeezed, None, None, {"channel": ch})
    assert d.challenger_value == pytest.approx(decide(FRAUD, y, good, None, None, {"channel": ch}).challenger_value)
    assert d.promote is False and checks(d)["calibration"] is False
    assert "Brier score" in d.reason and "must be <= 0.1" in d.reason and "ECE" in d.reason


def test_latency_breach_is_rejected():
    y, ch = holdout()
    d = decide(FRAUD, y, scores(y, 3.0, 10), None, None, {"channel": ch}, latency={"p95_ms": 80.0, "p50_ms": 9.0})
    assert d.promote is False and checks(d)["latency"] is False
    assert "p95 single-row latency (ms) 80.0000 (must be <= 50)" in d.reason
    unmeasured = decide(FRAUD, y, scores(y, 3.0, 10), None, None, {"channel": ch}, latency=None)
    assert unmeasured.promote is False and checks(unmeasured)["latency"] is False


@pytest.mark.parametrize("better", [True, False])
def test_lower_is_better_metric_direction(better):
    rng = np.random.default_rng(3)
    y = rng.gamma(2.0, 100.0, size=3000)
    good, bad = y + rng.normal(0, 60, 3000), y + rng.normal(0, 120, 3000)
    challenger, champion = (good, bad) if better else (bad, good)
    d = decide(SPEND, y, challenger, champion, "4")
    assert d.promote is better and d.metric == "mae"
    assert d.improvement.estimate == pytest.approx(d.champion_value - d.challenger_value)  # champion - challenger
    assert (d.improvement.low > 0) is better


def test_lower_is_better_value_threshold_without_champion():
    y = np.full(1000, 100.0)
    assert decide(SPEND, y, y + 499.0).promote is True
    d = decide(SPEND, y, y + 501.0)
    assert d.promote is False and "501.0000" in d.reason and "<=" in d.reason and "500" in d.reason


def test_decision_serialises_to_strict_json():
    y, ch = holdout()
    d = decide(FRAUD, y, scores(y, 3.0, 10), scores(y, 2.0, 11), "2", {"channel": ch})
    back = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert back["promote"] is True and back["challenger_version"] == "3" and back["champion_version"] == "2"
    assert back["checks"][0]["name"] == "thresholds_configured"
    assert {c["name"] for c in back["checks"]} >= {"holdout_size", "challenger_metric_defined", "value_threshold",
                                                   "calibration", "latency", "vs_champion", "slices"}
    assert back["improvement"]["resamples"] == 1000 and back["slices"][0]["column"] == "channel"
    nan = decide(FRAUD, y, np.full(len(y), math.nan), None, None, {"channel": ch})
    assert json.loads(json.dumps(nan.to_dict(), allow_nan=False))["challenger_value"] is None


# --- every registered metric through the gate ------------------------------------------------------------


def metric_spec(tmp_path: Path, name: str) -> ModelSpec:
    """A shipped spec (fraud for a binary metric, spend for a regression one) with `name` as its primary
    metric and a gate section in that metric's direction and units, loaded as the DAGs load it."""
    m = metric(name)
    binary = "binary" in m.tasks
    raw = yaml.safe_load((REPO_ROOT / "models" / ("fraud.yaml" if binary else "spend.yaml")).read_text())
    raw["metric"] = {"primary": name}
    raw["gate"] = {("min_primary" if m.higher_is_better else "max_primary"): 0.0 if m.higher_is_better else 1e6,
                   "max_latency_p95_ms": 50, "min_delta": 0.0, "min_relative_delta": 0.0, "min_holdout_rows": 500,
                   "bootstrap_resamples": 1000, "confidence": 0.95, "slices": ["channel"],
                   "slice_tolerance": 0.10 if binary else 50.0, "slice_min_rows": 100,
                   **({"max_brier": 0.10, "min_holdout_positives": 20} if binary else {})}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    assert spec.primary_metric == name and spec.higher_is_better is m.higher_is_better
    return spec


def metric_case(name: str, outcome: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Labels, challenger and champion predictions and a channel slice: the challenger clearly better, of
    the same skill (independent noise: a tie) or clearly worse."""
    if "binary" in metric(name).tasks:
        y, ch = holdout()
        skill = {"better": (3.0, 2.0), "tie": (2.5, 2.5), "worse": (2.0, 3.0)}[outcome]
        return y, scores(y, skill[0], 10), scores(y, skill[1], 11), {"channel": ch}
    rng = np.random.default_rng(3)
    y = rng.gamma(2.0, 100.0, 3000)
    noise = {"better": (60, 120), "tie": (60, 60), "worse": (120, 60)}[outcome]
    challenger, champion = y + rng.normal(0, noise[0], 3000), y + rng.normal(0, noise[1], 3000)
    ch = rng.choice(np.array(["pos", "online", "wallet"], dtype=object), size=3000, p=[0.55, 0.43, 0.02])
    return y, challenger, champion, {"channel": ch}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_registered_metric_promotes_a_clearly_better_challenger(tmp_path, name):
    spec = metric_spec(tmp_path, name)
    y, challenger, champion, slices = metric_case(name, "better")
    d = decide(spec, y, challenger, champion, "2", slices)
    m = metric(name)
    assert d.promote is True, d.reason
    assert d.metric == name and d.mode == "vs_champion" and all(checks(d).values())
    assert d.challenger_value == pytest.approx(m.value(y, challenger))
    assert d.champion_value == pytest.approx(m.value(y, champion))
    assert d.improvement.estimate == pytest.approx(m.sign * (d.challenger_value - d.champion_value))
    assert 0 < d.improvement.low < d.improvement.estimate < d.improvement.high
    assert {s.value: s.status for s in d.slices} == {"pos": "ok", "online": "ok", "wallet": "too_small"}
    assert set(d.challenger_metrics) >= {x.name for x in METRICS.values() if spec.task in x.tasks}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_registered_metric_does_not_promote_a_tie(tmp_path, name):
    spec = metric_spec(tmp_path, name)
    y, challenger, champion, slices = metric_case(name, "tie")
    d = decide(spec, y, challenger, champion, "2", slices)
    assert d.improvement is not None and d.improvement.low <= 0 <= d.improvement.high
    assert d.promote is False and checks(d)["vs_champion"] is False
    assert "within noise: a tie is not promoted" in d.reason
    same = decide(spec, y, challenger, challenger.copy(), "2", slices)
    assert same.improvement.low == same.improvement.high == 0.0 and same.promote is False


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_registered_metric_rejects_a_worse_challenger(tmp_path, name):
    spec = metric_spec(tmp_path, name)
    y, challenger, champion, slices = metric_case(name, "worse")
    d = decide(spec, y, challenger, champion, "2", slices)
    assert d.promote is False and checks(d)["vs_champion"] is False
    assert d.improvement.high < 0
    assert d.reason.startswith("rejected") and f"{d.challenger_value:.4f}" in d.reason
    worse_than = (d.challenger_value < d.champion_value) if metric(name).higher_is_better \
        else (d.challenger_value > d.champion_value)
    assert worse_than


# --- statistics --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METRICS))
def test_bootstrap_resamples_equal_the_metric_on_the_resampled_rows(name):
    """The gate's resample counts through the registry's weighted kernel = the metric on the drawn rows."""
    m = metric(name)
    rng = np.random.default_rng(0)
    n = 300
    if "binary" in m.tasks:
        y = (rng.random(n) < 0.15).astype(float)
        pred = np.round(np.clip(rng.random(n) * 0.8 + 0.2 * y, 0, 1), 1)   # rounded: many tied scores
    else:
        y, pred = rng.gamma(2.0, 50.0, n), rng.gamma(2.0, 50.0, n)
    counts = g.resample_counts(rng, n, 6)
    got = m.weighted(y, pred, counts)
    for r in range(6):
        idx = np.repeat(np.arange(n), counts[r].astype(int))
        assert got[r] == pytest.approx(m.value(y[idx], pred[idx]), rel=1e-12, abs=1e-12)


def test_bootstrap_is_reproducible_with_its_seed():
    y, _ = holdout(2000)
    a, b = scores(y, 3.0, 10), scores(y, 2.5, 11)
    one = paired_bootstrap("average_precision", y, a, b, 1000, 0.95, seed=42)
    assert paired_bootstrap("average_precision", y, a, b, 1000, 0.95, seed=42) == one
    other = paired_bootstrap("average_precision", y, a, b, 1000, 0.95, seed=43)
    assert other != one and other.estimate == one.estimate
    assert one.valid == 1000 and one.units == 2000


def test_bootstrap_interval_is_wider_with_fewer_rows():
    y, _ = holdout(8000, seed=5)
    a, b = scores(y, 3.0, 10), scores(y, 2.5, 11)
    width = {}
    for n in (500, 2000, 8000):
        iv = paired_bootstrap("average_precision", y[:n], a[:n], b[:n], 1000, 0.95, seed=1)
        width[n] = iv.high - iv.low
    assert width[500] > width[2000] > width[8000]


def test_bootstrap_resamples_clusters_together():
    """Rows repeated per customer are not independent evidence: resampling customers widens the interval."""
    rng = np.random.default_rng(2)
    per_customer = rng.gamma(2.0, 100.0, 400)
    y = np.repeat(per_customer, 7)
    a = y + np.repeat(rng.normal(0, 50, 400), 7)
    b = y + np.repeat(rng.normal(0, 55, 400), 7)
    rows = paired_bootstrap("mae", y, a, b, 1000, 0.95, seed=1)
    customers = paired_bootstrap("mae", y, a, b, 1000, 0.95, seed=1, clusters=np.repeat(np.arange(400), 7))
    assert customers.units == 400 and rows.units == 2800
    assert customers.high - customers.low > 1.5 * (rows.high - rows.low)


def test_bootstrap_is_undefined_without_enough_positives():
    y = np.zeros(1000)
    y[0] = 1.0
    iv = paired_bootstrap("average_precision", y, np.linspace(0, 1, 1000), np.linspace(1, 0, 1000), 200, 0.95, 0)
    assert not iv.defined and iv.valid < 0.9 * 200   # ~63% of resamples draw the only positive


def _old_paired_deltas(name, y, a, b, resamples, seed, clusters=None):
    """The paired bootstrap before it was made fast (issue 16), kept as the reference: per chunk, a
    (resamples x units) count matrix by one bincount of `rng.integers(0, k, (chunk, k))`, gathered to the rows,
    through `Metric.weighted` (a sort per call)."""
    m = metric(name)
    n = len(y)
    member = np.unique(clusters, return_inverse=True)[1].ravel() if clusters is not None else np.arange(n)
    k = int(member.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // n))
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        idx = rng.integers(0, k, size=(size, k)) + (np.arange(size)[:, None] * k)
        w = np.bincount(idx.ravel(), minlength=size * k).reshape(size, k).astype(np.float64)[:, member]
        out.append(m.sign * (m.weighted(y, a, w) - m.weighted(y, b, w)))
    return np.concatenate(out)


@pytest.mark.parametrize("k", [1, 7, 1001])
def test_resample_counts_are_the_draws_they_always_were(k):
    """Same seed, same resamples: the counts equal the old single-bincount formula, whatever the chunking."""
    rng = np.random.default_rng(3)
    idx = rng.integers(0, k, size=(5, k)) + (np.arange(5)[:, None] * k)
    old = np.bincount(idx.ravel(), minlength=5 * k).reshape(5, k).astype(np.float64)
    assert np.array_equal(g.resample_counts(np.random.default_rng(3), k, 5), old)
    rng = np.random.default_rng(3)
    assert np.array_equal(np.vstack([g.resample_counts(rng, k, 2), g.resample_counts(rng, k, 3)]), old)
    rng = np.random.default_rng(3)
    both = np.hstack([g.cluster_counts(rng, k, 4), g.cluster_counts(rng, k, 1)])
    assert both.shape == (k, 5) and np.array_equal(both.T, old)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_bootstrap_gives_the_interval_of_the_old_sort_per_resample_path(name):
    """The fast path estimates the same thing: same seed, same resamples, the same improvements (to rounding),
    hence the same interval; with clusters and tied scores."""
    rng = np.random.default_rng(4)
    n = 2500
    clusters = rng.integers(0, 350, n)
    if "binary" in metric(name).tasks:
        y = (rng.random(n) < 0.06).astype(float)
        a, b = np.round(scores(y, 2.5, 1), 2), np.round(scores(y, 2.0, 2), 2)     # tied scores
    else:
        y = rng.gamma(2.0, 50.0, n)
        a, b = y + rng.normal(0, 30, n), y + rng.normal(0, 33, n)
    for cl in (clusters, None):
        old = _old_paired_deltas(name, y, a, b, 300, 11, cl)
        iv = paired_bootstrap(name, y, a, b, 300, 0.95, seed=11, clusters=cl)
        assert iv.valid == np.isfinite(old).sum() == 300
        low, high = np.quantile(old, [0.025, 0.975])
        assert iv.low == pytest.approx(low, rel=1e-12, abs=1e-14)
        assert iv.high == pytest.approx(high, rel=1e-12, abs=1e-14)
        assert iv.units == (350 if cl is not None else n)


def test_bootstrap_undefined_resamples_are_counted_as_before():
    """Resamples without a positive are NaN in both paths; the count of valid ones (and so the >10% rule) is
    the same."""
    y = np.zeros(600)
    y[[3, 400]] = 1.0
    a, b = np.linspace(0, 1, 600), np.linspace(1, 0, 600) ** 2
    clusters = np.arange(600) // 3                   # 200 clusters: a resample misses both positives ~13% of the time
    old = _old_paired_deltas("average_precision", y, a, b, 400, 5, clusters)
    iv = paired_bootstrap("average_precision", y, a, b, 400, 0.95, seed=5, clusters=clusters)
    assert 0 < 400 - np.isfinite(old).sum() == 400 - iv.valid
    assert iv.valid < 0.9 * 400 and not iv.defined and math.isnan(iv.low) and math.isnan(iv.high)


def test_calibration_metrics():
    y = np.array([0, 0, 1, 1.0])
    assert g.brier_score(y, np.array([0, 0, 1, 1.0])) == 0.0
    assert g.brier_score(y, np.full(4, 0.5)) == pytest.approx(0.25)
    assert g.expected_calibration_error(y, np.full(4, 0.5)) == pytest.approx(0.0)
    assert g.expected_calibration_error(y, np.array([0.9, 0.9, 0.9, 0.9])) == pytest.approx(0.4)


def test_slice_labels_bucket_numeric_columns():
    import pandas as pd

    spec = dataclasses.replace(SPEND, slices=(SliceSpec("spend_7d", (250.0, 1000.0)), SliceSpec("absent")))
    frame = pd.DataFrame({"spend_7d": [10.0, 250.0, 999.0, 5000.0, None]})
    labels = g.slice_labels(spec, frame)
    assert list(labels["spend_7d"]) == ["<250", "[250, 1000)", "[250, 1000)", ">=1000", "missing"]
    assert len(labels["absent"]) == 0   # not in the holdout: recorded as undefined, which blocks
    res = g.compare_slices(spec, np.ones(5), np.ones(5), np.ones(5), labels)
    assert any(s.status == "undefined" and s.column == "absent" for s in res)


def test_single_row_latency_is_measured_per_row():
    import pandas as pd
    import xgboost as xgb

    from pipelines.model import single_row_latency_ms

    x = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) % 3})
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=x["a"] > 25), num_boost_round=3)
    lat = single_row_latency_ms(booster, x, samples=40)
    assert lat["samples"] == 40 and 0 < lat["p50_ms"] <= lat["p95_all_ms"] <= lat["p99_ms"]
    assert 0 < lat["p95_ms"] <= lat["p95_all_ms"]     # the best block's p95 (CPU time of the scoring thread)
    assert lat["p95_wall_ms"] > 0                     # wall time, kept for the record
    assert math.isnan(single_row_latency_ms(booster, x.iloc[:0])["p95_ms"])


# --- the spec's gate section ---------------------------------------------------------------------------


def test_shipped_specs_configure_every_required_threshold():
    for spec in SPECS.values():
        assert set(g.required_thresholds(spec, has_champion=True)) <= set(spec.gate), spec.name
    assert [s.column for s in SPECS["fraud"].slices] == ["channel", "category"]
    assert SPECS["spend"].slices == (SliceSpec("cust_amount_sum_7d", (250.0, 1000.0)),)


def _write(tmp_path: Path, gate: dict) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "models" / "fraud.yaml").read_text())
    raw["gate"] = gate
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("gate,words", [
    ({"min_primary": 0.2, "min_detla": 0.0}, ["gate.min_detla", "min_delta"]),
    ({"max_primary": 0.9}, ["gate.max_primary", "gate.min_primary"]),
    ({"min_primary": "high"}, ["gate.min_primary", "number"]),
    ({"min_primary": 0.2, "confidence": 95}, ["gate.confidence"]),
    ({"min_primary": 0.2, "slices": [{"column": "amount", "bins": [10, 5]}]}, ["bins", "amount"]),
    ({"min_primary": 0.2, "slices": "channel"}, ["gate.slices"]),
])
def test_bad_gate_section_is_a_spec_error_naming_file_and_key(tmp_path, gate, words):
    path = _write(tmp_path, gate)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_gate_section_keeps_the_old_keys_and_reads_slices(tmp_path):
    spec = load_spec(_write(tmp_path, {"min_primary": 0.2, "min_delta": 0, "min_holdout_rows": 500,
                                       "slices": ["channel", {"column": "amount", "bins": [100, 1000]}]}))
    assert spec.gate == {"min_primary": 0.2, "min_delta": 0.0, "min_holdout_rows": 500.0}
    assert spec.slices == (SliceSpec("channel"), SliceSpec("amount", (100.0, 1000.0)))
