"""The scale-out layer: the demo scenario (short form) on the native scale-out topology.

`FLYWHEEL_TOPOLOGY=services` runs docker-compose.yaml's topology without Docker: Airflow metadata
on the local PostgreSQL, tasks executed by a real `airflow celery worker` over the local Redis,
MLflow on PostgreSQL with artifacts in S3 (moto's S3-API server on loopback, reached through boto3
and pyarrow), Feast with a PostgreSQL registry and the Redis online store, data areas in S3, and
the SMTP server. The same outcomes as the embedded test are asserted (tests/loop_outcomes.py),
then where each store really put its state, then a Celery worker killed in the middle of a task.

Skips only when PostgreSQL or Redis on 127.0.0.1 do not answer; with FLYWHEEL_REQUIRE_SERVICES=1
(.ci/run sets it, CI has both) that skip is a failure.
"""

from __future__ import annotations

import os
import signal
import time
from unittest import mock

import pytest
from demo_runs import POSTGRES, REDIS, played, services_run, services_unreachable
from loop_outcomes import OUTCOMES, airflow_api, mlflow_client

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = services_unreachable()
    if reason:
        if os.environ.get("FLYWHEEL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}; FLYWHEEL_REQUIRE_SERVICES=1 says they must run here")
        pytest.skip(reason)
    from flywheel import runtime

    run = services_run(tmp_path_factory.getbasetemp())
    try:
        with played(run) as d:
            d["prefix"], d["redis_db"] = run.extra["FLYWHEEL_DB_PREFIX"], int(run.extra["FLYWHEEL_REDIS_DB"])
            yield d
    finally:
        with mock.patch.dict(os.environ, {**run.extra, "FLYWHEEL_HOME": str(run.home)}):
            from pipelines.layout import Layout

            env = runtime.environment(Layout(run.home), runtime.Ports())
        runtime.reset_services(env)


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda f: f.__name__)
def test_demo_outcome_on_the_scaleout_topology(cluster, outcome):
    outcome(cluster)


