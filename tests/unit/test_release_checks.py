"""Release checks beyond the holdout (pipelines/release/): golden sets, fairness parity, explanations, cost.

The golden-set and parity verdicts run through the gate's own `compare_on_holdout` + `decide_promotion`, as
the train DAG runs them; predictions are seeded synthetic scores or real XGBoost boosters.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.gate import compare_on_holdout, decide_promotion
from pipelines.release import cost as c
from pipelines.release.checks import release_checks
from pipelines.release.explain import contributions, explained_rows, global_importance, top_contributions
from pipelines.release.fairness import group_metric, parity
from pipelines.release.specs import GoldenSpec, ParitySpec
from pipelines.spec import REPO_ROOT, SpecError, load_spec, load_specs
from pipelines.util import sha256_file

pytestmark = pytest.mark.unit

SPECS = load_specs(REPO_ROOT / "models")
GATE = {"min_primary": 0.20, "max_brier": 0.25, "max_latency_p95_ms": 50.0, "min_delta": 0.0,
        "min_holdout_rows": 500.0, "min_holdout_positives": 20.0, "bootstrap_resamples": 500.0, "confidence": 0.95}
FRAUD = dataclasses.replace(SPECS["fraud"], gate=GATE, slices=(), golden=(), fairness=())
FEATURES = ["amount", "velocity"]
FAST = {"p95_ms": 2.0, "p50_ms": 1.0}


def scored(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1.0 / (1.0 + np.exp(-(signal * y + rng.normal(size=len(y)) - 2.0)))


def golden_file(tmp_path: Path, n: int = 1500, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.gamma(2, 50, n), "velocity": rng.poisson(3, n).astype(float),
                          "customer_id": rng.integers(0, 300, n), "is_fraud": (rng.random(n) < 0.2).astype(int)})
    path = tmp_path / "golden" / "cases.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def with_golden(path: Path, **kw) -> object:
    g = GoldenSpec("cases", path, sha256_file(path), **{"min_primary": 0.25, "max_regression": 0.02, **kw})
    return dataclasses.replace(FRAUD, golden=(g,))


def gate_with(spec, y, chal, champ, predict_version, holdout=None):
    """The gate's decision with the release checks, as pipelines.gate._evaluate_gate assembles it."""
    holdout = holdout if holdout is not None else pd.DataFrame({"country": ["US"] * len(y)})
    ev = compare_on_holdout(spec, y, chal, champ, "1", None, FAST)
    extra, record = release_checks(spec, holdout, y, chal, FEATURES, predict_version, "2", "1")
    return decide_promotion(spec, "2", dataclasses.replace(ev, release_checks=tuple(extra), release=record)), record


def test_a_challenger_better_on_the_holdout_but_worse_on_the_golden_set_is_not_promoted(tmp_path):
    path = golden_file(tmp_path)
    spec = with_golden(path)
    golden_y = pd.read_parquet(path)["is_fraud"].to_numpy(float)
    rng = np.random.default_rng(0)
    y = (rng.random(6000) < 0.1).astype(float)
    champ, chal = scored(y, 1.0, 1), scored(y, 3.0, 2)           # the challenger is far better on the holdout

    def predict_version(version, frame):   # ...and far worse on the golden cases
        return scored(golden_y, 3.0 if version == "1" else 0.3, int(version))

    decision, record = gate_with(spec, y, chal, champ, predict_version)
    assert decision.check("vs_champion").passed                    # the holdout alone would promote it
    golden = decision.check("golden.cases")
    assert not decision.promote and not golden.passed
    assert "worse beyond noise" in golden.detail and "golden set cases" in decision.reason
    assert record["golden"][0]["sha256"] == sha256_file(path) and record["golden"][0]["improvement"]["high"] < -0.02

    def equal(version, frame):             # the same on the golden set: no regression, promoted
        return scored(golden_y, 3.0, 7)

    decision, _ = gate_with(spec, y, chal, champ, equal)
    assert decision.promote and decision.check("golden.cases").passed, decision.reason


