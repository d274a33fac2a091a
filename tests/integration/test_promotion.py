"""Promotion, rollback and override against a real MLflow server and the real Airflow scheduler.

One embedded runtime (its own FLYWHEEL_HOME and free ports, so it passes while a demo runs). MLflow
state is set up directly through the pipelines functions (tiny real XGBoost models on a synthetic
holdout), not by playing the demo; rollback and override then run as DAG runs triggered over the
REST API with conf, exactly as from the UI's Trigger form. Every process started is stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from demo_runs import without_runtime_settings

from flywheel.runtime import processes_of

pytestmark = pytest.mark.integration

FEATURES = ["amount", "channel", "category", "country", "cust_txn_count_7d"]
GATE = {"min_primary": 0.05, "max_brier": 0.2, "max_latency_p95_ms": 200.0, "min_delta": 0.0,
        "min_relative_delta": 0.0, "min_holdout_rows": 500.0, "min_holdout_positives": 20.0,
        "bootstrap_resamples": 500.0, "slice_tolerance": 0.25, "slice_min_rows": 150.0, "slice_min_positives": 5.0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Airflow (API server, scheduler, DAG processor, triggerer) + MLflow + SMTP on free ports.

    The services start in a background thread: the registry tests run as soon as MLflow answers,
    while Airflow is still starting; `stack["api"]()` waits for Airflow."""
    from flywheel import mlflow_auth, runtime
    from flywheel.airflow_api import AirflowAPI
    from pipelines.layout import Layout

    home = tmp_path_factory.mktemp("promotion-home")
    lay, ports = Layout(home), runtime.Ports.free()
    saved = dict(os.environ)
    clean = without_runtime_settings(os.environ)   # nor the session's Airflow settings, nor a demo run's stores
    os.environ.clear()
    os.environ.update(clean)
    os.environ.update({"FLYWHEEL_HOME": str(home), "FLYWHEEL_AIRFLOW_PORT": str(ports.airflow),
                       "FLYWHEEL_MLFLOW_PORT": str(ports.mlflow), "FLYWHEEL_SMTP_PORT": str(ports.smtp),
                       "FLYWHEEL_WORKER_LOG_PORT": str(ports.worker_logs),
                       "FLYWHEEL_TRIGGER_LOG_PORT": str(ports.trigger_logs),
                       "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5"})
    failure: list[BaseException] = []
    starter: threading.Thread | None = None
    try:
        t0 = time.monotonic()
        env = runtime.init(lay, ports)

        def start() -> None:
            try:
                runtime.up(lay, ports, env)
            except BaseException as exc:   # re-raised in the test that needs Airflow
                failure.append(exc)

        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        runtime.wait_http(f"http://127.0.0.1:{ports.mlflow}/health", 240, "MLflow")   # minutes on a busy host
        os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
        # the tasks' MLflow login (the service account, flywheel/mlflow_auth.py): up() creates it once MLflow answers
        service = mlflow_auth.Login(env[mlflow_auth.USERNAME_VAR], env[mlflow_auth.PASSWORD_VAR])
        os.environ.update(service.env())
        mlflow_auth.wait_for_login(env["MLFLOW_TRACKING_URI"], service, 120)
        print(f"MLflow up in {time.monotonic() - t0:.0f}s")
        from mlflow import MlflowClient

        found = [m.name for m in MlflowClient(env["MLFLOW_TRACKING_URI"]).search_registered_models()]
        assert not found, f"this home's new MLflow server already holds {found}: another runtime's store leaked in"

        def api() -> AirflowAPI:
            starter.join(timeout=180)
            if failure:
                raise failure[0]
            assert not starter.is_alive(), "Airflow did not start within 180 s"
            return AirflowAPI(f"http://127.0.0.1:{ports.airflow}", "admin", runtime.admin_password(lay))

        yield {"home": home, "lay": lay, "ports": ports, "api": api, "work": home / "work"}
    finally:
        try:
            if starter is not None:
                starter.join(timeout=180)   # every service's pid is written before it is stopped
            runtime.down(lay)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        deadline = time.monotonic() + 30   # MLflow's job consumers take a few seconds to follow their parent
        while (left := processes_of(home)) and time.monotonic() < deadline:
            time.sleep(1)
        assert not left, f"processes left running: {left}"


