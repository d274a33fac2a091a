"""The online endpoint's parts on tiny inputs: request rows become exactly the inputs batch scoring builds, bad
rows are refused naming the field, the online log lands in the monitor's intervals, the metrics parse as
Prometheus text, and the API key is generated private. (The endpoint over HTTP: tests/integration/test_serving.py.)"""

from __future__ import annotations

import dataclasses
import stat
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from pipelines import model as m
from pipelines.serving.encode import MatrixEncoder
from pipelines.serving.schema import RequestError, RequestSchema
from pipelines.spec import REPO_ROOT, ColumnRule, load_specs
from pipelines.training import LABEL

pytestmark = pytest.mark.unit

BASE = load_specs(REPO_ROOT / "models")["fraud"]
# the fraud contract plus a free-text column (categories from training only) and a timestamp row feature
SPEC = dataclasses.replace(
    BASE, dataset=dataclasses.replace(BASE.dataset, columns=(*BASE.dataset.columns, ColumnRule("title", "string"),
                                                             ColumnRule("opened_at", "timestamp"))),
    row_features=("amount", "channel", "country", "title", "opened_at"))
FEATURES = ["amount", "channel", "country", "title", "opened_at", "cust_txn_count_7d"]


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    title = rng.choice([f"t{i}" for i in range(30)], n)
    opened = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 400, n), unit="D")
    label = (np.isin(title, ["t1", "t2", "t3"]) | (rng.random(n) < 0.1)).astype(float)
    return pd.DataFrame({"amount": rng.gamma(2, 50, n), "channel": rng.choice(["pos", "online", "wallet"], n),
                         "country": rng.choice(["US", "GB", "DE"], n), "title": title, "opened_at": opened,
                         "cust_txn_count_7d": rng.poisson(4, n).astype(float), LABEL: label})


@pytest.fixture(scope="module")
def model():
    train = frame(3000, 1)
    cats = m.fit_categories(SPEC, train, FEATURES)
    booster = m.fit(SPEC, train, FEATURES, {"num_boost_round": 20, "max_depth": 3}, cats)
    return booster, cats


def request_rows(df: pd.DataFrame) -> list[dict]:
    """The rows as JSON would carry them: Python scalars, times as ISO text, missing values as None."""
    out = []
    for rec in df.drop(columns=[LABEL]).to_dict("records"):
        out.append({k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else
                        v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in rec.items()})
    return out


def test_request_rows_score_exactly_as_batch_scoring_scores_them(model):
    booster, cats = model
    df = frame(400, 2)
    df.loc[::7, "title"] = "never-seen"              # unseen at training: missing, as to_matrix_frame has it
    df.loc[::11, "channel"] = "teleport"             # outside the allowed set too
    df.loc[::13, "cust_txn_count_7d"] = np.nan       # a missing online feature
    df.loc[::17, "title"] = None
    df.loc[::19, "opened_at"] = pd.NaT
    batch = m.predict(booster, m.to_matrix_frame(df, SPEC, FEATURES, cats))
    matrix, unseen = MatrixEncoder.of(SPEC, FEATURES, cats).matrix(request_rows(df))
    assert np.array_equal(booster.inplace_predict(matrix), batch)
    assert unseen == {"title": int(((df["title"] == "never-seen")).sum()), "channel": 37}
    # a version from before categories.json: the contract's allowed sets, as to_matrix_frame falls back to
    legacy = m.to_matrix_frame(df, SPEC, FEATURES, None)
    matrix, _ = MatrixEncoder.of(SPEC, FEATURES, None).matrix(request_rows(df))
    assert np.array_equal(booster.inplace_predict(matrix), m.predict(booster, legacy))


def test_a_request_row_is_checked_field_by_field_against_the_contract():
    schema = RequestSchema.of(BASE, ["customer_id", "merchant_id"])
    assert schema.required == ["customer_id", "merchant_id", "amount", "channel", "category", "country"]
    good = {"customer_id": 1, "merchant_id": 2, "amount": 10, "channel": "pos", "category": "fuel", "country": "US"}
    assert schema.rows({"row": good}) == [good]
    assert schema.rows({"rows": [good, {**good, "customer_id": 3.0, "event_ts": "2026-03-02T10:00:00Z"}]})
    cases = {
        "customer_id": (None, "is null"), "amount": ("10", "expected a number"), "channel": (1, "expected a string"),
        "merchant_id": (True, "expected an integer"), "event_ts": ("soon", "ISO 8601"),
    }
    for field, (value, words) in cases.items():
        with pytest.raises(RequestError) as err:
            schema.rows({"rows": [good, {**good, field: value}]})
        assert err.value.status == 422 and err.value.body["detail"][0]["field"] == field
        assert words in err.value.body["message"] and "row 1" in err.value.body["message"]
    with pytest.raises(RequestError) as err:
        schema.rows({"rows": [{"amount": 1}]})
    assert [d["field"] for d in err.value.body["detail"]] == ["customer_id", "merchant_id", "channel", "category",
                                                              "country"]
    for body in ([good], {"rows": []}, {"rows": "x"}, {"data": [good]}):
        with pytest.raises(RequestError) as err:
            schema.rows(body)
        assert err.value.status == 422 and "rows" in err.value.body["message"]