def test_a_changed_or_missing_golden_set_fails_closed_and_says_what_to_do(tmp_path):
    path = golden_file(tmp_path)
    spec = with_golden(path)
    golden_y = pd.read_parquet(path)["is_fraud"].to_numpy(float)
    y = (np.random.default_rng(0).random(6000) < 0.1).astype(float)

    def predict_version(version, frame):
        return scored(golden_y, 3.0, 1)

    frame = pd.read_parquet(path)
    frame.loc[0, "is_fraud"] = 1 - frame.loc[0, "is_fraud"]       # one label edited after the set was frozen
    frame.to_parquet(path, index=False)
    decision, _ = gate_with(spec, y, scored(y, 3.0, 2), scored(y, 1.0, 1), predict_version)
    check = decision.check("golden.cases")
    assert not decision.promote and not check.passed
    assert "changed" in check.detail and "flywheel golden hash" in check.detail and str(path) in check.detail

    path.unlink()
    decision, _ = gate_with(spec, y, scored(y, 3.0, 2), scored(y, 1.0, 1), predict_version)
    assert not decision.promote and "missing" in decision.check("golden.cases").detail

    golden_file(tmp_path)                  # the same bytes again, but a column the model needs is gone
    pd.read_parquet(path).drop(columns=["velocity"]).to_parquet(path, index=False)
    spec = with_golden(path)               # frozen with that content: the hash matches, the inputs do not
    decision, _ = gate_with(spec, y, scored(y, 3.0, 2), scored(y, 1.0, 1), predict_version)
    assert not decision.promote and "velocity" in decision.check("golden.cases").detail


def test_golden_value_threshold_applies_to_a_first_model_too(tmp_path):
    path = golden_file(tmp_path)
    spec = with_golden(path, min_primary=0.9)
    golden_y = pd.read_parquet(path)["is_fraud"].to_numpy(float)
    y = (np.random.default_rng(0).random(6000) < 0.1).astype(float)
    ev = compare_on_holdout(spec, y, scored(y, 3.0, 2), None, None, None, FAST)
    extra, record = release_checks(spec, pd.DataFrame(index=range(len(y))), y, scored(y, 3.0, 2), FEATURES,
                                   lambda v, f: scored(golden_y, 1.0, 3), "1", None)
    decision = decide_promotion(spec, "1", dataclasses.replace(ev, release_checks=tuple(extra), release=record))
    assert decision.mode == "first_model" and not decision.promote
    assert "must be >= 0.9" in decision.check("golden.cases").detail
    assert "no champion yet" in decision.check("golden.cases").detail


def test_parity_matches_a_hand_calculation():
    # country A: 4 negatives, 1 flagged -> FPR 0.25; B: 5 negatives, 3 flagged -> 0.6; C: 2 rows only (too small)
    groups = np.array(["A"] * 6 + ["B"] * 6 + ["C"] * 2)
    y = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1], dtype=float)
    pred = np.array([0.9, 0.1, 0.2, 0.3, 0.8, 0.4, 0.7, 0.6, 0.55, 0.1, 0.2, 0.9, 0.99, 0.1])
    rule = ParitySpec("country", "false_positive_rate", "difference", 0.2, cutoff=0.5, min_rows=5)
    res = parity(rule, y, pred, groups)
    by = {g.group: g for g in res.groups}
    assert by["A"].value == pytest.approx(1 / 4) and by["B"].value == pytest.approx(3 / 5)
    assert not by["C"].judged and by["C"].rows == 2
    assert res.value == pytest.approx(3 / 5 - 1 / 4) and not res.passed
    assert "highest B" in res.detail and "lowest A" in res.detail and "C" in res.detail
    ratio = parity(dataclasses.replace(rule, parity="ratio", threshold=0.5), y, pred, groups)
    assert ratio.value == pytest.approx((1 / 4) / (3 / 5)) and not ratio.passed
    # recall, positive rate, error rate, MAE by hand on group A
    ya, pa = y[:6], pred[:6]
    assert group_metric("recall", ya, pa, 0.5) == pytest.approx(1 / 2)          # positives 0.8 (hit), 0.4 (miss)
    assert group_metric("positive_rate", ya, pa, 0.5) == pytest.approx(2 / 6)
    assert group_metric("error_rate", ya, pa, 0.5) == pytest.approx(2 / 6)      # 0.9 on a negative, 0.4 on a positive
    assert group_metric("mae", np.array([1.0, 3.0]), np.array([2.0, 1.0]), 0.5) == pytest.approx(1.5)
    assert math.isnan(group_metric("recall", np.zeros(3), np.ones(3), 0.5))      # no positive: undefined


