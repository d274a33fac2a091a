"""pipelines.monitor: drift verdicts from Evidently, the retrain decision and the owners' email."""

from __future__ import annotations

import dataclasses
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import monitor
from pipelines.monitor import DriftResult, compose_drift_email, compute_drift, decide_retrain
from pipelines.spec import REPO_ROOT, load_spec

pytestmark = pytest.mark.unit

START = datetime(2026, 3, 2, tzinfo=UTC)
END = datetime(2026, 3, 9, tzinfo=UTC)
FEATURES = ["amount", "channel", "category", "country", "hour", "txn_count_7d", "merchant_risk"]
CATEGORICAL = ["channel", "category", "country"]
N = 2000


def transactions(n: int, seed: int, *, amount_factor: float = 1.0, channel_p=(0.6, 0.3, 0.1)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 0.8, n) * amount_factor
    channel = rng.choice(["pos", "web", "app"], n, p=list(channel_p))
    df = pd.DataFrame(
        {
            "amount": amount,
            "channel": channel,
            "category": rng.choice(["grocery", "travel", "fuel", "electronics", "dining"], n),
            "country": rng.choice(["US", "GB", "DE", "FR"], n, p=[0.55, 0.2, 0.15, 0.1]),
            "hour": rng.integers(0, 24, n),
            "txn_count_7d": rng.poisson(6, n),
            "merchant_risk": rng.beta(2, 30, n),
        }
    )
    # the model's score follows amount and channel, as a fraud score would
    logit = -4 + 0.01 * amount + np.where(channel == "web", 1.0, 0.0) + rng.normal(0, 0.3, n)
    df["prediction"] = 1 / (1 + np.exp(-logit))
    return df


@pytest.fixture(scope="module")
def spec():
    return load_spec(REPO_ROOT / "models" / "fraud.yaml")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("drift")


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return transactions(N, seed=1)


@pytest.fixture(scope="module")
def stable(spec, reference, out_dir) -> DriftResult:
    return compute_drift(
        reference, transactions(N, seed=2), FEATURES, CATEGORICAL, spec, out_dir, "stable", "3", START, END
    )


@pytest.fixture(scope="module")
def drifted(spec, reference, out_dir) -> DriftResult:
    current = transactions(N, seed=3, amount_factor=1.8, channel_p=(0.3, 0.5, 0.2))
    return compute_drift(reference, current, FEATURES, CATEGORICAL, spec, out_dir, "drifted", "3", START, END)


# ---------------------------------------------------------------------------- compute_drift


def test_same_distribution_has_no_drift(stable: DriftResult, spec) -> None:
    assert not stable.drift_detected
    assert stable.drifted_share < spec.drift.drift_share
    assert stable.rows_reference == N and stable.rows_current == N
    assert stable.interval_start == START.isoformat() and stable.interval_end == END.isoformat()
    # "prediction" is monitored too because both frames carry it
    assert list(stable.columns) == [*FEATURES, "prediction"]
    for col, v in stable.columns.items():
        assert v["threshold"] == spec.drift.threshold, col
        assert v["drifted"] == (v["score"] >= spec.drift.threshold), col
    assert stable.columns["amount"]["method"] == "Wasserstein distance (normed)"
    assert stable.columns["channel"]["method"] == "Jensen-Shannon distance"


def test_shifted_amount_and_channel_are_flagged(drifted: DriftResult, spec) -> None:
    assert drifted.drift_detected
    assert drifted.drifted_share >= spec.drift.drift_share
    flagged = {c for c, v in drifted.columns.items() if v["drifted"]}
    assert {"amount", "channel"} <= flagged
    assert {"category", "country", "hour"}.isdisjoint(flagged)
    assert drifted.columns["amount"]["score"] > drifted.columns["hour"]["score"]


def test_writes_report_and_verdict_named_by_key(drifted: DriftResult, out_dir: Path) -> None:
    assert drifted.report_html == str(out_dir / "drifted.html")
    html = Path(drifted.report_html).read_text()
    assert html.lstrip().lower().startswith("<html") or "<!doctype html" in html[:200].lower()
    assert "amount" in html
    verdict = json.loads(Path(drifted.verdict_json).read_text())
    assert verdict == json.loads(json.dumps(drifted.to_dict()))
    assert verdict["drift_detected"] is True


def test_rerun_with_same_key_overwrites_with_same_verdict(spec, reference, tmp_path: Path) -> None:
    small = dataclasses.replace(spec, drift=dataclasses.replace(spec.drift, reference_rows=500))
    current = transactions(300, seed=9)
    first = compute_drift(reference, current, FEATURES, CATEGORICAL, small, tmp_path, "k", None, START, END)
    first_json = Path(first.verdict_json).read_text()
    second = compute_drift(reference, current, FEATURES, CATEGORICAL, small, tmp_path, "k", None, START, END)
    assert first.rows_reference == 500  # sampled down, seeded
    assert second == first
    assert Path(second.verdict_json).read_text() == first_json
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.html", "k.json"]


def test_feature_missing_from_current_window_counts_as_drift(spec, reference, tmp_path: Path) -> None:
    current = transactions(500, seed=4)
    current["merchant_risk"] = np.nan
    result = compute_drift(reference, current, FEATURES, CATEGORICAL, spec, tmp_path, "k", None, START, END)
    assert result.columns["merchant_risk"]["drifted"]
    assert not result.columns["amount"]["drifted"]


