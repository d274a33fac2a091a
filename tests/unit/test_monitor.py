"""pipelines.monitor: drift verdicts from Evidently, the retrain decision and the owners' email."""

from __future__ import annotations

import dataclasses
import email as email_lib
import email.policy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import monitor, runbooks
from pipelines.mail import Email, Pages, build_message
from pipelines.monitor import (
    DriftResult,
    EmailDeliveryError,
    EmailPlan,
    RetrainDecision,
    compose_drift_email,
    compute_drift,
    decide_retrain,
    drift_scores,
    list_reports,
    performance_drift,
    plan_email,
    record_verdict,
    send_drift_report,
)
from pipelines.spec import REPO_ROOT, ColumnDriftRule, DriftSpec, SpecError, load_spec

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


PAGES = Pages(base_url="http://127.0.0.1:8080/", folders=(("/srv/flywheel/reports/fraud", "reports/fraud"),))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rendered(mail: Email) -> email_lib.message.EmailMessage:
    """The message as a mail client receives it: built, serialised, parsed back."""
    raw = build_message(mail, "flywheel@localhost").as_bytes()
    return email_lib.message_from_bytes(raw, policy=email.policy.default)


def inline_picture(msg) -> bytes:
    """The PNG the HTML shows: the image part whose Content-ID the HTML's <img src="cid:..."> names."""
    import io
    import re

    from PIL import Image

    html = msg.get_body(preferencelist=("html",)).get_content()
    cids = re.findall(r'<img src="cid:([^"]+)"', html)
    images = {p["Content-ID"].strip("<>"): p for p in msg.walk() if p.get_content_type() == "image/png"}
    assert cids and set(cids) <= set(images), (cids, list(images))
    part = images[cids[0]]
    assert part.get_content_disposition() == "inline"
    assert msg.get_body(preferencelist=("related",)) is not None  # the HTML and its picture travel together
    png = part.get_payload(decode=True)
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as img:
        img.verify()
        assert img.format == "PNG" and img.size[0] >= 400 and img.size[1] >= 100
    return png


def test_drift_email_shows_the_picture_links_the_pages_and_attaches_the_report(spec, drifted: DriftResult) -> None:
    decision = decide_retrain(drifted, spec, None, END)
    served = str(Path(drifted.report_html).parent)
    pages = Pages(base_url="http://127.0.0.1:8080/", folders=((served, "reports/fraud"),))
    mail = compose_drift_email(spec, drifted, decision, LINKS, pages=pages)
    assert mail.to == spec.owners
    n = sum(v["drifted"] for v in drifted.columns.values())
    assert mail.subject == f"[Flywheel] fraud: drift detected in {n}/8 features (2026-03-02 → 2026-03-09)"
    assert mail.attachments == (drifted.report_html,)          # as it is: no .gz
    msg = rendered(mail)
    assert {a.strip() for a in msg["To"].split(",")} == set(spec.owners)
    png = inline_picture(msg)
    assert png == Path(drifted.report_html).with_suffix(".png").read_bytes()   # kept next to the report
    html = msg.get_body(preferencelist=("html",)).get_content()
    assert 'href="http://127.0.0.1:8080/flywheel/models/fraud"' in html
    assert 'href="http://127.0.0.1:8080/flywheel/datasets/transactions"' in html
    assert 'href="http://127.0.0.1:8080/flywheel/files/reports/fraud/drifted.html"' in html
    assert '<a href="http://mlflow/m?a=1&amp;b=2">MLflow model</a>' in html
    assert "Retrain requested" in html and "amount" in html and "Wasserstein distance (normed)" in html
    text = msg.get_body(preferencelist=("plain",)).get_content()   # the text alternative says the same
    assert "Retrain requested" in text and "http://127.0.0.1:8080/flywheel/models/fraud" in text
    # what to do: the drift-alarm runbook's page, in both parts, titled as the runbook is
    runbook = runbooks.list_runbooks()["drift-alarm"]
    assert f'<a href="http://127.0.0.1:8080/flywheel/runbooks/drift-alarm">{runbook.heading}</a>' in html
    assert f"{runbook.heading} <http://127.0.0.1:8080/flywheel/runbooks/drift-alarm>" in text
    (attachment,) = msg.iter_attachments()
    assert attachment.get_filename() == "drifted.html" and attachment.get_content_type() == "text/html"
    body = attachment.get_payload(decode=True)
    assert body == Path(drifted.report_html).read_bytes()
    assert body.lstrip()[:200].lower().startswith((b"<!doctype html", b"<html"))