def test_a_blocking_parity_breach_blocks_and_a_reported_one_does_not():
    rng = np.random.default_rng(3)
    n = 6000
    y = (rng.random(n) < 0.1).astype(float)
    country = rng.choice(["US", "GB"], n)
    chal = scored(y, 3.0, 2)
    chal = np.where((country == "GB") & (y == 0), np.maximum(chal, 0.6), chal)   # flags GB's legitimate customers
    holdout = pd.DataFrame({"country": country})
    rule = ParitySpec("country", "false_positive_rate", "difference", 0.05, min_rows=100)
    for blocking in (False, True):
        spec = dataclasses.replace(FRAUD, fairness=(dataclasses.replace(rule, blocking=blocking),))
        decision, record = gate_with(spec, y, chal, scored(y, 1.0, 1), lambda v, f: None, holdout)
        check = decision.check("fairness.country.false_positive_rate")
        assert record["fairness"][0]["passed"] is False and record["fairness"][0]["value"] > 0.5
        assert check.passed is (not blocking) and decision.promote is (not blocking), decision.reason
        assert ("blocking rule: not promoted" in check.detail) is blocking


def test_fairness_and_golden_spec_errors_name_file_and_key(tmp_path):
    raw = yaml.safe_load((REPO_ROOT / "models" / "fraud.yaml").read_text())
    cases = [({"golden": [{"name": "x", "file": "g.parquet", "sha256": "abc", "min_primary": 0.1}]},
              "golden[0].sha256"),
             ({"golden": [{"name": "x", "file": "g.parquet", "sha256": "a" * 64}]}, "declares no expectation"),
             ({"fairness": [{"column": "nope", "metric": "recall", "threshold": 0.1}]}, "fairness[0].column"),
             ({"fairness": [{"column": "country", "metric": "mae", "threshold": 0.1}]}, "fairness[0].metric"),
             ({"explain": {"top_k": -1}}, "explain.top_k")]
    for extra, named in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**raw, **extra}, sort_keys=False))
        with pytest.raises(SpecError) as err:
            load_spec(path)
        assert str(path) in str(err.value) and named in str(err.value), (named, str(err.value))


def test_the_shipped_golden_set_is_the_file_the_spec_froze():
    g = SPECS["fraud"].golden[0]
    assert g.file.exists() and sha256_file(g.file) == g.sha256, \
        "golden/fraud/holiday_scam.parquet changed: rebuild with `python -m scenarios.golden_cards` and re-freeze"
    frame = pd.read_parquet(g.file)
    assert frame["is_fraud"].isin([0, 1]).all() and frame["is_fraud"].sum() > 100


def booster_and_matrix():
    import xgboost as xgb

    rng = np.random.default_rng(1)
    n = 3000
    x = pd.DataFrame({"amount": rng.gamma(2, 50, n), "velocity": rng.poisson(3, n).astype(float),
                      "channel": pd.Categorical(rng.choice(["pos", "online", "wallet"], n))})
    y = ((x["amount"] > 150) ^ (x["channel"] == "online")).astype(float)
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 4, "tree_method": "hist", "nthread": 1,
                     "max_cat_to_onehot": 1}, xgb.DMatrix(x, label=y, enable_categorical=True), 20)
    return bst, x


def test_contributions_sum_to_the_margin_and_top_k_picks_the_largest():
    import xgboost as xgb

    bst, x = booster_and_matrix()
    margin = bst.predict(xgb.DMatrix(x, enable_categorical=True), output_margin=True)
    for exact in (True, False):           # XGBoost's identity holds for TreeSHAP and for the approximation
        contribs = contributions(bst, x, exact=exact)
        assert contribs.shape == (len(x), 3 + 1)
        np.testing.assert_allclose(contribs.sum(axis=1), margin, rtol=1e-4, atol=1e-4)
    contribs = contributions(bst, x)
    top = top_contributions(contribs, list(x.columns), 2)
    assert set(top) == {"contribution_1_feature", "contribution_1_value", "contribution_2_feature",
                        "contribution_2_value"}
    for i in range(0, len(x), 250):
        row = contribs[i, :3]
        order = np.argsort(-np.abs(row), kind="stable")
        assert top["contribution_1_feature"][i] == x.columns[order[0]]
        assert top["contribution_2_feature"][i] == x.columns[order[1]]
        assert abs(top["contribution_1_value"][i]) >= abs(top["contribution_2_value"][i])
        assert top["contribution_1_value"][i] == pytest.approx(row[order[0]], rel=1e-5)
    # `explain.min_prediction`: only the rows scoring at least the cutoff are explained, with the same values
    pred = bst.predict(xgb.DMatrix(x, enable_categorical=True))
    some = explained_rows(bst, x, pred, 2, min_prediction=0.5)
    flagged = pred >= 0.5
    assert 0 < flagged.sum() < len(x)
    assert pd.isna(some["contribution_1_feature"][~flagged]).all()
    assert np.isnan(some["contribution_1_value"][~flagged]).all()
    assert list(some["contribution_1_feature"][flagged]) == list(np.asarray(top["contribution_1_feature"])[flagged])
    np.testing.assert_allclose(some["contribution_2_value"][flagged], top["contribution_2_value"][flagged], rtol=1e-6)
    imp = global_importance(bst, x, list(x.columns), rows=500)
    assert [r["feature"] for r in imp][-1] == "velocity"                 # it plays no part in the label
    assert imp[0]["mean_abs_shap"] > imp[-1]["mean_abs_shap"] and all(r["total_gain"] >= 0 for r in imp)