def test_the_online_log_lands_in_the_intervals_the_monitor_reads(tmp_path):
    from pipelines.monitor.check import scored_rows
    from pipelines.serving.log import OnlineLog, read_online

    scores = tmp_path / "scores" / "fraud"
    pd.DataFrame({"transaction_id": ["a", "b"], "prediction": [0.1, 0.2], "model_version": "3"}).to_parquet(
        scores.mkdir(parents=True) or scores / "2026-03-02.parquet")
    online = OnlineLog(BASE, str(scores), flush_rows=10_000, flush_s=3600)
    base = {"customer_id": 1, "merchant_id": 2, "amount": 5.0, "channel": "pos", "category": "fuel",
            "country": "US", "prediction": 0.5, "model_version": "3", "source": "online", "served_at": 1.8e9}
    online.append([{**base, "transaction_id": "a", "event_ts": "2026-03-03T10:00:00+00:00"},   # batch has it too
                   {**base, "transaction_id": "o1", "event_ts": "2026-03-08T23:59:00+00:00"},
                   {**base, "transaction_id": "o2", "event_ts": "2026-03-09T00:00:00+00:00"}])  # next week
    assert online.pending == 3 and not (scores / "_online").exists()     # nothing written on the request path
    online.close()
    assert online.written == 3 and online.pending == 0
    keys = sorted(p.name.split("__")[0] for p in (scores / "_online").iterdir())
    assert keys == ["2026-03-02", "2026-03-09"]        # one file per weekly interval of the dataset's cadence
    week = read_online(str(scores), datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC),
                       BASE.dataset.cadence)
    assert sorted(week["transaction_id"]) == ["a", "o1"] and set(week["scored_for"]) == {"2026-03-02"}
    assert str(week["event_ts"].dtype) == "datetime64[ns, UTC]"
    current = scored_rows(BASE, str(scores), datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC))
    assert sorted(zip(current["transaction_id"], current["source"], strict=True)) == [
        ("a", "batch"), ("b", "batch"), ("o1", "online")]    # an event the batch log holds is counted once


def test_the_online_log_keeps_rows_when_the_store_fails_and_drops_the_oldest_when_full(tmp_path):
    from pipelines.serving.log import OnlineLog

    blocker = tmp_path / "scores"
    blocker.write_text("a file where the folder should be")
    online = OnlineLog(BASE, str(blocker / "fraud"), max_pending=4)
    rows = [{"transaction_id": str(i), "event_ts": "2026-03-03T00:00:00Z", "served_at": 1.8e9} for i in range(6)]
    online.append(rows)
    assert online.pending == 4 and online.dropped == 2
    assert online.flush() == 0 and online.pending == 4 and online.last_error


def test_metrics_are_prometheus_text():
    from prometheus_client.parser import text_string_to_metric_families

    from pipelines.serving.metrics import Metrics

    metrics = Metrics()
    for i in range(100):
        metrics.observe("predict", "fraud", 200, 0.001 * (i + 1), rows=1)
    metrics.observe("predict", "fraud", 422, 0.0005)
    metrics.observe("other", "", 401, 0.0001)
    text = metrics.render(lambda: [("flywheel_serving_model_version", "gauge", "v", {"model": "fraud"}, 7.0)])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("flywheel_serving_requests_total", (("model", "fraud"), ("route", "predict"),
                                                        ("status", "200")))] == 100
    assert samples[("flywheel_serving_errors_total", (("code_class", "4xx"), ("model", "fraud")))] == 1
    assert samples[("flywheel_serving_request_seconds", (("model", "fraud"), ("quantile", "0.5")))] == \
        pytest.approx(0.0505, abs=1e-3)
    assert samples[("flywheel_serving_request_seconds_count", (("model", "fraud"),))] == 101
    assert samples[("flywheel_serving_model_version", (("model", "fraud"),))] == 7


def test_the_api_key_is_generated_once_private_or_read_from_the_environment(tmp_path, monkeypatch):
    from flywheel import runtime
    from pipelines.layout import Layout

    monkeypatch.delenv("FLYWHEEL_SERVING_API_KEY", raising=False)
    lay = Layout(tmp_path / "home")
    key = runtime.serving_api_key(lay)
    path = lay.secrets() / "serving_api_key"
    assert len(key) >= 32 and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert runtime.serving_api_key(lay) == key                    # once per install
    monkeypatch.setenv("FLYWHEEL_SERVING_API_KEY", "from-compose")
    assert runtime.serving_api_key(lay) == "from-compose"


def test_the_app_refuses_to_start_without_a_key():
    from pipelines.serving.app import ServingApp

    with pytest.raises(ValueError, match="API key"):
        ServingApp({}, "")