def test_a_report_outside_the_served_folder_is_not_linked(spec, drifted: DriftResult) -> None:
    mail = compose_drift_email(spec, drifted, decide_retrain(drifted, spec, None, END), {}, pages=PAGES)
    assert "/flywheel/files/" not in mail.html and "http://127.0.0.1:8080/flywheel/models/fraud" in mail.html
    bare = compose_drift_email(spec, drifted, decide_retrain(drifted, spec, None, END), {})  # no base URL
    assert "/flywheel/" not in bare.html and drifted.report_html in bare.html
    assert "docs/runbooks/drift-alarm.md" in bare.html   # no page to link: the runbook's file is named


def test_email_without_drift_says_so(spec, stable: DriftResult) -> None:
    email = compose_drift_email(spec, stable, decide_retrain(stable, spec, None, END), {})
    assert email.subject.startswith("[Flywheel] fraud: no drift")
    assert "Nothing to do" in email.html


def test_email_attaches_verdict_when_report_too_large(spec, drifted: DriftResult, monkeypatch) -> None:
    monkeypatch.setattr(monitor.email, "MAX_ATTACHMENT_BYTES", 1000)  # where compose_drift_email reads it
    decision = decide_retrain(drifted, spec, END - timedelta(days=2), END)
    email = compose_drift_email(spec, drifted, decision, LINKS)
    assert email.attachments == (drifted.verdict_json,)
    assert "too large to attach" in email.html
    assert "No retrain requested" in email.html and "suppressed" in email.html


# ---------------------------------------------------------------------------- A/A and injected shift
#
# One window of each kind from the demo's generator (scenarios/drift_windows.py), judged through Evidently with the
# default DriftSpec. The rates over many seeds (A/A alarms <= 1 in 15, the shift caught >= 14 in 15) are statistical
# repetitions: bench/drift_power.py measures them.


@pytest.fixture(scope="module")
def stable_period() -> pd.DataFrame:
    from scenarios.drift_windows import stable_period as period

    return period()


@pytest.fixture(scope="module")
def default_spec(spec):
    return dataclasses.replace(spec, drift=DriftSpec())


def test_default_settings_are_the_shipped_fraud_settings(spec) -> None:
    shipped, default = spec.drift, DriftSpec()
    assert (shipped.methods, shipped.threshold, shipped.drift_share, shipped.max_rows) == (
        default.methods,
        default.threshold,
        default.drift_share,
        default.max_rows,
    )


def test_a_window_of_the_same_world_does_not_alarm(stable_period, default_spec) -> None:
    from scenarios.drift_windows import CATEGORICAL, RAW, WINDOW_ROWS, split

    ref, cur = split(stable_period, 0)
    scores = drift_scores(ref, cur, RAW, CATEGORICAL, default_spec)
    assert scores.rows_reference == scores.rows_current == WINDOW_ROWS
    assert not scores.drift_detected, scores.columns
    assert not [c for c, v in scores.columns.items() if v["drifted"]], scores.columns


def test_an_injected_shift_alarms_on_the_shifted_columns_only(stable_period, default_spec) -> None:
    from scenarios.drift_windows import CATEGORICAL, RAW, shifted, split

    ref, _ = split(stable_period, 1000)
    scores = drift_scores(ref, shifted(stable_period, 2000), RAW, CATEGORICAL, default_spec)
    assert scores.drift_detected
    flagged = {c for c, v in scores.columns.items() if v["drifted"]}
    assert {"amount", "category"} <= flagged and not flagged & {"channel", "country"}, scores.columns


# ---------------------------------------------------------------------------- methods, thresholds, sampling


def test_methods_and_thresholds_come_from_the_spec(spec, reference, drifted, tmp_path: Path) -> None:
    custom = dataclasses.replace(
        spec,
        drift=dataclasses.replace(
            spec.drift,
            methods={"numeric": "ks", "categorical": "jensenshannon"},
            columns={
                "channel": ColumnDriftRule(method="psi", threshold=0.2),
                "country": ColumnDriftRule(threshold=0.5),
            },
        ),
    )
    current = transactions(N, seed=3, amount_factor=1.8, channel_p=(0.3, 0.5, 0.2))
    cols = drift_scores(reference, current, FEATURES, CATEGORICAL, custom).columns
    assert cols["amount"]["method_id"] == "ks" and cols["amount"]["kind"] == "p_value"
    assert cols["amount"]["threshold"] == 0.05  # Evidently's default for ks: p < 0.05 is drift
    assert cols["amount"]["drifted"] and cols["amount"]["score"] < 0.05
    assert cols["channel"]["method_id"] == "psi" and cols["channel"]["threshold"] == 0.2
    assert cols["country"]["method_id"] == "jensenshannon" and cols["country"]["threshold"] == 0.5
    assert cols["category"]["threshold"] == spec.drift.threshold
    # low-cardinality numerics are scored like categories, unless a column says otherwise
    low = transactions(N, seed=4).assign(hour=lambda d: d["hour"] % 3)
    assert drift_scores(low, low, ["hour"], [], spec).columns["hour"]["method_id"] == "jensenshannon"


