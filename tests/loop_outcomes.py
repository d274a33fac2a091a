"""What a user sees after the demo scenario (short form), whatever the topology.

tests/integration/test_loop.py runs the scenario on the embedded default and
tests/services/test_scaleout.py on the native scale-out topology; both assert these same outcomes
on MLflow's registry, the quarantine and blocked outputs (read through the data store: a folder or
S3), the mails received, and the Airflow runs.
"""

from __future__ import annotations

import email
import email.policy
import io
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def mlflow_client(demo: dict[str, Any]) -> Any:
    """A client of the demo's MLflow logged in as the tasks are, as Flywheel's service account: MLflow reads its
    client variables on every request, so they go into os.environ (which `played` restores after the run)."""
    import os

    from mlflow import MlflowClient

    from flywheel import mlflow_auth

    os.environ.update({k: demo["runtime_env"][k] for k in (mlflow_auth.USERNAME_VAR, mlflow_auth.PASSWORD_VAR)})
    return MlflowClient(tracking_uri=f"http://127.0.0.1:{demo['ports'].mlflow}")


def airflow_api(demo: dict[str, Any]) -> Any:
    from flywheel.airflow_api import AirflowAPI
    from flywheel.runtime import admin_password
    from pipelines.layout import Layout

    return AirflowAPI(f"http://127.0.0.1:{demo['ports'].airflow}", "admin", admin_password(Layout(demo["home"])))


def mails(home: Path) -> list[Any]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted((home / "mail" / "new").glob("*"))]


def timeline_tells_the_story(demo: dict[str, Any]) -> None:
    log = demo["log"]
    assert "BLOCKED" in log and "quarantined" in log and "DRIFT" in log
    assert "PROMOTED" in log and "REJECTED" in log


def champion_exists_and_gate_recorded_decisions(demo: dict[str, Any]) -> None:
    client = mlflow_client(demo)
    model = client.get_registered_model("flywheel-fraud")
    assert "champion" in model.aliases
    versions = {mv.version: mv for mv in client.search_model_versions("name='flywheel-fraud'")}
    decisions = {v: mv.tags.get("flywheel.gate.decision") for v, mv in versions.items()}
    assert list(decisions.values()).count("promoted") >= 2, decisions   # bootstrap + drift retrain
    assert "rejected" in decisions.values(), decisions                  # the cheaper experiment
    champ = model.aliases["champion"]
    assert decisions[champ] == "promoted"
    rejected = [mv for mv in versions.values() if mv.tags.get("flywheel.gate.decision") == "rejected"]
    assert all("improvement" in mv.tags["flywheel.gate.reason"] for mv in rejected)
    # the decision is also an artifact on the run, and the run carries data hashes and code version
    run = client.get_run(rejected[0].run_id)
    assert len(run.data.tags["flywheel.train_sha256"]) == 64
    assert run.data.tags["flywheel.code_version"]
    assert any(a.path == "gate" for a in client.list_artifacts(rejected[0].run_id))


def the_guardrail_rolled_back_the_holiday_model(demo: dict[str, Any]) -> None:
    """The holiday week's retrain was promoted by the gate; once the world reverted, the delayed labels showed it worse
    than the model it replaced on the same rows: the monitor rolled it back (audited, actor guardrail), marked it,
    emailed the owners the evidence and the runbook, and the summary lists it."""
    from pipelines import tags
    from pipelines.gate import alias_history
    from pipelines.spec import load_specs

    spec = load_specs()["fraud"]
    client = mlflow_client(demo)
    [acted] = demo["summary"]["models"]["fraud"]["guardrail"]
    assert acted["action"] == "rollback" and acted["moved"]["rolled_back"] == acted["champion"], acted
    bad, good = acted["champion"], acted["previous"]
    iv = acted["improvement"]
    assert iv["high"] < -spec.guardrail.tolerance and acted["rows"] >= spec.guardrail.min_rows, acted
    assert client.get_model_version("flywheel-fraud", bad).tags["flywheel.gate.decision"] == "promoted"
    assert client.get_model_version("flywheel-fraud", bad).tags[tags.GUARDRAIL_ROLLED_BACK]
    assert str(client.get_registered_model("flywheel-fraud").aliases["champion"]) != bad
    moves = [e for e in alias_history(spec, client) if e["action"] == "rollback" and e["actor"].startswith("guardrail")]
    assert len(moves) == 1 and moves[0]["from_version"] == bad and moves[0]["to_version"] == good, moves
    assert "GUARDRAIL ROLLBACK" in demo["log"]
    [mail] = [m for m in mails(demo["home"]) if "guardrail rolled back" in m["Subject"]]
    assert {a.strip() for a in mail["To"].split(",")} == set(spec.owners)
    body = mail.get_body(preferencelist=("html",)).get_content()
    assert f"{iv['high']:+.4f}" in body
    assert f'href="http://127.0.0.1:{demo["ports"].airflow}/flywheel/runbooks/automatic-rollback"' in body, body


