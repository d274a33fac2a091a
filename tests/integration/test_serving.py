"""`flywheel serve` for real: the command in its own process on a loopback port, against the shipped Feast repo on a
fresh registry and SQLite online store (feature tables materialized from small tables), and the fraud model
registered in an MLflow tracking store on SQLite (tests/serving_world.py). Requests go over HTTP, as a client's.

What a user notices: the score equals batch scoring's for the same row; every answer names its version; a
rollback under load switches versions with no failed request; bad input gets a 4xx that names the field; the
rows land where the monitor reads them, marked online; /metrics speaks Prometheus' text format.
(Redis is exercised by bench/serving.py, which serves from both stores.)
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import serving_world as sw
from demo_runs import without_runtime_settings

pytestmark = pytest.mark.integration

POLL_S = 0.5


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP/1.1 connection (what a real client holds)."""

    def __init__(self, port: int, key: str | None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.key = key

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        h = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {}),
             **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, path, body=data, headers=h)
        resp = self.conn.getresponse()
        text = resp.read()
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.status, json.loads(text)
        return resp.status, text.decode()

    def predict(self, rows: list[dict[str, Any]], **extra: Any) -> tuple[int, Any]:
        return self.call("POST", "/v1/models/fraud/predict", {"rows": rows, **extra})