def test_ranking_puts_the_smallest_p_value_first() -> None:
    cols = {
        "a": {"score": 0.01, "drifted": True, "kind": "p_value", "threshold": 0.05},
        "b": {"score": 0.2, "drifted": True, "kind": "distance", "threshold": 0.1},
        "c": {"score": 1e-9, "drifted": True, "kind": "p_value", "threshold": 0.05},
    }
    assert monitor._ranked(cols) == ["c", "a", "b"]


def test_large_windows_are_sampled_to_max_rows_seeded(spec, reference, tmp_path: Path) -> None:
    capped = dataclasses.replace(spec, drift=dataclasses.replace(spec.drift, max_rows=1500))
    current = transactions(5000, seed=8)
    first = compute_drift(reference, current, FEATURES, CATEGORICAL, capped, tmp_path, "k", None, START, END)
    assert (first.rows_reference, first.rows_current, first.rows_current_total) == (1500, 1500, 5000)
    again = compute_drift(reference, current, FEATURES, CATEGORICAL, capped, tmp_path, "k", None, START, END)
    assert again.columns == first.columns
    unsampled = compute_drift(
        reference, transactions(800, seed=8), FEATURES, CATEGORICAL, capped, tmp_path, "s", None, START, END
    )
    assert unsampled.rows_current == 800 and unsampled.rows_current_total is None