def retrain_was_requested_by_drift_without_a_human(demo: dict[str, Any]) -> None:
    runs = airflow_api(demo).dag_runs("train__fraud")
    assert any(r["run_type"] == "asset_triggered" and r["state"] == "success" for r in runs), runs
    assert demo["summary"]["models"]["fraud"]["drift_events"], "no drift event recorded"


def blocked_batch_and_quarantined_rows(demo: dict[str, Any]) -> None:
    from pipelines import storage

    lay, s = demo["layout"], demo["summary"]["datasets"]["transactions"]
    # one gate per dataset: the batch is validated once, whichever models read it
    assert s["read_by"] == ["fraud", "spend"]
    assert s["batches_blocked"] == 1
    assert s["rows_quarantined"] == 12      # the bad-rows batch: 4 negative, 4 unknown channel, 4 null customer
    import pandas as pd

    files = storage.list_files(lay.quarantine("transactions"), ".parquet")
    q = pd.concat(storage.read_parquet(p) for p in files)
    reasons = " ".join(q["_quarantine_reasons"])
    assert "amount" in reasons and "channel" in reasons and "customer_id" in reasons
    # the blocked file is kept byte for byte as evidence; the producer's fixed re-landing then passed
    blocked_key = "2026-02-02"
    kept = storage.list_files(storage.join(lay.blocked("transactions"), blocked_key), ".parquet")
    assert len(kept) == 1
    original = storage.read_parquet(kept[0])
    assert "amt" in original.columns and "amount" not in original.columns
    relanded = storage.read_parquet(storage.join(lay.landing("transactions"), f"transactions_{blocked_key}.parquet"))
    clean = storage.read_parquet(storage.join(lay.validated("transactions"), f"{blocked_key}.parquet"))
    assert len(clean) == len(relanded)


def owners_got_the_drift_report_and_the_block_notice(demo: dict[str, Any]) -> None:
    from pipelines.spec import load_datasets, load_specs

    specs = load_specs()
    owners = set(specs["fraud"].owners)
    received = mails(demo["home"])
    drift = [m for m in received if "fraud" in m["Subject"] and "drift" in m["Subject"].lower()]
    assert drift, [m["Subject"] for m in received]
    m = drift[0]
    assert {a.strip() for a in m["To"].split(",")} == owners
    base = f"http://127.0.0.1:{demo['ports'].airflow}/flywheel"
    body = opens_with_its_picture(m)
    assert f'href="{base}/models/fraud"' in body and f'href="{base}/datasets/transactions"' in body
    assert re.search(rf'href="{re.escape(base)}/files/reports/fraud/[^"]+\.html"', body), body[:3000]
    atts = list(m.iter_attachments())
    assert atts and atts[0].get_filename().endswith(".html") and atts[0].get_content_type() == "text/html"
    html = atts[0].get_payload(decode=True).decode()
    assert "<html" in html[:500].lower() and len(html) > 10_000
    # one blocked batch, one email: to the dataset's owners and every reader's owners, each once
    blocked = [m for m in received if "BLOCKED" in m["Subject"]]
    assert len(blocked) == 1, [m["Subject"] for m in received]
    to = [a.strip() for a in blocked[0]["To"].split(",")]
    want = {*load_datasets()["transactions"].owners, *specs["fraud"].owners, *specs["spend"].owners}
    assert sorted(to) == sorted(want)
    assert "amt" in blocked[0].get_body(preferencelist=("html",)).get_content()
    body = opens_with_its_picture(blocked[0])
    base = f"http://127.0.0.1:{demo['ports'].airflow}/flywheel"
    assert f'href="{base}/datasets/transactions"' in body and f'href="{base}/models/fraud"' in body
    assert re.search(rf'href="{re.escape(base)}/files/validation/transactions/[^"]+\.json"', body), body[:3000]