@pytest.fixture(scope="module")
def spec():
    from pipelines.spec import load_specs

    # the shipped slices, pinned thresholds; no golden set: these frames are not its inputs (its checks are in
    # tests/unit/test_release_checks.py)
    return dataclasses.replace(load_specs()["fraud"], gate=GATE, golden=())


def _frames(seed: int, n: int) -> Any:
    """Card transactions whose fraud depends on channel, category and amount (learnable, noisy)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    channel = rng.choice(["pos", "online", "wallet"], n, p=[0.5, 0.35, 0.15])
    category = rng.choice(["grocery", "travel", "electronics", "crypto", "gaming"], n, p=[0.4, 0.2, 0.2, 0.1, 0.1])
    amount = rng.gamma(2.0, 80.0, n)
    risk = -4.0 + 1.5 * (channel == "online") + 1.2 * np.isin(category, ["crypto", "gaming"]) + amount / 150.0
    label = (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(float)
    return pd.DataFrame({
        "transaction_id": [f"t{seed}-{i}" for i in range(n)], "customer_id": rng.integers(0, n // 3, n),
        "event_ts": pd.Timestamp("2026-02-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="min"),
        "amount": amount, "channel": channel, "category": category, "country": rng.choice(["US", "GB", "DE"], n),
        "cust_txn_count_7d": rng.poisson(5, n).astype(float), "label": label})


def _train(spec, work: Path, run_key: str, params: dict) -> Any:
    from pipelines.model import train_and_register

    out = work / run_key
    out.mkdir(parents=True, exist_ok=True)
    train, hold = out / "train.parquet", out / "holdout.parquet"
    _frames(1, 6000).to_parquet(train, index=False)
    _frames(2, 2500).to_parquet(hold, index=False)
    tset = {"train_path": str(train), "holdout_path": str(hold), "train_rows": 6000, "holdout_rows": 2500,
            "train_sha256": hashlib.sha256(train.read_bytes()).hexdigest(),
            "holdout_sha256": hashlib.sha256(hold.read_bytes()).hexdigest(),
            "window": {"train_start": "2026-01-01T00:00:00+00:00", "holdout_start": "2026-02-01T00:00:00+00:00",
                       "labelled_until": "2026-02-03T00:00:00+00:00"}, "as_of": "2026-02-05T00:00:00+00:00"}
    return train_and_register(spec, tset, FEATURES, params, run_key, out, f"test {run_key}")


def _gate_and_promote(spec, work: Path, run_key: str, params: dict) -> Any:
    from datetime import UTC, datetime

    from pipelines.gate import evaluate_gate, promote
    from pipelines.model_card import write_model_card

    t0 = time.monotonic()
    tv = _train(spec, work, run_key, params)
    t1 = time.monotonic()
    decision = evaluate_gate(spec, tv.version, str(work / run_key / "holdout.parquet"), FEATURES, work / run_key,
                             actor=f"test {run_key}", run_key=run_key)
    t2 = time.monotonic()
    if decision.promote:
        promote(spec, tv.version, decision.reason, datetime(2026, 2, 5, tzinfo=UTC), actor=f"test {run_key}",
                run_key=run_key, expected_champion=decision.champion_version)
    t3 = time.monotonic()
    write_model_card(spec, tv.version, work / run_key)
    print(f"TIMING {run_key}: train {t1 - t0:.1f}s gate {t2 - t1:.1f}s promote {t3 - t2:.1f}s "
          f"card {time.monotonic() - t3:.1f}s")
    return decision


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _aliases(spec) -> dict[str, str]:
    return dict(_client().get_registered_model(spec.registered_model_name).aliases)


STRONG = {"max_depth": 4, "num_boost_round": 60, "early_stopping_rounds": 10}
STUMP = {"max_depth": 1, "num_boost_round": 1, "early_stopping_rounds": 1}


def test_gate_promotes_rejects_and_records_every_move(stack, spec):
    from pipelines.gate import alias_history

    work = stack["work"]
    first = _gate_and_promote(spec, work, "v1", STUMP)           # the first model: value thresholds only
    assert first.promote and first.mode == "first_model", first.reason
    better = _gate_and_promote(spec, work, "v2", STRONG)
    assert better.promote and better.champion_version == "1", better.reason
    assert better.improvement.low > 0
    worse = _gate_and_promote(spec, work, "v3", STUMP)
    assert not worse.promote and "improvement" in worse.reason and worse.champion_version == "2"

    assert _aliases(spec) == {"champion": "2", "previous-champion": "1", "challenger": "3"}
    hist = alias_history(spec)
    assert [e["action"] for e in hist] == ["evaluate", "promote", "evaluate", "promote", "evaluate"]
    promote2 = hist[3]
    assert promote2["moves"] == [{"alias": "previous-champion", "from": None, "to": "1"},
                                 {"alias": "champion", "from": "1", "to": "2"}]
    assert promote2["actor"] == "test v2" and promote2["reason"].startswith("promoted") and promote2["at"]

    client = _client()
    mv3 = client.get_model_version(spec.registered_model_name, "3")
    assert mv3.tags["flywheel.gate.decision"] == "rejected"
    assert mv3.tags["flywheel.gate.check.vs_champion"].startswith("FAIL")
    assert mv3.tags["flywheel.gate.check.latency"].startswith("PASS")
    assert mv3.tags["flywheel.lib.xgboost"] and mv3.tags["flywheel.code_version"]
    arts = {a.path for a in client.list_artifacts(mv3.run_id, "gate")} | {
        a.path for a in client.list_artifacts(mv3.run_id, "model_card")}
    assert {"gate/gate_v3.json", "model_card/model_card_v3.md", "model_card/model_card_v3.html"} <= arts
    card = Path(client.download_artifacts(mv3.run_id, "model_card/model_card_v3.md", str(work / "dl"))).read_text()
    assert "**REJECTED**" in card and "| vs_champion | **FAIL** |" in card and "## Metrics by slice" in card
    run = client.get_run(mv3.run_id)
    assert run.data.params["seed"] == str(spec.seed) and len(run.data.tags["flywheel.train_sha256"]) == 64
    assert run.data.tags["flywheel.lib.mlflow"] and run.data.tags["flywheel.lib.pandas"]

    # re-running the gate on the promoted champion compares it with the champion it replaced: same decision
    from pipelines.gate import evaluate_gate

    again = evaluate_gate(spec, "2", str(work / "v2" / "holdout.parquet"), FEATURES, work / "v2-rerun",
                          actor="test rerun", run_key="v2-rerun")
    assert again.promote and again.champion_version == "1" and again.improvement == better.improvement
    assert _aliases(spec)["champion"] == "2"


def test_readers_always_resolve_the_champion_while_it_moves(stack, spec):
    """One thread promotes v1/v2 back and forth; readers resolve and load `@champion` meanwhile."""
    import mlflow.xgboost

    from pipelines.gate import promote

    name = spec.registered_model_name
    stop, errors, seen, loads = threading.Event(), [], [], []

    def read(load: bool) -> None:
        client = _client()
        while not stop.is_set():
            try:
                seen.append(client.get_model_version_by_alias(name, "champion").version)
                if load:
                    loads.append(mlflow.xgboost.load_model(f"models:/{name}@champion").num_boosted_rounds())
            except Exception as exc:   # any failure to get a version is what this test is about
                errors.append(repr(exc))

    from datetime import UTC, datetime

    readers = [threading.Thread(target=read, args=(i == 0,)) for i in range(3)]
    for t in readers:
        t.start()
    moves = 0
    try:
        for i in range(16):
            promote(spec, "1" if i % 2 == 0 else "2", "concurrency test", datetime(2026, 2, 6, tzinfo=UTC),
                    actor="concurrency test", run_key=f"flip-{i}")
            moves += 1
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=60)
    assert not errors, errors[:5]
    assert moves == 16 and len(seen) > 50 and set(seen) <= {"1", "2"} and {"1", "2"} <= set(seen)
    assert loads and all(r >= 1 for r in loads)
    assert _aliases(spec)["champion"] == "2" and _aliases(spec)["previous-champion"] == "1"


def test_shadow_scores_are_the_previous_champion_s_and_the_challenger_s_predictions_on_the_same_rows(stack, spec):
    """Scoring's shadows (pipelines.score.shadow_scores): the previous champion and a pending challenger (an alias
    that is not the champion) score exactly the champion's rows, each with its own inputs and categories; the
    champion never shadows itself."""
    import numpy as np

    from pipelines import model as m
    from pipelines.score import shadow_scores

    aliases = _aliases(spec)   # after the tests above: champion v2, previous-champion v1, and a challenger
    champion = aliases["champion"]
    want_roles = sorted((role, aliases[role]) for role in ("previous-champion", "challenger")
                        if role in aliases and aliases[role] != champion)
    assert ("previous-champion", "1") in want_roles
    rows = _frames(7, 400).drop(columns=["label"]).assign(scored_for="2026-02-09")
    shadow = shadow_scores(spec, rows, champion, _client())
    assert shadow is not None
    assert sorted(set(zip(shadow["role"], shadow["model_version"], strict=True))) == want_roles
    assert list(shadow.columns) == ["transaction_id", "model_version", "role", "prediction"]   # the rest: by id
    name = spec.registered_model_name
    for _, version in want_roles:
        mine = shadow[shadow["model_version"] == version]
        assert list(mine["transaction_id"]) == list(rows["transaction_id"])   # the same rows, in order
        want = m.predict(m.load_version(name, version),
                         m.to_matrix_frame(rows, spec, FEATURES, m.load_categories(name, version)))
        np.testing.assert_allclose(mine["prediction"].to_numpy(), want)
    assert champion not in set(shadow["model_version"])
    # a matrix in `reuse` built for other inputs is never used for these versions
    reused = shadow_scores(spec, rows, champion, _client(), reuse={
        "unrelated": m.to_matrix_frame(rows, spec, FEATURES, None)})
    np.testing.assert_allclose(reused["prediction"].to_numpy(), shadow["prediction"].to_numpy())


def test_above_shadow_rows_the_shadows_score_the_same_sample_on_every_run(stack, spec):
    """An interval with more rows than `guardrail.shadow_rows`: the shadows score a uniform sample by row id
    (bench/shadow.py: a shadow costs a full prediction), the same rows on a re-run, with the same predictions
    as on the full frame; the champion's own scores are not sampled (score_interval writes every row)."""
    import dataclasses

    import numpy as np

    from pipelines.guardrail import GuardSpec
    from pipelines.score import shadow_scores

    champion = _aliases(spec)["champion"]
    rows = _frames(11, 6000).drop(columns=["label"]).assign(scored_for="2026-02-09")
    capped = dataclasses.replace(spec, guardrail=GuardSpec(shadow_rows=1500, min_rows=200))
    full = shadow_scores(spec, rows, champion, _client())
    first = shadow_scores(capped, rows, champion, _client())
    again = shadow_scores(capped, rows.sample(frac=1.0, random_state=3), champion, _client())
    for version in set(full["model_version"]):
        mine = first[first["model_version"] == version]
        assert 1100 <= len(mine) <= 1900, len(mine)          # about shadow_rows of 6,000
        assert set(mine["transaction_id"]) == set(again.loc[again["model_version"] == version, "transaction_id"])
        on_all = full[full["model_version"] == version].set_index("transaction_id")["prediction"]
        np.testing.assert_allclose(mine.set_index("transaction_id")["prediction"].to_numpy(),
                                   on_all.loc[mine["transaction_id"]].to_numpy())
    sampled = rows.set_index("transaction_id").loc[first["transaction_id"].unique()]
    assert abs(sampled["amount"].mean() / rows["amount"].mean() - 1) < 0.1   # uniform, not the first rows