def write_fraud(tmp_path: Path, drift: dict) -> Path:
    import yaml

    raw = yaml.safe_load((REPO_ROOT / "models" / "fraud.yaml").read_text())
    raw["drift"] = drift
    path = tmp_path / "fraud.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_drift_section_loads_methods_overrides_hysteresis_and_performance(tmp_path: Path) -> None:
    d = load_spec(
        write_fraud(
            tmp_path,
            {
                "methods": {"numeric": "psi"},
                "columns": {"amount": {"method": "ks", "threshold": 0.01}},
                "hysteresis": {"alarms": 2, "windows": 3},
                "performance": {"max_drop": 0.1, "retrain": True},
                "max_rows": 0,
            },
        )
    ).drift
    assert d.methods == {"numeric": "psi", "categorical": "jensenshannon"}
    assert d.columns == {"amount": ColumnDriftRule("ks", 0.01)}
    assert (d.alarm_windows, d.of_windows, d.performance_max_drop, d.performance_retrain, d.max_rows) == (
        2,
        3,
        0.1,
        True,
        0,
    )
    assert d.method_for("amount", "numeric") == "ks" and d.method_for("hour", "numeric") == "psi"
    assert d.threshold_for("amount", "ks") == 0.01 and d.threshold_for("hour", "psi") == d.threshold


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ({"methods": {"numeric": "wasserstain"}}, r"drift.methods.numeric` 'wasserstain' is not an Evidently stat"),
        ({"methods": {"numeric": "chisquare"}}, r"'chisquare' does not apply to numeric columns"),
        ({"columns": {"amount": {"threshold": -1}}}, r"drift.columns.amount.threshold` must be > 0"),
        ({"hysteresis": {"alarms": 3, "windows": 2}}, r"alarms` \(3\) cannot exceed `windows` \(2\)"),
        ({"max_rows": 200}, r"drift.max_rows` must be 0 \(no sampling\) or >= 1000"),
        ({"cooldown": 3}, r"unknown key\(s\) \['drift.cooldown'\]"),
        ({"performance": {"retrain": "yes"}}, r"drift.performance.retrain` must be true or false"),
    ],
)
def test_bad_drift_settings_name_the_file_and_key(tmp_path: Path, drift: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        load_spec(write_fraud(tmp_path, drift))
    assert str(tmp_path / "fraud.yaml") in str(err.value)


# ---------------------------------------------------------------------------- retrain policy


def with_policy(spec, **changes):
    return dataclasses.replace(spec, drift=dataclasses.replace(spec.drift, **changes))


def entry(end: datetime, alarm: bool) -> dict:
    return {"key": (end - timedelta(days=7)).date().isoformat(), "interval_end": end.isoformat(), "alarm": alarm}


def test_hysteresis_holds_a_first_alarm_and_lets_the_second_through(spec) -> None:
    two_of_three = with_policy(spec, alarm_windows=2, of_windows=3)
    drifting = verdict(spec, ["amount", "channel", "prediction"])
    first = decide_retrain(
        drifting,
        two_of_three,
        None,
        END,
        history=[entry(END - timedelta(days=7), False), entry(END - timedelta(days=14), False)],
    )
    assert not first.request and first.rule == "hysteresis" and first.alarm
    assert first.reason.startswith(
        "suppressed (hysteresis): alarm in 1 of the last 3 window(s), a retrain needs 2 of 3"
    )
    second = decide_retrain(
        drifting,
        two_of_three,
        None,
        END,
        history=[entry(END - timedelta(days=7), True), entry(END - timedelta(days=14), False)],
    )
    assert second.request and second.rule == "requested"
    # an alarm three windows back is outside the last 3 windows: held again
    history = [entry(END - timedelta(days=d), d == 21) for d in (21, 14, 7)]
    old = decide_retrain(drifting, two_of_three, None, END, history=history)
    assert not old.request and old.rule == "hysteresis"


def test_hysteresis_ignores_this_and_later_windows_so_reruns_decide_the_same(spec) -> None:
    two_of_three = with_policy(spec, alarm_windows=2, of_windows=3)
    drifting = verdict(spec, ["amount", "channel", "prediction"])
    later = [entry(END, True), entry(END + timedelta(days=7), True)]  # this key's own earlier run, a later window
    assert decide_retrain(drifting, two_of_three, None, END, history=later).rule == "hysteresis"


def test_dedupe_holds_a_request_while_a_retrain_is_queued_or_running(spec) -> None:
    drifting = verdict(spec, ["amount", "channel", "prediction"])
    old_champion = END - timedelta(days=30)
    held = decide_retrain(drifting, spec, old_champion, END, retrain_in_flight=1)
    assert not held.request and held.rule == "dedupe"
    assert held.reason.startswith("suppressed (dedupe): a retrain is already queued or running (1 run of train__fraud)")
    assert decide_retrain(drifting, spec, old_champion, END, retrain_in_flight=0).request


def test_cooldown_holds_then_lets_through(spec) -> None:
    drifting = verdict(spec, ["amount", "channel", "prediction"])
    held = decide_retrain(drifting, spec, END - timedelta(days=13), END)
    assert not held.request and held.rule == "cooldown" and "(until 2026-03-10)" in held.reason
    assert decide_retrain(drifting, spec, END - timedelta(days=14), END).rule == "requested"


def test_no_alarm_wins_over_every_other_rule(spec) -> None:
    quiet = decide_retrain(verdict(spec, ["amount"]), spec, None, END, retrain_in_flight=2)
    assert (quiet.request, quiet.rule, quiet.alarm) == (False, "no_alarm", False)


def test_performance_drop_alarms_only_when_the_spec_says_so(spec) -> None:
    quiet_data = dataclasses.replace(verdict(spec, ["amount"]), performance={"status": "degraded", "detail": "AP -40%"})
    assert decide_retrain(quiet_data, spec, None, END).rule == "no_alarm"  # fraud.yaml: retrain: false
    decision = decide_retrain(quiet_data, with_policy(spec, performance_retrain=True), None, END)
    assert decision.request and "performance: AP -40%" in decision.reason


def test_a_performance_drop_is_emailed_even_when_it_requests_nothing(spec, recorded: DriftResult) -> None:
    quiet = dataclasses.replace(verdict(spec, ["amount"]), performance={"status": "ok"})
    assert not monitor.needs_email(quiet, decide_retrain(quiet, spec, None, END))
    dropped = dataclasses.replace(
        recorded, drift_detected=False, performance={**recorded.performance, "status": "degraded"}
    )
    decision = decide_retrain(dropped, spec, None, END)
    assert decision.rule == "no_alarm" and monitor.needs_email(dropped, decision)
    mail = compose_drift_email(spec, dropped, decision, LINKS)
    assert "performance drop" in mail.subject and "the performance drop is reported, not acted on" in mail.html


# ---------------------------------------------------------------------------- performance drift


def labelled(n: int, positives: int, seed: int = 0, *, skill: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.zeros(n)
    y[:positives] = 1
    return y, 1 / (1 + np.exp(-(rng.normal(0, 1, n) + skill * y - 3)))


def test_performance_compares_the_primary_metric_with_the_gate_value(spec) -> None:
    y, p = labelled(2000, 100)
    ok = performance_drift(spec, y, p, reference_value=0.6)
    assert ok["status"] == "ok" and ok["metric"] == "average_precision" and ok["labelled_rows"] == 2000
    assert 0.5 < ok["value"] < 1.0 and ok["positives"] == 100
    weak_y, weak_p = labelled(2000, 100, skill=0.5)
    bad = performance_drift(spec, weak_y, weak_p, reference_value=0.6)
    assert bad["status"] == "degraded" and bad["drop"] > spec.drift.performance_max_drop


def test_performance_says_better_or_worse_in_the_metrics_direction(spec) -> None:
    """It read 'average_precision 0.4515 ... vs 0.307 at the gate (-47% worse)' for a metric that had improved."""
    y, p = labelled(2000, 100)
    up = performance_drift(spec, y, p, reference_value=0.3)   # AP, higher is better: above the gate value
    assert up["status"] == "ok" and up["value"] > 0.3
    assert "% better" in up["detail"] and "worse;" not in up["detail"] and "-" not in up["detail"].split("(")[1]
    spend = load_spec(REPO_ROOT / "models" / "spend.yaml")     # MAE, lower is better
    rng = np.random.default_rng(1)
    target = rng.gamma(2, 200, 1000)
    fell = performance_drift(spend, target, target + rng.normal(0, 10, 1000), reference_value=100.0)
    assert fell["value"] < 100 and "% better" in fell["detail"], fell["detail"]
    rose = performance_drift(spend, target, target + rng.normal(0, 300, 1000), reference_value=100.0)
    assert "% worse" in rose["detail"] and rose["status"] == "degraded"


def test_performance_without_gate_value_or_labels_is_recorded_not_guessed(spec) -> None:
    y, p = labelled(2000, 100)
    unknown = performance_drift(spec, y, p, reference_value=None)
    assert unknown["status"] == "unknown" and unknown["value"] is not None and unknown["reference_value"] is None
    few = performance_drift(spec, *labelled(2000, 5), reference_value=0.6)
    assert few["status"] == "insufficient_labels" and "5 positives" in few["detail"]
    na = performance_drift(spec, None, None, None, unavailable="future_sum labels")
    assert na["status"] == "not_applicable" and na["detail"] == "future_sum labels"


def test_lower_is_better_metric_drop_is_an_increase(spec) -> None:
    spend = load_spec(REPO_ROOT / "models" / "spend.yaml")
    rng = np.random.default_rng(1)
    y = rng.gamma(2, 200, 1000)
    out = performance_drift(spend, y, y + rng.normal(0, 300, 1000), reference_value=100.0)
    assert out["metric"] == "mae" and out["status"] == "degraded" and out["drop"] > 1


# ---------------------------------------------------------------------------- delayed labels


def test_labels_are_joined_only_once_due(spec, tmp_path: Path) -> None:
    from pipelines.score import join_delayed_labels

    ts = pd.date_range(START, END, freq="6h", inclusive="left", tz="UTC")
    batch = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(ts))],
            "customer_id": 1,
            "event_ts": ts,
            "is_fraud": np.arange(len(ts)) % 2,
        }
    )
    (tmp_path / "validated").mkdir()
    batch.to_parquet(tmp_path / "validated" / "2026-03-02.parquet")
    scores = batch.drop(columns=["is_fraud"]).assign(prediction=0.5).iloc[::-1]
    out = join_delayed_labels(spec, scores, tmp_path / "validated", END)
    due = ts + pd.Timedelta(days=spec.label.delay_days) <= pd.Timestamp(END)
    # five of the seven days, plus the row exactly delay_days before the end (due at the end): 20 + 1
    assert len(out) == due.sum() == 21
    expected = batch.set_index("transaction_id")["is_fraud"]
    assert (out["label"].to_numpy() == expected.loc[out["transaction_id"]].to_numpy()).all()
    assert out["label"].dtype == "float64"
    assert join_delayed_labels(spec, scores, tmp_path / "validated", START).empty  # nothing due yet