def opens_with_its_picture(m: Any) -> str:
    """The HTML shows a PNG that travels inline with it (Content-ID); returns the HTML."""
    from PIL import Image

    body = m.get_body(preferencelist=("html",)).get_content()
    cids = re.findall(r'<img src="cid:([^"]+)"', body)
    images = {p["Content-ID"].strip("<>"): p for p in m.walk() if p.get_content_type() == "image/png"}
    assert cids and set(cids) <= set(images), (cids, list(images))
    png = images[cids[0]].get_payload(decode=True)
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
    return body


def a_persisting_alarm_is_emailed_once_per_episode(demo: dict[str, Any]) -> None:
    """The shift lasts more than one window: every window is in the reports index (the page shows each), its
    alarm episode recorded, but the owners got one drift email per episode, not one per window."""
    from pipelines.monitor import entry_alerts, list_reports

    index = list_reports(demo["layout"].reports("fraud"))
    alerting = [h for h in index if entry_alerts(h)]
    assert alerting and all(h["episode"] for h in alerting), index
    for episode in {h["episode"] for h in alerting}:
        windows = [h for h in index if h.get("episode") == episode]
        assert windows[0]["key"] == episode and windows[0]["emailed"] and windows[0]["email_kind"] == "first"
        assert all(h["email_kind"] in ("persisting", "reminder") for h in windows[1:]), windows
    persisting = [h for h in alerting if not h["emailed"]]
    assert persisting, f"no alarm persisted over two windows in this demo: {index}"
    received = [m for m in mails(demo["home"]) if m["Subject"].startswith("[Flywheel] fraud:")
                and "guardrail" not in m["Subject"]]   # the monitor's drift emails (the guardrail has its own)
    assert len(received) == sum(1 for h in index if h["emailed"]) < len(alerting), [m["Subject"] for m in received]


def second_model_ran_through_the_same_loop(demo: dict[str, Any]) -> None:
    s = demo["summary"]["models"]["spend"]
    assert s["dataset"] == "transactions"
    assert s["model_versions"], "the regression model was never trained"
    # both models stand on the same views, built by the view's own DAG: a table for every validated interval (how
    # many runs that took depends on how Airflow grouped the asset events)
    from pipelines import storage
    from pipelines.features import table_keys

    lay = demo["layout"]
    validated = {storage.stem(p) for p in storage.list_files(lay.validated("transactions"), ".parquet")}
    assert len(validated) >= 7 and validated <= set(table_keys(lay.features(), "customer_stats")), validated
    api = airflow_api(demo)
    assert [r for r in api.dag_runs("features__customer_stats") if r["state"] == "success"]
    assert not [d for d in api.dags() if d["dag_id"] in ("ingest_validate__fraud", "features__fraud")]