def test_each_airflow_role_may_do_what_the_readme_says(cluster):
    """Scaled out, Airflow runs the FAB auth manager with one account per role (flywheel/access.py). The demo's
    on-call drill was run by `oncall` (the alias history names them) after `viewer` was refused the same trigger.
    Through the REST API and the Flywheel page: a viewer reads everything and triggers nothing; on-call may not
    trigger any other DAG nor touch Airflow's settings; only the admin manages users."""
    import json
    import urllib.error
    import urllib.request

    from flywheel.airflow_api import AirflowAPI
    from flywheel.runtime import account_password
    from pipelines.gate import alias_history
    from pipelines.layout import Layout
    from pipelines.spec import load_specs

    assert cluster["runtime_env"]["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
    assert "roles: the viewer account may not trigger rollback__fraud (Airflow answered 403)" in cluster["log"]
    spec = load_specs()["fraud"]
    drill = [e for e in alias_history(spec, mlflow_client(cluster)) if e["reason"].startswith("drill")]
    assert [(e["action"], e["actor"].split(" via ")[0]) for e in drill] == [("rollback", "oncall"),
                                                                             ("override-promote", "oncall")], drill

    base, lay = f"http://127.0.0.1:{cluster['ports'].airflow}", Layout(cluster["home"])
    tokens = {user: AirflowAPI(base, user, account_password(lay, user)).token()
              for user in ("viewer", "oncall", "admin")}

    def status(user: str | None, method: str, path: str, body: object = None, form: dict | None = None) -> int:
        headers = {"Authorization": f"Bearer {tokens[user]}"} if user else {}
        data = None
        if form is not None:
            data = "&".join(f"{k}={v}" for k, v in form.items()).encode()
            headers |= {"Content-Type": "application/x-www-form-urlencoded", "Origin": base}
        elif body is not None:
            data, headers = json.dumps(body).encode(), headers | {"Content-Type": "application/json"}
        request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        try:
            # 120 s: this runs while the embedded demo still plays on the same 2 cores (a 30 s read of /api/v2/dags
            # timed out under that load once); a refusal is fast, the status is what is asserted
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    trigger = {"logical_date": None, "conf": {"reason": "a role test"}}
    # a viewer reads the DAGs, the runs, the task logs' index and the Flywheel model page
    for path in ("/api/v2/dags", "/api/v2/dags/rollback__fraud/dagRuns", "/api/v2/assets",
                 "/flywheel/models/fraud"):
        assert status("viewer", "GET", path) == 200, path
    # ... and triggers nothing: not a rollback through the API, nor through the page's form, nor a training run
    assert status("viewer", "POST", "/api/v2/dags/rollback__fraud/dagRuns", trigger) == 403
    assert status("viewer", "POST", "/api/v2/dags/override__fraud/dagRuns", trigger) == 403
    assert status("viewer", "POST", "/flywheel/models/fraud/rollback", form={"reason": "a viewer"}) == 403
    assert status("viewer", "POST", "/api/v2/dags/train__fraud/dagRuns", trigger) == 403
    # on-call may trigger rollback/override (the drill above), but no other DAG, and may not change settings
    assert status("oncall", "POST", "/api/v2/dags/train__fraud/dagRuns", trigger) == 403
    assert status("oncall", "PATCH", "/api/v2/dags/train__fraud", {"is_paused": True}) == 403
    assert status("oncall", "POST", "/api/v2/variables", {"key": "k", "value": "v"}) == 403
    assert status("oncall", "GET", "/flywheel/models/fraud") == 200
    # only the admin manages users (FAB's API); nobody gets in without a login
    assert status("admin", "GET", "/auth/fab/v1/users") == 200
    assert status("oncall", "GET", "/auth/fab/v1/users") == 403
    assert status(None, "GET", "/api/v2/dags") == 401
    assert status(None, "GET", "/flywheel/models/fraud") == 401
    bad = urllib.request.Request(base + "/auth/token", data=json.dumps({"username": "viewer", "password": "guess"})
                                 .encode(), method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=120)
    assert err.value.code == 401
    # the refused triggers left no run behind
    admin = AirflowAPI(base, "admin", account_password(lay, "admin"))
    for dag_id in ("rollback__fraud", "override__fraud", "train__fraud"):
        runs = admin.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
        assert not [r for r in runs if (r.get("conf") or {}).get("reason") == "a role test"], dag_id


def test_a_viewer_in_the_browser_sees_the_model_page_with_its_actions_disabled(cluster):
    """As a person sees it: the viewer logs in through FAB's login page in a real Chromium, opens the Flywheel page
    of a model, and finds the Roll back and Override forms disabled, each saying why; an empty login is refused."""
    import shutil
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from flywheel.runtime import account_password
    from pipelines.layout import Layout

    chromium = os.environ.get("FLYWHEEL_CHROMIUM", "/usr/bin/chromium")
    assert shutil.which(chromium) or Path(chromium).is_file(), f"{chromium} missing: `make browser` installs it"
    base = f"http://127.0.0.1:{cluster['ports'].airflow}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/flywheel/models/fraud")          # no session: the login page, then back here
            page.wait_for_url(lambda u: "/auth/login" in u, timeout=60_000)
            page.fill("input[name=username]", "viewer")
            page.fill("input[name=password]", "not-the-password")
            page.keyboard.press("Enter")
            page.wait_for_load_state()
            assert "/auth/login" in page.url                    # a wrong password stays on the login page
            page.fill("input[name=username]", "viewer")
            page.fill("input[name=password]", account_password(Layout(cluster["home"]), "viewer"))
            page.keyboard.press("Enter")
            page.wait_for_url(lambda u: "/auth/login" not in u, timeout=60_000)
            page.goto(f"{base}/flywheel/models/fraud")
            page.locator("tr.role[data-role='champion'] td.version").wait_for(timeout=60_000)
            for form in ("rollback", "override"):
                assert page.locator(f"#{form} button[type=submit]").is_disabled(), form
                note = page.locator(f"#{form} .refused").inner_text()
                assert f"may not trigger {form}__fraud" in note, note
        finally:
            browser.close()


def _pg(cluster, db: str):
    import psycopg

    return psycopg.connect(f"{POSTGRES}/{cluster['prefix']}_{db}", autocommit=True)


def _s3_keys(cluster, what: str) -> list[str]:
    import boto3

    env = cluster["runtime_env"]
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    bucket = f"{cluster['prefix']}-{what}".replace("_", "-")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_airflow_metadata_is_in_postgres_and_tasks_ran_on_the_celery_worker(cluster):
    assert not (cluster["home"] / "airflow" / "airflow.db").exists()
    with _pg(cluster, "airflow") as conn:
        runs = conn.execute("SELECT count(*) FROM dag_run WHERE dag_id = 'train__fraud' AND state = 'success'")
        assert runs.fetchone()[0] >= 2
        done = conn.execute("SELECT count(*) FROM task_instance WHERE state = 'success'").fetchone()[0]
        # the Celery result backend (same database) holds one result per task the worker ran
        celery = conn.execute("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'").fetchone()[0]
        queues = {r[0] for r in conn.execute("SELECT DISTINCT queue FROM task_instance WHERE state = 'success'")}
    assert done > 50 and celery >= done, (done, celery)
    assert queues == {"default"}
    log = (cluster["home"] / "logs" / "worker.log").read_text(errors="replace")
    assert "celery@" in log and "ready" in log