def test_future_sum_labels_are_not_joined_and_say_why() -> None:
    from pipelines.score import join_delayed_labels, label_join_unsupported

    spend = load_spec(REPO_ROOT / "models" / "spend.yaml")
    assert "future_sum" in label_join_unsupported(spend)
    with pytest.raises(ValueError, match="future_sum"):
        join_delayed_labels(spend, pd.DataFrame(), Path("."), END)


# ---------------------------------------------------------------------------- verdicts, index, email delivery


@pytest.fixture
def recorded(spec, drifted: DriftResult, tmp_path: Path) -> DriftResult:
    """A copy of the drifted report in tmp_path, its full verdict and index line recorded."""
    import shutil

    shutil.copy(drifted.report_html, tmp_path / "2026-03-02.html")
    result = dataclasses.replace(
        drifted,
        report_html=str(tmp_path / "2026-03-02.html"),
        verdict_json=str(tmp_path / "2026-03-02.json"),
        performance={
            "status": "ok",
            "metric": "average_precision",
            "value": 0.41,
            "reference_value": 0.44,
            "labelled_rows": 9000,
            "detail": "AP fine",
        },
    )
    record_verdict(tmp_path, "2026-03-02", result, decide_retrain(result, spec, None, END), spec)
    return result


def test_verdict_holds_drift_methods_thresholds_performance_and_decision(recorded: DriftResult, spec) -> None:
    raw = json.loads(Path(recorded.verdict_json).read_text())
    assert raw["drifted_share"] == recorded.drifted_share and raw["drift_detected"] is True
    assert raw["columns"]["amount"]["method"] == "Wasserstein distance (normed)"
    assert raw["columns"]["amount"]["threshold"] == 0.1 and raw["policy"]["drift_share"] == 0.3
    assert raw["performance"]["status"] == "ok" and raw["decision"]["rule"] == "requested"
    assert raw["email"] is None and raw["email_failed"] is False
    assert DriftResult.from_dict(raw) == recorded