def _run(api, dag_id: str, conf: dict, timeout: float = 120) -> dict:
    """Trigger a run with conf (the UI's Trigger form) and wait until it ends."""
    deadline = time.monotonic() + 120
    while dag_id not in {d["dag_id"] for d in api.dags()}:   # the DAG processor has to parse it first
        assert time.monotonic() < deadline, f"{dag_id} was never parsed; import errors: {api.import_errors()}"
        time.sleep(1)
    run = api.trigger(dag_id, conf=conf)
    deadline = time.monotonic() + timeout
    while True:
        state = api.get(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}")
        if state["state"] in ("success", "failed"):
            return state
        assert time.monotonic() < deadline, f"{dag_id} run still {state['state']} after {timeout}s"
        time.sleep(0.5)


def _seconds(run: dict) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()


def test_rollback_through_the_scheduler(stack, spec):
    from flywheel.airflow_api import AirflowAPIError
    from pipelines.gate import alias_history

    api = stack["api"]()
    with pytest.raises(AirflowAPIError):           # `reason` is required: the trigger itself is refused
        api.trigger("rollback__fraud", conf={"reason": ""})
    assert _aliases(spec)["champion"] == "2"

    run = _run(api, "rollback__fraud", {"reason": "scores look wrong in production"})
    assert run["state"] == "success", run
    print(f"rollback run took {_seconds(run):.1f}s")
    aliases = _aliases(spec)
    assert aliases["champion"] == "1" and "previous-champion" not in aliases
    last = alias_history(spec)[-1]
    assert last["action"] == "rollback" and last["reason"] == "scores look wrong in production"
    assert "rollback__fraud" in last["actor"] and "admin" in last["actor"]
    assert last["moves"] == [{"alias": "champion", "from": "2", "to": "1"},
                             {"alias": "previous-champion", "from": "1", "to": None}]
    mv2 = _client().get_model_version(spec.registered_model_name, "2")
    assert mv2.tags["flywheel.rolled_back_reason"] == "scores look wrong in production"

    again = _run(api, "rollback__fraud", {"reason": "once more"})   # nothing left to roll back to
    assert again["state"] == "failed"
    assert _aliases(spec)["champion"] == "1" and alias_history(spec)[-1]["run_key"] == last["run_key"]