def test_mlflow_runs_are_in_postgres_and_artifacts_in_s3(cluster):
    assert not (cluster["home"] / "mlflow" / "mlflow.db").exists()
    versions = mlflow_client(cluster).search_model_versions("name='flywheel-fraud'")
    with _pg(cluster, "mlflow") as conn:
        rows = conn.execute("SELECT count(*) FROM model_versions WHERE name = 'flywheel-fraud'").fetchone()[0]
    assert rows == len(versions) >= 3
    keys = _s3_keys(cluster, "mlflow")
    assert sum(k.endswith("/MLmodel") for k in keys) >= len(versions), keys[:20]
    assert all(v.source.startswith(("s3://", "models:/")) for v in versions)


def test_data_areas_are_in_s3_not_on_local_disk(cluster):
    keys = _s3_keys(cluster, "data")
    for area in ("data/landing/transactions/", "data/validated/transactions/", "data/quarantine/transactions/",
                 "data/blocked/transactions/", "features/customer_stats/", "features/merchant_stats/", "scores/fraud/",
                 "reports/fraud/"):
        assert any(k.startswith(area) for k in keys), f"nothing under s3://…/{area}"
    for area in ("data/landing", "data/validated", "data/quarantine", "scores", "reports"):
        assert not (cluster["home"] / area).exists(), f"{area} was written to local disk"


def test_feast_registry_in_postgres_and_online_store_in_redis(cluster):
    import redis

    with _pg(cluster, "feast") as conn:
        views = conn.execute("SELECT count(*) FROM feature_views").fetchone()[0]
    assert views >= 1
    host, port = REDIS.split(":")
    r = redis.Redis(host=host, port=int(port), db=cluster["redis_db"])
    feast_keys = [k for k in r.scan_iter(count=1000) if k.endswith(b"flywheel")]
    assert len(feast_keys) > 100   # one hash per customer, keyed by entity key + project name
    assert not (cluster["home"] / "feast" / "online.db").exists()


def _wait(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_worker_killed_mid_task_the_retry_completes_with_identical_outputs(cluster):
    """SIGKILL the Celery worker (and the task it runs) in the middle of validate_batch; start a new
    worker. Airflow notices the dead task, retries it, and the retry rewrites the same partition:
    the validated and quarantined outputs are identical to the first run's, with no duplicate rows."""
    from flywheel import runtime
    from pipelines import storage
    api, lay = airflow_api(cluster), cluster["layout"]
    quarantined = storage.list_files(lay.quarantine("transactions"), ".parquet")
    assert quarantined
    key = storage.stem(quarantined[0])
    run = next(r for r in api.dag_runs("ingest_validate__transactions")
               if r["state"] == "success" and r["dag_run_id"] == f"batch__{key}")
    outputs = [storage.join(lay.validated("transactions"), f"{key}.parquet"), quarantined[0]]
    before = [storage.read_parquet(u) for u in outputs]

    def ti() -> dict:
        return next(t for t in api.task_instances(run["dag_id"], run["dag_run_id"]) if t["task_id"] == "validate_batch")

    killed = False
    for _attempt in range(3):
        tries = ti()["try_number"]
        api.clear(run["dag_id"], run["dag_run_id"], ["validate_batch"], downstream=False,
                  note="test: worker killed mid-task")
        _wait(lambda t=tries: ti()["try_number"] > t and ti()["state"] in ("running", "success"), 120,
              "the cleared task to start")
        if ti()["state"] == "running":
            pid = runtime.running(lay)["worker"]
            os.killpg(pid, signal.SIGKILL)
            killed = True
            break
    assert killed, "validate_batch finished before the worker could be killed, three times"
    _wait(lambda: "worker" not in runtime.running(lay), 30, "the worker to die")
    killed_try = ti()["try_number"]
    runtime.restart_worker(lay, cluster["ports"], cluster["runtime_env"])
    final = _wait(lambda: ti() if ti()["state"] in ("success", "failed") else None, 300,
                  "the retry after the worker died")
    assert final["state"] == "success", final
    assert final["try_number"] > killed_try, "the killed try was not retried"
    after = [storage.read_parquet(u) for u in outputs]
    for b, a, uri in zip(before, after, outputs, strict=True):
        assert a["transaction_id"].is_unique, f"duplicate rows in {uri}"
        assert len(a) == len(b), uri
        assert a.sort_values("transaction_id").reset_index(drop=True).equals(
            b.sort_values("transaction_id").reset_index(drop=True)), f"{uri} changed"
