"""decide_promotion: promote only when every check passes; everything else fails closed with a reason."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from pipelines.gate import GateDecision, decide_promotion
from pipelines.spec import REPO_ROOT, load_specs

pytestmark = pytest.mark.unit

SPECS = load_specs(REPO_ROOT / "models")
FRAUD = SPECS["fraud"]  # average_precision: higher is better
# mae: lower is better; a fixed ceiling so these tests pin the gate's semantics, not the shipped tuning
SPEND = dataclasses.replace(SPECS["spend"], gate={**SPECS["spend"].gate, "max_primary": 500.0, "min_delta": 0.0})
ROWS = 1000  # above both specs' min_holdout_rows


def checks(d: GateDecision) -> dict[str, bool]:
    return {c.name: c.passed for c in d.checks}


def test_better_challenger_is_promoted():
    d = decide_promotion(FRAUD, "3", 0.42, "2", 0.35, ROWS)
    assert d.promote is True
    assert d.reason.startswith("promoted")
    assert "0.4200" in d.reason and "0.3500" in d.reason and "v2" in d.reason
    assert all(checks(d).values())
    assert (d.model, d.metric, d.challenger_value, d.champion_value) == ("fraud", "average_precision", 0.42, 0.35)


def test_worse_challenger_is_rejected_with_both_values_in_the_reason():
    d = decide_promotion(FRAUD, "3", 0.30, "2", 0.35, ROWS)
    assert d.promote is False
    assert d.reason.startswith("rejected")
    assert "0.3000" in d.reason and "0.3500" in d.reason and "v2" in d.reason
    assert checks(d)["vs_champion"] is False and checks(d)["value_threshold"] is True
    vs = next(c for c in d.checks if c.name == "vs_champion")
    assert vs.value == pytest.approx(-0.05) and vs.threshold == 0.0


def test_equal_challenger_passes_a_zero_min_delta():
    assert decide_promotion(FRAUD, "3", 0.35, "2", 0.35, ROWS).promote is True


def test_min_delta_is_enforced():
    strict = dataclasses.replace(FRAUD, gate={**FRAUD.gate, "min_delta": 0.05})
    assert decide_promotion(strict, "3", 0.38, "2", 0.35, ROWS).promote is False
    assert decide_promotion(strict, "3", 0.41, "2", 0.35, ROWS).promote is True


def test_no_champion_uses_the_value_threshold_only():
    ok = decide_promotion(FRAUD, "1", 0.25, None, None, ROWS)
    assert ok.promote is True
    assert "no champion yet" in ok.reason
    assert next(c for c in ok.checks if c.name == "vs_champion").detail == "no champion yet: value thresholds only"
    low = decide_promotion(FRAUD, "1", 0.15, None, None, ROWS)
    assert low.promote is False
    assert "0.1500" in low.reason and "0.2" in low.reason and ">=" in low.reason
    assert checks(low) == {
        "holdout_size": True,
        "challenger_metric_defined": True,
        "value_threshold": False,
        "vs_champion": True,
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_undefined_challenger_metric_is_rejected(bad):
    for champ in (("2", 0.35), (None, None)):
        d = decide_promotion(FRAUD, "3", bad, *champ, ROWS)
        assert d.promote is False
        assert checks(d)["challenger_metric_defined"] is False
        assert checks(d)["value_threshold"] is False
        assert "rejected" in d.reason


@pytest.mark.parametrize("rows", [0, 1, 499])
def test_empty_or_too_small_holdout_is_rejected(rows):
    d = decide_promotion(FRAUD, "3", 0.9, "2", 0.35, rows)
    assert d.promote is False
    assert checks(d)["holdout_size"] is False
    assert f"{rows} holdout rows" in d.reason and "500" in d.reason
    assert decide_promotion(FRAUD, "3", 0.9, "2", 0.35, 500).promote is True


def test_empty_holdout_is_rejected_even_without_a_row_minimum():
    no_min = dataclasses.replace(FRAUD, gate={k: v for k, v in FRAUD.gate.items() if k != "min_holdout_rows"})
    d = decide_promotion(no_min, "3", 0.9, None, None, 0)
    assert d.promote is False and checks(d)["holdout_size"] is False


@pytest.mark.parametrize("spec,key", [(FRAUD, "min_primary"), (SPEND, "max_primary")])
def test_missing_value_threshold_is_rejected_naming_the_key(spec, key):
    gate = {k: v for k, v in spec.gate.items() if k != key}
    broken = dataclasses.replace(spec, gate=gate)
    good_value = 0.9 if spec.higher_is_better else 10.0
    for champ in ((None, None), ("2", 0.5 if spec.higher_is_better else 50.0)):
        d = decide_promotion(broken, "3", good_value, *champ, ROWS)
        assert d.promote is False
        assert f"gate.{key}" in d.reason and spec.path.name in d.reason


def test_missing_min_delta_with_a_champion_is_rejected_naming_the_key():
    broken = dataclasses.replace(FRAUD, gate={k: v for k, v in FRAUD.gate.items() if k != "min_delta"})
    d = decide_promotion(broken, "3", 0.9, "2", 0.3, ROWS)
    assert d.promote is False and "gate.min_delta" in d.reason
    # without a champion, min_delta is not needed
    assert decide_promotion(broken, "3", 0.9, None, None, ROWS).promote is True


def test_unreadable_champion_is_rejected_with_the_error():
    d = decide_promotion(FRAUD, "3", 0.9, "2", None, ROWS, champion_error="model artifact missing")
    assert d.promote is False
    assert checks(d)["vs_champion"] is False
    assert "v2" in d.reason and "model artifact missing" in d.reason


def test_champion_with_undefined_metric_is_rejected():
    d = decide_promotion(FRAUD, "3", 0.9, "2", float("nan"), ROWS)
    assert d.promote is False and checks(d)["vs_champion"] is False


@pytest.mark.parametrize(
    "challenger,champion,promote",
    [
        (400.0, 450.0, True),  # lower MAE than the champion and under the 500 ceiling
        (460.0, 450.0, False),  # higher MAE than the champion
        (520.0, 600.0, False),  # beats the champion but over the ceiling
    ],
)
def test_lower_is_better_metric_direction(challenger, champion, promote):
    d = decide_promotion(SPEND, "5", challenger, "4", champion, ROWS)
    assert d.promote is promote
    assert d.metric == "mae"
    vs = next(c for c in d.checks if c.name == "vs_champion")
    assert vs.value == pytest.approx(champion - challenger)  # improvement = champion - challenger


def test_lower_is_better_value_threshold_without_champion():
    assert decide_promotion(SPEND, "1", 499.0, None, None, ROWS).promote is True
    d = decide_promotion(SPEND, "1", 501.0, None, None, ROWS)
    assert d.promote is False
    assert "501.0000" in d.reason and "<=" in d.reason and "500" in d.reason


def test_decision_serialises_to_json():
    d = decide_promotion(SPEND, "5", 400.0, "4", 450.0, ROWS)
    back = json.loads(json.dumps(d.to_dict()))
    assert back["promote"] is True and back["challenger_version"] == "5" and back["champion_version"] == "4"
    assert [c["name"] for c in back["checks"]] == [
        "holdout_size",
        "challenger_metric_defined",
        "value_threshold",
        "vs_champion",
    ]
    assert not math.isnan(back["challenger_value"])