def ui_answers_and_the_api_needs_a_login(demo: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{demo['ports'].airflow}"
    with urllib.request.urlopen(base + "/", timeout=10) as r:
        assert r.status == 200 and "airflow" in r.read().decode().lower()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/api/v2/dags", timeout=10)
    assert err.value.code in (401, 403)
    with urllib.request.urlopen(f"http://127.0.0.1:{demo['ports'].mlflow}/health", timeout=10) as r:
        assert r.status == 200


def the_endpoint_answers_with_each_champion(demo: dict[str, Any]) -> None:
    """After the loop, `flywheel serve` (started by `up`) answered one request per model with the version the
    `champion` alias names, reading the features from the topology's online store (SQLite embedded, Redis scaled
    out)."""
    import math

    client = mlflow_client(demo)
    served = demo["summary"]["serving"]
    assert set(served) == set(demo["summary"]["models"]), served
    for model, answer in served.items():
        assert "error" not in answer, (model, answer)
        champion = str(client.get_registered_model(f"flywheel-{model}").aliases["champion"])
        assert answer["version"] == champion and math.isfinite(answer["score"]), (model, answer, champion)


def secrets_are_private_and_never_logged(demo: dict[str, Any]) -> None:
    """Every secret of the install is in its own 0600 file in a 0700 folder, and no value of one appears in any log,
    mail, report or setting file the loop wrote (the Airflow task logs, the services' logs, the demo's output); the
    online endpoint refuses a request without its key, or with another key."""
    import json
    import stat

    home: Path = demo["home"]
    folder = home / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    values: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        text = path.read_text().strip()
        found = json.loads(text).items() if path.suffix == ".json" else [("", text)]
        values |= {f"{path.name}{':' + k if k else ''}": str(v) for k, v in found}
    assert {"admin_password", "fernet_key", "jwt_secret", "api_secret_key", "serving_api_key",
            "mlflow_admin_password", "mlflow_service_password"} <= set(values), values
    assert all(len(v) >= 12 for v in values.values()), {k: len(v) for k, v in values.items()}
    scanned, leaks = 0, []
    for area in ("logs", "airflow", "mail", "reports", "run", "audit"):
        for path in (home / area).rglob("*"):
            if path.is_file() and path.stat().st_size < 200_000_000:
                data, scanned = path.read_bytes(), scanned + 1
                leaks += [(k, str(path)) for k, v in values.items() if v.encode() in data]
    leaks += [(k, "the demo's output") for k, v in values.items() if v in demo["log"]]
    assert scanned > 50 and not leaks, leaks
    url = f"http://127.0.0.1:{demo['ports'].serving}/v1/models/fraud/predict"
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        request = urllib.request.Request(url, data=b'{"rows": []}', method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 401


def mlflow_has_logins_and_the_loop_used_its_service_account(demo: dict[str, Any]) -> None:
    """Issue 17: the tracking server runs MLflow's basic-auth app. Without credentials, or with a wrong password, it
    answers 401; a person an admin adds (READ, the default) reads the registry but may not move an alias (403); what
    the loop made (each model's experiment and registered model) was made by the service account `flywheel`, which
    owns it (MANAGE) and is no MLflow admin; and of all this install's processes only the tracking server holds the
    MLflow admin's password."""
    import json
    import secrets

    from flywheel import mlflow_auth as ma
    from flywheel.runtime import mlflow_admin_password
    from pipelines.layout import Layout
    from pipelines.spec import load_specs

    home: Path = demo["home"]
    base = f"http://127.0.0.1:{demo['ports'].mlflow}"
    model = "flywheel-fraud"
    for login in (None, ma.Login(ma.SERVICE_USERNAME, "not-the-password"), ma.Login("nobody", "no-such-user")):
        assert ma.request(base, login, "GET", "/api/2.0/mlflow/registered-models/get",
                          params={"name": model})[0] == 401, login
        assert ma.request(base, login, "POST", "/api/2.0/mlflow/registered-models/alias",
                          {"name": model, "alias": "champion", "version": "1"})[0] == 401, login
    admin = ma.Login(ma.ADMIN_USERNAME, mlflow_admin_password(Layout(home)))
    reader = ma.Login("outcome-reader", secrets.token_urlsafe(16))
    ma.sync(base, admin, reader)                       # a person an admin added, with no rights granted
    status, found = ma.request(base, reader, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": model})
    assert status == 200
    champion = {a["alias"]: a["version"] for a in found["registered_model"]["aliases"]}["champion"]
    other = "1" if champion != "1" else "2"
    assert ma.request(base, reader, "POST", "/api/2.0/mlflow/registered-models/alias",
                      {"name": model, "alias": "champion", "version": other})[0] == 403
    assert ma.request(base, reader, "POST", "/api/2.0/mlflow/registered-models/set-tag",
                      {"name": model, "key": "k", "value": "v"})[0] == 403
    after = ma.request(base, reader, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": model})[1]
    assert {a["alias"]: a["version"] for a in after["registered_model"]["aliases"]}["champion"] == champion
    env = demo["runtime_env"]
    assert (env[ma.USERNAME_VAR], ma.ADMIN_ENV in env) == (ma.SERVICE_USERNAME, False)
    _, user = ma.request(base, admin, "GET", "/api/2.0/mlflow/users/get", params={"username": ma.SERVICE_USERNAME})
    assert user["user"]["is_admin"] is False, user

    def permission(username: str, kind: str, resource_id: str) -> str:
        status, answer = ma.request(base, admin, "GET", "/api/3.0/mlflow/users/permissions/get",
                                    params={"username": username, "resource_type": kind, "resource_id": resource_id})
        assert status == 200, answer
        return json.dumps(answer)

    for spec in load_specs().values():
        if spec.name not in demo["summary"]["models"]:
            continue
        _, exp = ma.request(base, admin, "GET", "/api/2.0/mlflow/experiments/get-by-name",
                            params={"experiment_name": f"flywheel/{spec.name}"})
        for kind, resource_id in (("experiment", exp["experiment"]["experiment_id"]),
                                  ("registered_model", spec.registered_model_name)):
            assert '"MANAGE"' in permission(ma.SERVICE_USERNAME, kind, resource_id), (spec.name, kind)
            assert '"MANAGE"' not in permission(reader.username, kind, resource_id), (spec.name, kind)
    # the admin's password is in the tracking server's environment (its process group) and in no other process
    server_group = int((home / "run" / "mlflow.pid").read_text())
    holders = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and admin.password.encode() in (proc / "environ").read_bytes():
                holders.append((int(proc.name), int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])))
        except (OSError, ValueError, IndexError):
            continue
    assert holders and all(group == server_group for _, group in holders), (holders, server_group)


def every_version_was_checked_for_release_and_its_cost_recorded(demo: dict[str, Any]) -> None:
    """Issue 18 on the real loop: each fraud version was judged on the frozen golden set (its verdict and the hash
    on the version), its card shows golden sets, parity, importance and cost; every scored interval carries each
    row's top contributions; every train, gate and scoring run left a positive cost on its version's run, and the
    summary sums them per week."""
    from pipelines.release.cost import version_costs
    from pipelines.spec import load_specs

    specs = load_specs()
    client = mlflow_client(demo)
    frozen = specs["fraud"].golden[0]
    fraud = demo["summary"]["models"]["fraud"]
    for g in fraud["gate_decisions"]:
        verdict = g["golden"][frozen.name]
        assert verdict.endswith(f"sha256={frozen.sha256}") and verdict.split()[0] in ("PASS", "FAIL"), g
        if g["decision"] == "promoted":
            assert verdict.startswith("PASS"), g
    scored = {r["dag_run_id"] for r in airflow_api(demo).dag_runs("score__fraud") if r["state"] == "success"}
    score_costs = 0
    for name in ("fraud", "spend"):
        for mv in client.search_model_versions(f"name='flywheel-{name}'"):
            costs = version_costs(client, mv.run_id)
            for stage in ("train", "gate"):
                [day] = costs[stage].values()
                assert day["cpu_s"] > 0 and day["wall_s"] > 0 and day["peak_mb"] > 50, (name, mv.version, costs)
            if name == "fraud":
                score_costs += len(costs.get("score", {}))
                assert all(d["cpu_s"] > 0 and d["wall_s"] > 0 for d in costs.get("score", {}).values())
    assert 0 < score_costs <= len(scored), (score_costs, len(scored))
    weeks = fraud["cost_per_week"]
    assert weeks and all(w["cpu_s"] > 0 for w in weeks) and sum(w["runs"].get("score", 0) for w in weeks) == score_costs
    champ = fraud["champion_version"]
    card = client.download_artifacts(client.get_model_version("flywheel-fraud", champ).run_id,
                                     f"model_card/model_card_v{champ}.md", str(demo["home"] / "card-check"))
    text = Path(card).read_text()
    for section in ("## Golden sets", frozen.name, "## Fairness", "false_positive_rate by `country`",
                    "## Explanations", "mean abs SHAP", "## Cost"):
        assert section in text, section
    from pipelines.score import read_scores

    frame = read_scores(demo["layout"].scores("fraud"), *_all_time())   # the data store: a folder or S3
    assert {"contribution_1_feature", "contribution_3_value"} <= set(frame.columns)
    assert frame["contribution_1_feature"].notna().all()
    assert set(frame["contribution_1_feature"]) <= set(frame.columns)   # each names one of the row's inputs


def the_sentinel_caught_a_champion_moved_by_hand(demo: dict[str, Any]) -> None:
    """Right after the drill the demo points spend's `champion` at the version the gate rejected, with a plain
    MLflow client: the next monitor__spend run's sentinel recorded the alarm, emailed spend's owners, and (spend's
    spec says `registry: {out_of_band: restore}`) put the audited champion back with an audited move."""
    import json

    from pipelines import sentinel
    from pipelines.gate import alias_history
    from pipelines.spec import load_specs

    spec = load_specs()["spend"]
    assert spec.out_of_band == "restore"
    client = mlflow_client(demo)
    history = alias_history(spec, client)
    [alarm] = [e for e in history if e["action"] == sentinel.ACTION]
    assert alarm["actor"].startswith("sentinel via monitor__spend run "), alarm
    [restore] = [e for e in history if e["action"] == sentinel.RESTORE]
    assert restore["moves"] == [{"alias": "champion", "from": alarm["observed"], "to": alarm["audited"]}], restore
    bypassed = client.get_model_version(spec.registered_model_name, alarm["observed"])
    # the gate had said no to it, or it is a former champion a later promotion replaced (the demo moves a rejected
    # version when the run has one): either way not the champion the audited path chose
    assert bypassed.tags["flywheel.gate.decision"] in ("rejected", "promoted"), bypassed.tags
    assert alarm["observed"] != alarm["audited"]
    if bypassed.tags["flywheel.gate.decision"] == "promoted":
        assert int(alarm["observed"]) < int(alarm["audited"]), alarm   # replaced by a later promotion
    assert str(client.get_registered_model(spec.registered_model_name).aliases["champion"]) == alarm["audited"]
    assert sentinel.check_champion(spec, client).status == "ok"
    [mail] = [m for m in mails(demo["home"]) if "champion moved outside the audited path" in m["Subject"]]
    subject = " ".join(mail["Subject"].split())          # a long subject arrives folded
    assert subject.startswith("[Flywheel] spend:") and subject.endswith(f"restored v{alarm['audited']}"), subject
    assert {a.strip() for a in mail["To"].split(",")} == set(spec.owners)
    body = mail.get_body(preferencelist=("html",)).get_content()
    assert f'href="http://127.0.0.1:{demo["ports"].airflow}/flywheel/runbooks/out-of-band-champion"' in body, body
    assert "champion at v" in demo["log"] and "plain MLflow client" in demo["log"]
    # the documented extension point heard each champion move once, and nothing else (dags/examples)
    heard = [json.loads(line) for line in (demo["home"] / "audit" / "champions.jsonl").read_text().splitlines()]
    assert all(h.get("event") in ("promote", "rollback", "override", "restore") for h in heard), heard
    restores = [h for h in heard if h["event"] == "restore"]
    assert [(h["model"], h["champion"], h["observed"]) for h in restores] == [
        ("spend", alarm["audited"], alarm["observed"])], heard


def _all_time() -> tuple[Any, Any]:
    from datetime import UTC, datetime

    return datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


OUTCOMES = [timeline_tells_the_story, champion_exists_and_gate_recorded_decisions,
            the_guardrail_rolled_back_the_holiday_model, every_version_was_checked_for_release_and_its_cost_recorded,
            retrain_was_requested_by_drift_without_a_human, blocked_batch_and_quarantined_rows,
            owners_got_the_drift_report_and_the_block_notice, a_persisting_alarm_is_emailed_once_per_episode,
            second_model_ran_through_the_same_loop, the_sentinel_caught_a_champion_moved_by_hand,
            ui_answers_and_the_api_needs_a_login, secrets_are_private_and_never_logged,
            the_endpoint_answers_with_each_champion, mlflow_has_logins_and_the_loop_used_its_service_account]


# ---- the second story: real MovieLens ratings (scenarios/movielens.py), monthly CSVs, a regression on RMSE


def _ratings_models(demo: dict[str, Any]) -> dict[str, Any]:
    return demo["summary"]["models"]["movie_rating"]


def ratings_feed_was_onboarded_and_validated(demo: dict[str, Any]) -> None:
    """Every real month (the backfill landed at once, then the live months) passed the gate with every row: the
    rows published are exactly the package's ratings of those months."""
    import pandas as pd

    from pipelines import storage
    from scenarios import movielens

    story, lay = movielens.short_story(), demo["layout"]
    months = [*story.backfill, *(m for m, _ in story.live)]
    s = demo["summary"]["datasets"]["ratings"]
    assert s["read_by"] == ["movie_rating"]
    assert (s["batches_ingested"], s["batches_blocked"], s["rows_quarantined"]) == (len(months), 0, 0), s
    for month in months:
        clean = storage.read_parquet(storage.join(lay.validated("ratings"), f"{month}-01.parquet"))
        real = movielens.month_ratings(month)
        assert sorted(clean["rating_id"]) == sorted(real["rating_id"]), month
        assert clean["rated_at"].min() >= pd.Timestamp(movielens.month_start(month))
    runs = [r for r in airflow_api(demo).dag_runs("ingest_validate__ratings") if r["state"] == "success"]
    assert {r["dag_run_id"] for r in runs} >= {f"batch__{m}-01" for m in months}


def ratings_model_trained_gated_and_scored(demo: dict[str, Any]) -> None:
    """The regression on RMSE went through the same loop: features of two entities from Feast, a first version
    the gate promoted on its value threshold, scores of every live month by the champion."""
    from pipelines import storage
    from pipelines.spec import load_specs

    spec = load_specs()["movie_rating"]
    client = mlflow_client(demo)
    model = client.get_registered_model("flywheel-movie_rating")
    assert "champion" in model.aliases
    versions = sorted(client.search_model_versions("name='flywheel-movie_rating'"), key=lambda v: int(v.version))
    first = versions[0]
    assert first.tags["flywheel.gate.decision"] == "promoted", first.tags
    run = client.get_run(first.run_id)
    assert run.data.metrics["holdout_rmse"] <= spec.gate["max_primary"], run.data.metrics
    assert len(run.data.tags["flywheel.train_sha256"]) == 64
    api = airflow_api(demo)
    for view in ("user_ratings", "movie_ratings"):
        assert [r for r in api.dag_runs(f"features__{view}") if r["state"] == "success"], view
    lay = demo["layout"]
    scored = storage.list_files(lay.scores("movie_rating"), ".parquet")
    assert len(scored) >= 2, scored
    import pandas as pd

    scores = pd.concat(storage.read_parquet(p) for p in scored)
    assert scores["model_version"].astype(str).isin([v.version for v in versions]).all()


def ratings_drift_was_emailed_and_answered_by_a_retrain(demo: dict[str, Any]) -> None:
    """The real data changed (new users in April 2016): the monitor said so, emailed the model's owners, and the
    retrain it requested was judged by the gate on the newest holdout, with the reason recorded."""
    from pipelines.spec import load_specs

    m = _ratings_models(demo)
    assert m["drift_events"], m
    owners = set(load_specs()["movie_rating"].owners)
    drift = [x for x in mails(demo["home"]) if "movie_rating" in x["Subject"] and "drift" in x["Subject"].lower()]
    assert drift and {a.strip() for a in drift[0]["To"].split(",")} == owners
    runs = airflow_api(demo).dag_runs("train__movie_rating")
    assert any(r["run_type"] == "asset_triggered" and r["state"] == "success" for r in runs), runs
    decisions = [g for g in m["gate_decisions"] if g["version"] != "1"]
    assert decisions and all(g["decision"] in ("promoted", "rejected") and g["reason"] for g in decisions), decisions


RATINGS_OUTCOMES = [ratings_feed_was_onboarded_and_validated, ratings_model_trained_gated_and_scored,
                    ratings_drift_was_emailed_and_answered_by_a_retrain]