def test_index_lists_reports_once_per_key_oldest_first(recorded: DriftResult, spec, tmp_path: Path) -> None:
    earlier = dataclasses.replace(
        recorded,
        interval_start="2026-02-23T00:00:00+00:00",
        interval_end=START.isoformat(),
        verdict_json=str(tmp_path / "2026-02-23.json"),
    )
    record_verdict(tmp_path, "2026-02-23", earlier, RetrainDecision(False, "no drift", "no_alarm"), spec)
    record_verdict(tmp_path, "2026-03-02", recorded, decide_retrain(recorded, spec, None, END), spec)  # a re-run
    reports = list_reports(tmp_path)
    assert [r["key"] for r in reports] == ["2026-02-23", "2026-03-02"]
    assert reports[1]["request"] is True and reports[1]["alarm"] is True and reports[1]["performance"] == "ok"
    assert reports[1]["verdict_json"] == recorded.verdict_json and reports[0]["rule"] == "no_alarm"
    assert list_reports(tmp_path / "nowhere") == []


def test_email_send_is_retried_then_recorded(recorded: DriftResult, spec) -> None:
    calls, waits = [], []

    def flaky(mail):
        calls.append((list(mail.to), mail.subject, list(mail.attachments)))
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "Connection refused")

    status = send_drift_report(
        spec, recorded.verdict_json, LINKS, flaky, attempts=3, retry_delay_s=2, sleep=waits.append
    )
    assert status["status"] == "sent" and status["attempts"] == 3 and waits == [2, 4]
    assert calls[-1][0] == list(spec.owners) and calls[-1][2] == [recorded.report_html]
    raw = json.loads(Path(recorded.verdict_json).read_text())
    assert raw["email"]["status"] == "sent" and raw["email_failed"] is False
    assert list_reports(Path(recorded.verdict_json).parent)[0]["email"] == "sent"


def test_email_failure_raises_until_the_final_try_then_is_recorded(recorded: DriftResult, spec) -> None:
    def down(*_):
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(EmailDeliveryError, match="not delivered after 2 attempt"):
        send_drift_report(spec, recorded.verdict_json, LINKS, down, final_try=False, attempts=2, sleep=lambda _: None)
    assert json.loads(Path(recorded.verdict_json).read_text())["email_failed"] is True
    status = send_drift_report(
        spec, recorded.verdict_json, LINKS, down, final_try=True, attempts=2, sleep=lambda _: None
    )
    assert status["status"] == "failed" and "Connection refused" in status["error"]
    assert Path(recorded.report_html).exists()
    assert list_reports(Path(recorded.verdict_json).parent)[0]["email"] == "failed"


def test_email_says_what_happens_next_and_shows_performance(recorded: DriftResult, spec) -> None:
    held = RetrainDecision(False, "suppressed (hysteresis): alarm in 1 of the last 2 window(s)", "hysteresis", True)
    body = compose_drift_email(with_policy(spec, alarm_windows=2, of_windows=3), recorded, held, LINKS).html
    assert "No retrain requested yet</b> (hysteresis): a retrain needs an alarm in 2 of 3" in body
    assert "<h3>Performance</h3>" in body and "0.410" in body and "0.440" in body
    dedupe = RetrainDecision(False, "suppressed (dedupe): ...", "dedupe", True)
    assert "already queued or running" in compose_drift_email(spec, recorded, dedupe, LINKS).html


def test_a_drift_window_reads_every_interval_it_overlaps_whatever_the_cadence(tmp_path):
    """Monthly batches, a 30-day window: the window ending on 1 June starts on 2 May and must read the May
    scores (keyed 2016-05-01); by interval start alone it read nothing and the monitor failed every 31-day month."""
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    from pipelines.score import read_scores

    for month, n in (("2016-04-01", 3), ("2016-05-01", 5)):
        pd.DataFrame({"prediction": [0.5] * n}).to_parquet(tmp_path / f"{month}.parquet")
    end = datetime(2016, 6, 1, tzinfo=UTC)
    assert len(read_scores(tmp_path, end - timedelta(days=30), end, "0 0 1 * *")) == 5
    assert len(read_scores(tmp_path, end - timedelta(days=61), end, "0 0 1 * *")) == 8
    may_end = datetime(2016, 5, 1, tzinfo=UTC)   # a 30-day April: the window is exactly the interval
    assert len(read_scores(tmp_path, may_end - timedelta(days=30), may_end, "0 0 1 * *")) == 3


# ---------------------------------------------------------------------------- alarm episodes: who is emailed when


def window(day: int, *, alarm: bool, plan: EmailPlan | None = None) -> dict:
    """An index entry of the weekly window ending `day` days after END, as check_drift records it."""
    end = END + timedelta(days=day)
    return {"key": (end - timedelta(days=7)).date().isoformat(), "interval_end": end.isoformat(),
            "alarm": alarm, "drift_detected": alarm, "performance": "ok",
            "episode": plan.episode if plan else None, "emailed": plan.send if plan else None}


