"""The whole loop through the real scheduler, on the short scenario, in a private FLYWHEEL_HOME.

One demo run of both stories (card transactions, then real MovieLens ratings) on the embedded default
(real Airflow API server, scheduler, DAG processor, triggerer; real MLflow server; real Feast stores; a
real SMTP server on loopback) on free ports, so it passes while a demo runs (the `demo` fixture of
tests/integration/conftest.py, shared with the other integration tests that look at a played loop). The cards outcomes
(tests/loop_outcomes.py) are the ones the scale-out layer (tests/services/test_scaleout.py) asserts on the
native scale-out topology.
"""

from __future__ import annotations

import pytest
from loop_outcomes import OUTCOMES, RATINGS_OUTCOMES

pytestmark = pytest.mark.integration
MODELS = ("fraud", "spend", "movie_rating")


@pytest.mark.parametrize("outcome", OUTCOMES + RATINGS_OUTCOMES, ids=lambda f: f.__name__)
def test_demo_outcome(demo, outcome):
    outcome(demo)


def test_embedded_topology_keeps_everything_in_flywheel_home(demo):
    home = demo["home"]
    assert (home / "airflow" / "airflow.db").is_file()       # Airflow metadata on SQLite
    assert (home / "mlflow" / "mlflow.db").is_file()         # MLflow backend store on SQLite
    assert any((home / "mlflow" / "artifacts").rglob("MLmodel"))
    assert any((home / "data" / "quarantine" / "transactions").glob("*.parquet"))


def test_every_listening_socket_is_on_loopback(demo):
    """What the README promises: the embedded default listens on 127.0.0.1 only (Airflow's log servers,
    which bind every interface, are not started)."""
    from flywheel.runtime import listening_sockets

    sockets = listening_sockets(demo["home"])
    ports = demo["ports"]
    assert {ports.airflow, ports.mlflow, ports.smtp} <= {port for _, port, _ in sockets}, sockets
    outside = [s for s in sockets if s[0] not in ("127.0.0.1", "::1")]
    assert not outside, f"listening outside loopback: {outside}"


def _score_files(demo) -> dict[str, bytes]:
    from pipelines import storage

    lay = demo["layout"]
    return {p: storage.read_bytes(p) for m in MODELS for p in storage.list_files(lay.scores(m), ".parquet")}


def test_resume_of_a_finished_demo_replays_nothing(demo):
    """`flywheel demo --resume` after the demo: services restart, nothing is landed, trained or drilled again,
    so no alias moves and no score file changes (it used to retrain, re-drill and re-score old weeks)."""
    import subprocess
    import sys

    from loop_outcomes import REPO, mlflow_client

    client = mlflow_client(demo)
    aliases = {m: dict(client.get_registered_model(f"flywheel-{m}").aliases) for m in MODELS}
    versions = {m: len(client.search_model_versions(f"name='flywheel-{m}'")) for m in MODELS}
    scores = _score_files(demo)
    proc = subprocess.run([sys.executable, "-m", "flywheel.cli", "demo", "--short", "--resume"], env=demo["env"],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    # cards: the stable history (one landing of 4 weeks) + 4 weeks; ratings: the backfill + 2 months
    assert proc.stdout.count("already played (--resume)") == 5 + 1 + 2, proc.stdout[-3000:]
    assert "engineer triggers" not in proc.stdout and "on-call drill" not in proc.stdout
    assert {m: dict(client.get_registered_model(f"flywheel-{m}").aliases) for m in MODELS} == aliases
    assert {m: len(client.search_model_versions(f"name='flywheel-{m}'")) for m in MODELS} == versions
    assert _score_files(demo) == scores


def test_a_scheduler_killed_mid_task_is_recovered_by_up(demo):
    """SIGKILL the scheduler while a task runs: its LocalExecutor workers are orphaned (they used to hold the
    log server's port and make `make up` fail). `flywheel up` stops them, starts the scheduler again, and
    Airflow retries the interrupted task: the run completes, with nothing validated twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from loop_outcomes import REPO, airflow_api

    from flywheel import runtime
    from pipelines import storage
    from pipelines.layout import Layout

    api, lay = airflow_api(demo), Layout(demo["home"])
    dag_id, run_id = "ingest_validate__transactions", "batch__2026-02-09"   # the bad-rows week
    before = storage.read_parquet(storage.join(demo["layout"].validated("transactions"), "2026-02-09.parquet"))
    api.clear(dag_id, run_id, ["validate_batch"], note="crash drill", downstream=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ti = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/validate_batch")
        if ti["state"] == "running":
            break
        time.sleep(0.2)
    assert ti["state"] == "running", ti
    scheduler = runtime.running(lay)["scheduler"]
    os.kill(scheduler, signal.SIGKILL)
    time.sleep(2)
    assert "scheduler" not in runtime.running(lay)
    up = subprocess.run([sys.executable, "-m", "flywheel.cli", "up"], env=demo["env"], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
    assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
    assert "scheduler" in runtime.running(lay) and runtime.leftovers(lay) == {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert run["state"] == "success", run
    after = storage.read_parquet(storage.join(demo["layout"].validated("transactions"), "2026-02-09.parquet"))
    assert after.equals(before)