def request_row(tx: dict[str, Any]) -> dict[str, Any]:
    """A batch row as a client sends it (JSON types; the event time as ISO 8601)."""
    row = {k: (v.isoformat() if hasattr(v, "isoformat") else v.item() if hasattr(v, "item") else v)
           for k, v in tx.items() if k != "is_fraud"}
    return row


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    saved = dict(os.environ)      # sw.build sets the world's stores in os.environ: every key is put back after
    try:
        for k in list(os.environ):
            if k.startswith(("FLYWHEEL_", "MLFLOW_TRACKING")):
                del os.environ[k]
        yield sw.build(tmp_path_factory.mktemp("serving-home"), "sqlite", versions=2)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def server(world):
    """`flywheel serve` as a subprocess (its own port; the key generated into the world's secrets)."""
    port = _free_port()
    env = without_runtime_settings(os.environ)
    env.update({**world.env, "FLYWHEEL_SERVING_PORT": str(port), "FLYWHEEL_SERVING_LOG_SECONDS": "0.5"})
    log = world.home / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flywheel.cli", "serve", "--model", "fraud",
                                 "--poll-seconds", str(POLL_S)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, _ = Client(port, None).call("GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"flywheel serve exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"flywheel serve did not answer: {log.read_text()[-3000:]}"
            time.sleep(0.2)
        key_file = world.home / "secrets" / "serving_api_key"
        yield {"port": port, "key": key_file.read_text().strip(), "key_file": key_file, "proc": proc, "log": log}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def client(server):
    return Client(server["port"], server["key"])


def test_not_ready_and_503_before_a_champion_then_ready_with_it(world, server, client):
    status, body = client.call("GET", "/readyz")
    assert status == 503 and body["ready"] is False
    assert body["models"]["fraud"]["champion"] is None and body["models"]["fraud"]["online_store"] == "ok"
    status, body = client.predict([request_row(world.batch.iloc[0].to_dict())])
    assert status == 503 and body["error"] == "no_champion" and "flywheel train fraud" in body["message"]

    probe = Client(server["port"], None).call("GET", "/readyz")     # a probe without the key: the status only
    assert probe == (503, {"ready": False})
    sw.set_champion(world, "1")
    deadline = time.monotonic() + 60
    while client.call("GET", "/readyz")[0] != 200:
        assert time.monotonic() < deadline, client.call("GET", "/readyz")
        time.sleep(0.2)
    status, body = client.call("GET", "/readyz")
    # this world serves one model's FeatureService; the others' views exist too: every spec is served
    assert body["models"]["fraud"] == {"champion": "1", "feature_service": "fraud_features", "online_store": "ok"}


def test_the_api_key_is_generated_private_and_required(world, server):
    assert stat.S_IMODE(server["key_file"].stat().st_mode) == 0o600
    assert len(server["key"]) >= 32
    row = [request_row(world.batch.iloc[0].to_dict())]
    for key, headers in ((None, {}), ("wrong-key", {}), (None, {"X-API-Key": "wrong"})):
        status, body = Client(server["port"], key).call("POST", "/v1/models/fraud/predict", {"rows": row},
                                                        headers=headers)
        assert status == 401 and body["error"] == "unauthorized", body
    assert Client(server["port"], None).call("GET", "/metrics")[0] == 401
    status, body = Client(server["port"], None).call("POST", "/v1/models/fraud/predict", {"rows": row},
                                                     headers={"X-API-Key": server["key"]})
    assert status == 200 and body["model_version"] == "1"
    assert server["key"] not in server["log"].read_text()


def test_online_score_equals_batch_score_for_the_same_rows(world, server, client):
    """Batch scoring of the validated interval (point-in-time join) and online requests for the same rows
    (online store): the same feature values, the same inputs, the same score, whatever the batch size."""
    from datetime import timedelta

    import pandas as pd

    from pipelines.score import score_interval

    result = score_interval(world.spec, world.validated, world.repo, sw.BATCH_START, sw.BATCH_END,
                            f"{sw.BATCH_START:%Y-%m-%d}", str(world.scores))
    assert result is not None and result.model_version == "1"
    batch = pd.read_parquet(result.path).set_index("transaction_id")
    # the events of the first day: the snapshot is within the views' TTL (3 days) for both reads
    first_day = world.batch[world.batch["event_ts"] < pd.Timestamp(sw.BATCH_START + timedelta(days=1))]
    rows = [request_row(r) for r in first_day.head(60).to_dict("records")]
    status, body = client.predict(rows)
    assert status == 200, body
    assert body["model_version"] == "1" and len(body["predictions"]) == len(rows)
    for row, answer in zip(rows, body["predictions"], strict=True):
        assert answer["row_id"] == row["transaction_id"]
        assert answer["score"] == pytest.approx(float(batch.loc[row["transaction_id"], "prediction"]), abs=1e-6)
        assert answer["missing_views"] == [] and answer["stale_views"] == []
        assert 0 < answer["feature_age_s"]["customer_stats"] <= 24 * 3600
        # the spec's `explain:`: the same top contributions as the batch log stores (pipelines/release/explain.py)
        first = answer["explanation"][0]
        assert len(answer["explanation"]) == world.spec.explain.top_k
        assert first["feature"] == batch.loc[row["transaction_id"], "contribution_1_feature"]
        assert first["contribution"] == pytest.approx(float(batch.loc[row["transaction_id"], "contribution_1_value"]),
                                                      abs=1e-4)
    one = client.predict(rows[:1])[1]["predictions"][0]          # one row alone: the same score
    assert one["score"] == body["predictions"][0]["score"]


def test_bad_input_is_a_4xx_that_names_the_field(world, server, client):
    good = request_row(world.batch.iloc[1].to_dict())
    status, body = client.call("POST", "/v1/models/nope/predict", {"rows": [good]})
    assert status == 404 and body["error"] == "unknown_model" and "fraud" in body["message"]

    status, body = client.predict([{k: v for k, v in good.items() if k != "amount"}])
    assert status == 422 and "`amount` is missing" in body["message"]
    assert body["detail"] == [{"row": 0, "field": "amount", "problem": "is missing; expected a number"}]

    status, body = client.predict([good, {**good, "amount": "12.5", "customer_id": "seven", "channel": 3}])
    assert status == 422
    assert {(d["row"], d["field"]) for d in body["detail"]} == {(1, "amount"), (1, "customer_id"), (1, "channel")}
    assert "row 1, field `customer_id` is 'seven'" in body["message"] and "2 more" in body["message"]

    status, body = client.predict([{**good, "event_ts": "yesterday"}])
    assert status == 422 and body["detail"][0]["field"] == "event_ts"
    status, body = client.predict([{**good, "country": None}])
    assert status == 422 and "never null" in body["message"]

    status, body = client.call("POST", "/v1/models/fraud/predict", raw=b"{not json")
    assert status == 400 and body["error"] == "invalid_json"
    status, body = client.call("POST", "/v1/models/fraud/predict", {"rows": []})
    assert status == 422
    status, body = client.call("POST", "/v1/models/fraud/predict", {"rows": [good] * 1001})
    assert status == 413 and "1000" in body["message"]
    status, body = client.call("GET", "/v1/models/fraud/predict")
    assert status == 405


def test_an_unknown_entity_is_a_404_unless_asked_to_score_it_as_batch_does(world, server, client):
    good = request_row(world.batch.iloc[2].to_dict())
    stranger = {**good, "customer_id": 10**9}
    status, body = client.predict([good, stranger])
    assert status == 404 and body["error"] == "unknown_entity"
    assert body["detail"] == [{"row": 1, "view": "customer_stats", "key": {"customer_id": 10**9}}]
    assert "customer_stats" in body["message"] and '"missing": "score"' in body["message"]

    status, body = client.predict([good, stranger], missing="score")
    assert status == 200, body
    known, unknown = body["predictions"]
    assert known["missing_views"] == [] and unknown["missing_views"] == ["customer_stats"]
    assert unknown["feature_age_s"]["customer_stats"] is None and 0 <= unknown["score"] <= 1
    status, body = client.predict([good], missing="maybe")
    assert status == 422 and "missing" in body["message"]


def test_a_rollback_under_load_switches_versions_with_no_failed_request(world, server):
    """Four clients send single-row requests without pause while the champion alias moves 1 -> 2 -> 1 (a
    promotion, then a rollback) with MlflowClient, as the gate and rollback__<model> move it."""
    rows = [request_row(r) for r in world.batch.head(50).to_dict("records")]
    stop = threading.Event()
    seen: list[tuple[float, str]] = []
    failures: list[Any] = []
    lock = threading.Lock()

    def load(n: int) -> None:
        c = Client(server["port"], server["key"])
        i = n
        while not stop.is_set():
            try:
                status, body = c.predict([rows[i % len(rows)]])
            except Exception as exc:  # noqa: BLE001 - a dropped connection is a failed request
                failures.append(repr(exc))
                c = Client(server["port"], server["key"])
                continue
            with lock:
                if status != 200:
                    failures.append((status, body))
                else:
                    seen.append((time.monotonic(), body["model_version"]))
            i += 1

    sw.set_champion(world, "1")
    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()

    def wait_for(version: str) -> float:
        t0 = time.monotonic()
        deadline = t0 + 60
        while True:
            with lock:
                if any(v == version and t > t0 for t, v in seen[-20:]):
                    return time.monotonic() - t0
            assert time.monotonic() < deadline and not failures, (version, failures[:3])
            time.sleep(0.05)

    try:
        time.sleep(1.0)
        sw.set_champion(world, "2")           # promotion
        up = wait_for("2")
        time.sleep(1.0)
        sw.set_champion(world, "1")           # rollback
        back = wait_for("1")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == []
    versions = [v for _, v in seen]
    assert set(versions) == {"1", "2"}
    # after the rollback was picked up, nothing answered with 2 again: versions only change at a switch
    switches = sum(1 for a, b in zip(versions, versions[1:], strict=False) if a != b)
    print(f"{len(seen)} requests, {switches} version changes seen; switch after {up:.2f}s and {back:.2f}s")
    assert versions[-1] == "1"


def test_online_rows_land_where_the_monitor_reads_them(world, server, client):
    import pandas as pd

    from pipelines.monitor.check import scored_rows

    marker = f"serving-log-{int(time.time())}"
    rows = [{**request_row(r), "transaction_id": f"{marker}-{i}"} for i, r in
            enumerate(world.batch.head(5).to_dict("records"))]
    status, body = client.predict(rows)
    assert status == 200
    online: pd.DataFrame = pd.DataFrame()
    deadline = time.monotonic() + 30
    end = datetime(2026, 3, 9, tzinfo=UTC)
    while time.monotonic() < deadline:      # the log is written off the request path, every 0.5 s here
        current = scored_rows(world.spec, str(world.scores), datetime(2026, 3, 2, tzinfo=UTC), end)
        online = current[current["transaction_id"].astype(str).str.startswith(marker)]
        if len(online) == len(rows):
            break
        time.sleep(0.2)
    assert len(online) == len(rows)
    assert set(online["source"]) == {"online"} and set(online["model_version"]) == {body["model_version"]}
    assert set(online["scored_for"]) == {"2026-03-02"}
    assert {"customer_id", "merchant_id", "amount", "cust_txn_count_7d", "merch_wallet_share_7d", "prediction",
            "event_ts"} <= set(online.columns)
    assert online.set_index("transaction_id")["prediction"].to_dict() == pytest.approx(
        {a["row_id"]: a["score"] for a in body["predictions"]})
    assert set(current["source"]) == {"batch", "online"}       # the batch log of the interval, and the online rows
    files = list((world.scores / "_online").glob("2026-03-02__*.parquet"))
    assert files, "online log files are keyed by the data interval of their rows"


def test_online_requests_show_up_in_the_next_drift_report_and_join_their_labels(world, server, client, tmp_path):
    """Requests answered online are judged by the monitor's next window like batch scores: the drift verdict counts
    them (JSON, index, the email, the models page), and once their transactions land in a validated batch with a
    label, the performance check scores them too."""
    import pandas as pd

    from pipelines.board.models import read_windows
    from pipelines.layout import Layout
    from pipelines.monitor.check import check_drift
    from pipelines.monitor.email import compose_drift_email
    from pipelines.monitor.reports import list_reports

    fresh = sw.transactions(40, seed=77)                   # events of the window's first day, never batch-scored
    status, body = client.predict([request_row(r) for r in fresh.to_dict("records")])
    assert status == 200, body
    logged = pd.DataFrame()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(logged) < len(fresh):     # written off the request path
        from pipelines.serving.log import read_online

        logged = read_online(str(world.scores), sw.BATCH_START, sw.BATCH_END)
        logged = logged[logged["transaction_id"].isin(fresh["transaction_id"])]
        time.sleep(0.2)
    assert len(logged) == len(fresh)
    fresh.to_parquet(world.validated / "2026-03-02-late.parquet", index=False)      # their labels land later

    layout = Layout(world.home)
    reports = Path(layout.reports(world.spec.name))
    result, decision, _ = check_drift(world.spec, str(world.scores), str(reports), sw.BATCH_END,
                                      f"{sw.BATCH_END:%Y-%m-%d}", validated_dir=str(world.validated),
                                      download_dir=tmp_path / "champion")
    # an online request for a transaction the batch log also scored is judged once, as its batch row
    all_online = read_online(str(world.scores), sw.BATCH_START, sw.BATCH_END)
    online_total = int((~all_online["transaction_id"].isin(world.batch["transaction_id"])).sum())
    assert result.rows_by_source["online"] == online_total >= len(fresh)
    assert result.rows_by_source["batch"] == len(world.batch)
    assert result.performance["labelled_rows_online"] == len(fresh)       # the only online rows with a label
    assert result.performance["labelled_rows"] == len(world.batch) + len(fresh)
    verdict = json.loads((reports / f"{sw.BATCH_END:%Y-%m-%d}.json").read_text())
    assert verdict["rows_by_source"] == result.rows_by_source
    assert list_reports(str(reports))[-1]["rows_online"] == online_total
    mail = compose_drift_email(world.spec, result, decision, {})
    assert f"{online_total:,} of the window's {len(world.batch) + online_total:,} from online requests" in mail.html
    windows, problems = read_windows(world.spec, layout)
    assert not problems and windows[-1].rows_by_source["online"] == online_total


def test_metrics_in_prometheus_text_format(server, client):
    from prometheus_client.parser import text_string_to_metric_families

    status, text = client.call("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = Counter()
    for s in families["flywheel_serving_requests"].samples:
        if s.name.endswith("_total") and s.labels["route"] == "predict":
            requests[s.labels["status"]] += s.value
    assert requests["200"] > 10 and requests["422"] >= 1 and requests["401"] >= 1 and requests["404"] >= 1
    quantiles = {s.labels["quantile"]: s.value for s in families["flywheel_serving_request_seconds"].samples
                 if "quantile" in s.labels and s.labels["model"] == "fraud"}
    assert set(quantiles) == {"0.5", "0.9", "0.95", "0.99"} and 0 < quantiles["0.5"] <= quantiles["0.99"]
    versions = {s.labels["model"]: s.value for s in families["flywheel_serving_model_version"].samples}
    assert versions["fraud"] == 1.0


def test_sigterm_writes_the_online_rows_still_queued(world, server, client):
    """`make down` stops the server with SIGTERM: the rows answered just before are in the log."""
    from pipelines.serving.log import read_online

    marker = f"at-stop-{int(time.time())}"
    rows = [{**request_row(r), "transaction_id": f"{marker}-{i}"} for i, r in
            enumerate(world.batch.head(30).to_dict("records"))]
    assert client.predict(rows)[0] == 200
    proc = server["proc"]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    logged = read_online(str(world.scores), datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC))
    assert logged["transaction_id"].astype(str).str.startswith(marker).sum() == len(rows)
    text = server["log"].read_text()
    assert "Traceback" not in text and "online logs written" in text