def play(alarms: list[bool], *, mode: str = "episode", cooldown_days: int = 14) -> list[EmailPlan]:
    """Weekly windows alarming or not, each planned with the index the earlier ones left behind."""
    history: list[dict] = []
    plans = []
    for week, alarm in enumerate(alarms):
        probe = window(7 * week, alarm=alarm)
        plan = plan_email(probe["key"], probe["interval_end"], alarm, history, mode=mode, cooldown_days=cooldown_days)
        history.append(window(7 * week, alarm=alarm, plan=plan))
        plans.append(plan)
    return plans


def test_a_first_alarm_starts_an_episode_and_is_emailed() -> None:
    quiet, first = play([False, True])
    assert (quiet.send, quiet.kind, quiet.episode) == (False, "quiet", None)
    assert (first.send, first.kind, first.episode) == (True, "first", "2026-03-09")
    (alone,) = play([True])                                         # no window before it: also a start
    assert alone.send and alone.kind == "first" and alone.episode == "2026-03-02"


def test_a_persisting_alarm_is_emailed_once_per_episode_inside_the_cooldown() -> None:
    plans = play([True, True, True, True, True], cooldown_days=28)
    assert [p.send for p in plans] == [True, False, False, False, True]
    assert {p.episode for p in plans} == {"2026-03-02"}              # one episode, every window recorded in it
    assert [p.kind for p in plans] == ["first", "persisting", "persisting", "persisting", "reminder"]
    assert "next email is due from 2026-04-06" in plans[1].reason   # 28 days after the first window's end


def test_an_alarm_that_cleared_and_came_back_is_a_new_episode_and_a_new_email() -> None:
    plans = play([True, True, False, True, True])
    assert [p.send for p in plans] == [True, False, False, True, False]
    assert [p.episode for p in plans] == ["2026-03-02", "2026-03-02", None, "2026-03-23", "2026-03-23"]


def test_digest_mode_sends_the_windows_not_emailed_as_one_digest() -> None:
    plans = play([True, True, True, False, True], mode="digest", cooldown_days=28)
    assert [p.kind for p in plans] == ["first", "persisting", "persisting", "digest", "first"]
    assert plans[3].send and plans[3].episode == "2026-03-02" and plans[3].windows == ("2026-03-09", "2026-03-16")
    assert "cleared" in plans[3].reason
    later = play([True, True, True, True, True], mode="digest", cooldown_days=28)
    assert [p.kind for p in later] == ["first", "persisting", "persisting", "persisting", "digest"]
    assert later[4].windows == ("2026-03-09", "2026-03-16", "2026-03-23", "2026-03-30")
    assert play([True, False], mode="digest")[1].kind == "quiet"    # nothing left unsent: no digest


def test_a_cooldown_of_zero_emails_every_alarming_window_and_reruns_plan_the_same() -> None:
    assert [p.send for p in play([True, True, True], cooldown_days=0)] == [True, True, True]
    history = [window(0, alarm=True, plan=EmailPlan(True, "first", "2026-03-02", "")),
               window(7, alarm=True, plan=EmailPlan(False, "persisting", "2026-03-02", ""))]
    rerun = plan_email("2026-03-02", END.isoformat(), True, history)   # the first window again: later ones ignored
    assert (rerun.send, rerun.kind, rerun.episode) == (True, "first", "2026-03-02")


def test_an_index_without_episodes_starts_one_and_a_performance_drop_alerts() -> None:
    legacy = [{"key": "2026-02-23", "interval_end": START.isoformat(), "alarm": True, "drift_detected": True}]
    assert plan_email("2026-03-02", END.isoformat(), True, legacy).kind == "first"
    dropped = [{"key": "2026-02-23", "interval_end": START.isoformat(), "alarm": False, "drift_detected": False,
                "performance": "degraded", "episode": "2026-02-23", "emailed": True}]
    assert plan_email("2026-03-02", END.isoformat(), True, dropped).kind == "persisting"


def test_the_email_plan_never_changes_the_retrain_decision(spec, recorded: DriftResult, tmp_path: Path) -> None:
    """Separate concerns: a persisting alarm inside its episode still requests its retrain, and is recorded."""
    drifting = verdict(spec, ["amount", "channel", "prediction"])
    old_champion = END - timedelta(days=30)
    history = [{**entry(END - timedelta(days=7), True), "episode": "2026-02-23", "emailed": True}]
    decision = decide_retrain(drifting, spec, old_champion, END, history=history)
    plan = plan_email("2026-03-02", END.isoformat(), True, history, cooldown_days=spec.drift.cooldown_days)
    assert decision.request and decision.rule == "requested"
    assert not plan.send and plan.episode == "2026-02-23"
    assert decide_retrain(drifting, spec, old_champion, END) == decision     # the same without any history
    record_verdict(tmp_path, "2026-03-02", recorded, decision, spec, plan)
    (line,) = list_reports(tmp_path)
    assert (line["episode"], line["emailed"], line["email_kind"]) == ("2026-02-23", False, "persisting")
    raw = json.loads(Path(recorded.verdict_json).read_text())
    assert raw["emailed"] is False and raw["episode"] == "2026-02-23" and raw["decision"]["request"] is True