def test_cost_is_measured_and_summed_per_week_keeping_the_last_rerun():
    with c.measured() as cost:
        sum(i * i for i in range(300_000))
        time.sleep(0.05)
    assert cost.cpu_s > 0 and cost.wall_s >= 0.05 and cost.peak_mb > 10
    monday = c.data_day(pd.Timestamp("2026-02-09", tz="UTC").to_pydatetime())
    per_version = {"1": {"train": {monday: {"cpu_s": 2.0, "wall_s": 3.0, "peak_mb": 500.0}},
                         "score": {monday: {"cpu_s": 1.0, "wall_s": 1.5, "peak_mb": 300.0},
                                   monday + 7: {"cpu_s": 1.2, "wall_s": 1.6, "peak_mb": 310.0}}},
                   "2": {"gate": {monday + 3: {"cpu_s": 0.5, "wall_s": 0.7, "peak_mb": 600.0}}}}
    weeks = c.weekly_costs(per_version)
    assert [w["week"] for w in weeks] == ["2026-02-09", "2026-02-16"]
    assert weeks[0]["cpu_s"] == pytest.approx(3.5) and weeks[0]["peak_mb"] == 600.0
    assert weeks[0]["runs"] == {"train": 1, "score": 1, "gate": 1} and weeks[1]["score_cpu_s"] == pytest.approx(1.2)


def test_cost_recorded_on_a_real_mlflow_run_keeps_one_value_per_day(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cost", artifact_location=str(tmp_path / "art"))
    run_id = client.create_run(exp).info.run_id
    day = pd.Timestamp("2026-02-10", tz="UTC").to_pydatetime()
    c.record_cost(client, run_id, "score", c.Cost(1.0, 2.0, 300.0), day)
    time.sleep(0.01)
    c.record_cost(client, run_id, "score", c.Cost(1.5, 2.5, 320.0), day)      # a re-run of the same interval
    got = c.version_costs(client, run_id)
    assert got == {"score": {c.data_day(day): {"cpu_s": 1.5, "wall_s": 2.5, "peak_mb": 320.0}}}


def test_the_card_shows_golden_sets_parity_importance_and_cost():
    from pipelines.model_card import CardFacts, card_markdown

    spec = SPECS["fraud"]
    decision = {"promote": True, "mode": "vs_champion", "holdout_rows": 5000, "reason": "promoted", "checks": [],
                "release": {"golden": [{"name": "holiday_scam", "rows": 4619, "positives": 1195, "challenger": 0.61,
                                        "champion": 0.40, "improvement": {"estimate": 0.21, "low": 0.18, "high": 0.24},
                                        "sha256": "eff3c8fefd2c" + "0" * 52, "passed": True,
                                        "detail": "golden set holiday_scam: ok"}],
                            "fairness": [{"column": "country", "metric": "false_positive_rate", "parity": "difference",
                                          "threshold": 0.02, "value": 0.013, "passed": True, "blocking": False,
                                          "groups": [{"group": "US", "rows": 900, "positives": 9, "value": 0.01,
                                                      "judged": True}]}]}}
    facts = CardFacts("3", "run", {}, {}, {}, {}, ["champion"], decision,
                      importance=[{"feature": "amount", "mean_abs_shap": 0.8, "total_gain": 120.0}],
                      importance_rows=2000,
                      costs={"train": {20494: {"cpu_s": 4.2, "wall_s": 5.0, "peak_mb": 700.0}}})
    md = card_markdown(spec, facts)
    for text in ("## Golden sets", "holiday_scam", "0.6100", "## Fairness", "false_positive_rate by `country`",
                 "## Explanations", "mean abs SHAP", "amount", "## Cost", "| train | 1 | 4.20 | 5 | 700 |"):
        assert text in md, text


def test_golden_cards_writes_the_same_bytes_again(tmp_path):
    """The shipped set is reproducible from the generator (its hash is what the spec froze)."""
    from scenarios.golden_cards import build

    before = dict(os.environ)
    out = build(tmp_path / "again.parquet")
    assert sha256_file(out) == SPECS["fraud"].golden[0].sha256
    assert dict(os.environ) == before          # its temporary Flywheel home leaves no setting behind