def test_override_through_the_scheduler(stack, spec):
    from flywheel.airflow_api import AirflowAPIError
    from pipelines.gate import alias_history

    api = stack["api"]()
    with pytest.raises(AirflowAPIError):           # no reason: refused at trigger time
        api.trigger("override__fraud", conf={"version": "3", "action": "promote"})
    with pytest.raises(AirflowAPIError):           # not an action
        api.trigger("override__fraud", conf={"version": "3", "action": "bless", "reason": "x"})

    run = _run(api, "override__fraud", {"version": "3", "action": "promote", "reason": "ops asked for v3"})
    assert run["state"] == "success", run
    assert _aliases(spec)["champion"] == "3" and _aliases(spec)["previous-champion"] == "1"
    entry = alias_history(spec)[-1]
    assert entry["action"] == "override-promote" and entry["reason"] == "ops asked for v3"
    assert "override__fraud" in entry["actor"]
    mv3 = _client().get_model_version(spec.registered_model_name, "3")
    assert mv3.tags["flywheel.override.action"] == "promote" and mv3.tags["flywheel.gate.decision"] == "rejected"

    run = _run(api, "override__fraud", {"version": "3", "action": "reject", "reason": "v3 misbehaves"})
    assert run["state"] == "success", run
    aliases = _aliases(spec)
    assert aliases["champion"] == "1" and "previous-champion" not in aliases
    entry = alias_history(spec)[-1]
    assert entry["action"] == "override-reject" and entry["version"] == "3"
    assert _client().get_model_version(spec.registered_model_name, "3").tags["flywheel.override.action"] == "reject"

    missing = _run(api, "override__fraud", {"version": "99", "action": "promote", "reason": "typo"})
    assert missing["state"] == "failed" and _aliases(spec)["champion"] == "1"
