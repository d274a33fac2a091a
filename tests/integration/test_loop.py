"""The whole loop through the real scheduler, on the short scenario, in a private FLYWHEEL_HOME.

One demo run (real Airflow API server, scheduler, DAG processor, triggerer; real MLflow server;
real Feast stores; a real SMTP server on loopback) on free ports, so it passes while a demo runs.
Every test below asserts on what a user would see: MLflow's registry, the quarantine and blocked
outputs, the mails received, and the Airflow runs.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.runtime import processes_of

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from flywheel.runtime import Ports

    home = tmp_path_factory.mktemp("flywheel-home")
    ports = Ports.free()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING"))}
    env.update({"FLYWHEEL_HOME": str(home), "FLYWHEEL_AIRFLOW_PORT": str(ports.airflow),
                "FLYWHEEL_MLFLOW_PORT": str(ports.mlflow), "FLYWHEEL_SMTP_PORT": str(ports.smtp),
                "FLYWHEEL_WORKER_LOG_PORT": str(ports.worker_logs),
                "FLYWHEEL_TRIGGER_LOG_PORT": str(ports.trigger_logs)})
    cmd = [sys.executable, "-m", "flywheel.cli", "demo", "--short"]
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1500)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"demo failed:\n{log[-6000:]}"
        summary = json.loads((home / "demo-summary.json").read_text())
        yield {"home": home, "ports": ports, "summary": summary, "log": proc.stdout, "env": env}
    finally:
        subprocess.run([sys.executable, "-m", "flywheel.cli", "down"], env=env, cwd=REPO, timeout=120)
        deadline = time.monotonic() + 30   # children that were SIGKILLed may take a moment to vanish
        while (left := processes_of(home)) and time.monotonic() < deadline:
            time.sleep(1)
        assert not left, f"processes left running after `flywheel down`: {left}"


def _mlflow(demo):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"http://127.0.0.1:{demo['ports'].mlflow}")


def _mails(home: Path):
    out = []
    for p in sorted((home / "mail" / "new").glob("*")):
        out.append(email.message_from_bytes(p.read_bytes(), policy=email.policy.default))
    return out


def test_timeline_tells_the_story(demo):
    log = demo["log"]
    assert "BLOCKED" in log and "quarantined" in log and "DRIFT" in log
    assert "PROMOTED" in log and "REJECTED" in log


def test_champion_exists_and_gate_recorded_decisions(demo):
    client = _mlflow(demo)
    model = client.get_registered_model("flywheel-fraud")
    assert "champion" in model.aliases
    versions = {mv.version: mv for mv in client.search_model_versions("name='flywheel-fraud'")}
    decisions = {v: mv.tags.get("flywheel.gate.decision") for v, mv in versions.items()}
    assert list(decisions.values()).count("promoted") >= 2, decisions   # bootstrap + drift retrain
    assert "rejected" in decisions.values(), decisions                  # the cheaper experiment
    champ = model.aliases["champion"]
    assert decisions[champ] == "promoted"
    assert "previous-champion" in model.aliases
    rejected = [mv for mv in versions.values() if mv.tags.get("flywheel.gate.decision") == "rejected"]
    assert all("improvement" in mv.tags["flywheel.gate.reason"] for mv in rejected)
    # the decision is also an artifact on the run, and the run carries data hashes and code version
    run = client.get_run(rejected[0].run_id)
    assert len(run.data.tags["flywheel.train_sha256"]) == 64
    assert run.data.tags["flywheel.code_version"]
    assert any(a.path == "gate" for a in client.list_artifacts(rejected[0].run_id))


def test_retrain_was_requested_by_drift_without_a_human(demo):
    from flywheel.airflow_api import AirflowAPI
    from flywheel.runtime import admin_password
    from pipelines.layout import Layout

    api = AirflowAPI(f"http://127.0.0.1:{demo['ports'].airflow}", "admin", admin_password(Layout(demo["home"])))
    runs = api.dag_runs("train__fraud")
    assert any(r["run_type"] == "asset_triggered" and r["state"] == "success" for r in runs), runs
    drift = demo["summary"]["models"]["fraud"]["drift_events"]
    assert drift, "no drift event recorded"


def test_blocked_batch_and_quarantined_rows(demo):
    home, s = demo["home"], demo["summary"]["models"]["fraud"]
    assert s["batches_blocked"] == 1
    assert s["rows_quarantined"] == 12      # the bad-rows batch: 4 negative, 4 unknown channel, 4 null customer
    import pandas as pd

    q = pd.concat(pd.read_parquet(p) for p in (home / "data" / "quarantine" / "fraud").glob("*.parquet"))
    reasons = " ".join(q["_quarantine_reasons"])
    assert "amount" in reasons and "channel" in reasons and "customer_id" in reasons
    # the blocked file is kept byte for byte as evidence; the producer's fixed re-landing then passed
    blocked_key = "2026-02-02"
    kept = list((home / "data" / "blocked" / "fraud" / blocked_key).glob("*.parquet"))
    assert len(kept) == 1
    original = pd.read_parquet(kept[0])
    assert "amt" in original.columns and "amount" not in original.columns
    relanded = pd.read_parquet(home / "data" / "landing" / "transactions" / f"transactions_{blocked_key}.parquet")
    clean = pd.read_parquet(home / "data" / "validated" / "fraud" / f"{blocked_key}.parquet")
    assert len(clean) == len(relanded)


def test_owners_got_the_drift_report_and_the_block_notice(demo):
    from pipelines.spec import load_specs

    owners = set(load_specs()["fraud"].owners)
    mails = _mails(demo["home"])
    drift = [m for m in mails if "fraud" in m["Subject"] and "drift" in m["Subject"].lower()]
    assert drift, [m["Subject"] for m in mails]
    m = drift[0]
    assert {a.strip() for a in m["To"].split(",")} == owners
    atts = list(m.iter_attachments())
    assert atts and atts[0].get_filename().endswith(".html.gz")
    html = gzip.decompress(atts[0].get_payload(decode=True)).decode()
    assert "<html" in html.lower() and len(html) > 10_000
    blocked = [m for m in mails if "BLOCKED" in m["Subject"] and "fraud" in m["Subject"]]
    assert blocked and "amt" in blocked[0].get_body(preferencelist=("html",)).get_content()


def test_second_model_ran_through_the_same_loop(demo):
    s = demo["summary"]["models"]["spend"]
    assert s["batches_blocked"] == 1 and s["batches_ingested"] >= 6
    assert s["model_versions"], "the regression model was never trained"


def test_ui_answers_and_the_api_needs_a_login(demo):
    import urllib.error
    import urllib.request

    base = f"http://127.0.0.1:{demo['ports'].airflow}"
    with urllib.request.urlopen(base + "/", timeout=10) as r:
        assert r.status == 200 and "airflow" in r.read().decode().lower()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/api/v2/dags", timeout=10)
    assert err.value.code in (401, 403)
    with urllib.request.urlopen(f"http://127.0.0.1:{demo['ports'].mlflow}/health", timeout=10) as r:
        assert r.status == 200