def test_alerts_mode_is_declared_in_the_spec_and_checked(tmp_path: Path) -> None:
    assert load_spec(REPO_ROOT / "models" / "fraud.yaml").drift.alerts == "episode"
    assert load_spec(write_fraud(tmp_path, {"alerts": "digest"})).drift.alerts == "digest"
    with pytest.raises(SpecError, match=r"`drift.alerts` must be one of episode, digest, got 'weekly'") as err:
        load_spec(write_fraud(tmp_path, {"alerts": "weekly"}))
    assert str(tmp_path / "fraud.yaml") in str(err.value)


def test_a_digest_email_lists_the_windows_it_covers(spec, recorded: DriftResult) -> None:
    plan = EmailPlan(True, "digest", "2026-02-16", "episode 2026-02-16 still alarms 14 days after its last email",
                     ("2026-02-23", "2026-03-02"))
    digest = [{"key": "2026-02-23", "interval_end": START.isoformat(), "drifted_share": 0.5,
               "drifted_columns": ["amount"], "performance": "ok", "rule": "cooldown"},
              {"key": "2026-03-02", "interval_end": END.isoformat(), "drifted_share": 0.625,
               "drifted_columns": ["amount", "channel"], "performance": "ok", "rule": "requested"}]
    mail = compose_drift_email(spec, recorded, decide_retrain(recorded, spec, None, END), LINKS, plan=plan,
                               digest=digest)
    assert "digest of 2 window(s) of the episode since 2026-02-16" in mail.subject
    assert "<td>2026-02-23</td>" in mail.html and "<td>cooldown</td>" in mail.html
    inline_picture(rendered(mail))


# ---------------------------------------------------------------------------- the outbox keeps the whole email


def test_a_queued_drift_email_keeps_its_picture_and_its_report(spec, recorded: DriftResult, tmp_path: Path) -> None:
    from functools import partial

    from pipelines import outbox

    box = str(tmp_path / "outbox")
    delivered: list[Email] = []

    def down(mail):
        raise ConnectionRefusedError(111, "Connection refused")

    queue = partial(outbox.send_or_queue, down, box, now=END)
    status = send_drift_report(spec, recorded.verdict_json, LINKS, down, attempts=1, queue=queue, pages=PAGES)
    assert status["status"] == "pending"
    report = outbox.deliver_pending(box, delivered.append, now=END + timedelta(minutes=5))
    assert report.sent == [status["outbox_id"]]
    (mail,) = delivered
    msg = rendered(mail)
    inline_picture(msg)
    (attachment,) = msg.iter_attachments()
    assert attachment.get_content_type() == "text/html"
    assert attachment.get_payload(decode=True) == Path(recorded.report_html).read_bytes()
    assert mail.html.count("cid:") == 1 and "Retrain requested" in mail.html


def test_the_emails_file_links_are_served_by_the_flywheel_page(spec, drifted: DriftResult, tmp_path: Path,
                                                               monkeypatch) -> None:
    """The report link of a drift email, built as the DAG builds it, resolves to that report through the
    Flywheel page's own file resolver (pipelines/board/files.py, what /flywheel/files/... serves)."""
    import shutil
    from urllib.parse import unquote

    from flywheel.dagkit import flywheel_pages
    from pipelines.board.files import FileRef, resolve_file
    from pipelines.layout import Layout
    from pipelines.spec import load_datasets, load_specs

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.delenv("FLYWHEEL_DATA_URI", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080/")
    lay = Layout.from_env()
    Path(lay.reports("fraud")).mkdir(parents=True)
    report = shutil.copy(drifted.report_html, Path(lay.reports("fraud")) / "2026-03-02.html")
    result = dataclasses.replace(drifted, report_html=str(report),
                                 verdict_json=str(Path(lay.reports("fraud")) / "2026-03-02.json"))
    mail = compose_drift_email(spec, result, decide_retrain(result, spec, None, END), {}, pages=flywheel_pages())
    (url,) = set(re.findall(r'href="http://127\.0\.0\.1:8080/flywheel/files/([^"]+)"', mail.html))
    area, owner, path = unquote(url).split("/", 2)
    served = resolve_file(lay, FileRef(area, owner, path), load_specs(), load_datasets())
    assert served is not None and Path(served) == Path(report).resolve()