@pytest.mark.parametrize("which", ["current", "reference"])
def test_empty_frame_is_a_clear_error(spec, reference, tmp_path: Path, which: str) -> None:
    frames = {"reference": reference, "current": transactions(100, seed=5)}
    frames[which] = frames[which].iloc[0:0]
    with pytest.raises(ValueError, match="no current rows" if which == "current" else "reference frame is empty"):
        compute_drift(
            frames["reference"], frames["current"], FEATURES, CATEGORICAL, spec, tmp_path, "k", None, START, END
        )


def test_missing_column_names_the_frame_and_column(spec, reference, tmp_path: Path) -> None:
    current = transactions(100, seed=5).drop(columns=["hour"])
    with pytest.raises(ValueError, match=r"current frame lacks drift column\(s\) \['hour'\]"):
        compute_drift(reference, current, FEATURES, CATEGORICAL, spec, tmp_path, "k", None, START, END)


# ---------------------------------------------------------------------------- decide_retrain


def verdict(spec, drifted_cols: list[str], total: int = 8, version: str | None = "3") -> DriftResult:
    cols = {f"c{i}": {"score": 0.01, "drifted": False, "method": "m", "threshold": 0.1} for i in range(total)}
    for name in drifted_cols:
        cols.pop(next(iter(cols)))
        cols[name] = {"score": 0.5, "drifted": True, "method": "m", "threshold": 0.1}
    share = len(drifted_cols) / total
    return DriftResult(
        "fraud",
        START.isoformat(),
        END.isoformat(),
        version,
        1000,
        1000,
        cols,
        share,
        share >= spec.drift.drift_share,
        "r.html",
        "r.json",
    )


def test_drift_without_champion_requests_retrain(spec) -> None:
    decision = decide_retrain(verdict(spec, ["amount", "channel", "prediction"], version=None), spec, None, END)
    assert decision.request
    assert decision.reason.startswith("drift in 3/8 columns (38% >= 30%)")
    assert "amount" in decision.reason and "no champion" in decision.reason


def test_drift_inside_cooldown_is_suppressed_with_reason(spec) -> None:
    decision = decide_retrain(verdict(spec, ["amount", "channel", "prediction"]), spec, END - timedelta(days=6), END)
    assert not decision.request
    assert decision.reason.startswith("suppressed: champion v3 trained 6 days ago, inside the 14-day cooldown")


def test_drift_after_cooldown_requests_retrain(spec) -> None:
    decision = decide_retrain(
        verdict(spec, ["amount", "channel", "prediction"]), spec, END - timedelta(days=spec.drift.cooldown_days), END
    )
    assert decision.request
    assert "14 days ago" in decision.reason


def test_no_drift_requests_nothing(spec) -> None:
    decision = decide_retrain(verdict(spec, ["amount"]), spec, None, END)
    assert not decision.request
    assert decision.reason.startswith("no drift: drift in 1/8 columns (12% < 30%)")


def test_naive_champion_timestamp_is_taken_as_utc(spec) -> None:
    naive = (END - timedelta(days=20)).replace(tzinfo=None)
    assert decide_retrain(verdict(spec, ["a", "b", "c"]), spec, naive, END).request


# ---------------------------------------------------------------------------- compose_drift_email


LINKS = {"Airflow run": "http://localhost:8080/dags/monitor__fraud/runs/r1", "MLflow model": "http://mlflow/m?a=1&b=2"}


def test_email_goes_to_owners_with_gzipped_report(spec, drifted: DriftResult) -> None:
    decision = decide_retrain(drifted, spec, None, END)
    email = compose_drift_email(spec, drifted, decision, LINKS)
    assert email.to == spec.owners
    n = sum(v["drifted"] for v in drifted.columns.values())
    assert email.subject == f"[Flywheel] fraud: drift detected in {n}/8 features (2026-03-02 → 2026-03-09)"
    (attachment,) = email.attachments
    assert attachment == drifted.report_html + ".gz"
    assert gzip.decompress(Path(attachment).read_bytes()) == Path(drifted.report_html).read_bytes()
    assert "Retrain requested" in email.html
    assert '<a href="http://mlflow/m?a=1&amp;b=2">MLflow model</a>' in email.html
    assert "amount" in email.html and "Wasserstein distance (normed)" in email.html


def test_email_without_drift_says_so(spec, stable: DriftResult) -> None:
    email = compose_drift_email(spec, stable, decide_retrain(stable, spec, None, END), {})
    assert email.subject.startswith("[Flywheel] fraud: no drift")
    assert "Nothing to do" in email.html


def test_email_attaches_verdict_when_report_too_large(spec, drifted: DriftResult, monkeypatch) -> None:
    monkeypatch.setattr(monitor, "MAX_ATTACHMENT_BYTES", 1000)
    decision = decide_retrain(drifted, spec, END - timedelta(days=2), END)
    email = compose_drift_email(spec, drifted, decision, LINKS)
    assert email.attachments == (drifted.verdict_json,)
    assert "too large to attach" in email.html
    assert "No retrain requested" in email.html and "suppressed" in email.html
