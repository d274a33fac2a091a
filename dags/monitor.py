"""monitor__<model>: Evidently drift of the production log vs the champion's training reference.

watch_champion (the champion sentinel, pipelines/sentinel.py: `champion` as the audit trail says, or an alarm
emailed to the owners and, with `registry: {out_of_band: restore}`, a restore announced by announce_restore) beside
detect_drift → email_report (owners: once per alarm episode, see `plan_email`) and → request_retrain (the
Asset train__<model> is scheduled on, when the retrain policy agrees). The policies (hysteresis, dedupe,
cooldown; alarm episodes) and the verdict live in pipelines/monitor/; this file maps Airflow context to
arguments.

SMTP down: email_report retries the send in-process, then Airflow retries the task; on its last try
the mail goes to the outbox (pipelines/outbox.py), recorded as `pending` in the verdict JSON and the
reports index, and the `deliver_outbox` DAG retries it until it is delivered (then `sent`) or expires
(`notify.expire_hours`; then it is listed in a digest). request_retrain (a sibling) is unaffected.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


def build(spec: ModelSpec) -> DAG:
    scores = fc.scores_asset(spec.name)
    retrain = fc.retrain_asset(spec.name)
    d = spec.drift
    with DAG(
        **fc.dag_kwargs(spec, "monitor", "monitor"),
        schedule=[scores],
        doc_md=fc.doc(spec, "Drift monitoring",
                      f"Last {d.window_days} days of scores vs a sample of the champion's training set "
                      f"(Evidently: {d.methods['numeric']} / {d.methods['categorical']}); drift when "
                      f">= {d.drift_share:.0%} of columns drift (threshold {d.threshold}); performance vs the "
                      f"gate-time holdout once labels arrive. A retrain is requested after {d.alarm_windows} "
                      f"alarm(s) in {d.of_windows} window(s), when no retrain is queued or running and the "
                      f"champion is older than {d.cooldown_days} days. Reports: `reports/{spec.name}/`."
                      + (f" Guardrail: for {spec.guardrail.guard_days} days after a version starts serving, "
                         "guard_champion compares it with the previous champion on the same labelled rows "
                         f"(paired bootstrap) and, when it is worse beyond noise and the tolerance "
                         f"{spec.guardrail.tolerance:g}, {spec.guardrail.action}s (runbook: "
                         "docs/runbooks/automatic-rollback.md)." if spec.guardrail else "")),
    ) as dag:

        @task
        def watch_champion(**context) -> dict:
            """The champion sentinel (pipelines/sentinel.py): `champion` as the audit trail says, or an alarm."""
            from pipelines.sentinel import compose_sentinel_email
            from pipelines.sentinel import watch_champion as watch

            run = context["dag_run"]
            verdict = watch(spec, fc.run_key(run.run_id), actor=f"sentinel via {run.dag_id} run {run.run_id}")
            mail = None
            if verdict.new_alarm:
                mail = fc.send_or_queue(compose_sentinel_email(spec, verdict, fc.flywheel_pages(),
                                                               {"Airflow run": fc.run_link(context)}),
                                        expire_hours=spec.email_expire_hours)
            return {"verdict": verdict.to_dict(), "email": mail}

        @task(outlets=[fc.champion_asset(spec.name)])
        def announce_restore(watched: dict, **context) -> dict:
            v = watched["verdict"]
            if v["status"] != "restored":
                raise AirflowSkipException(f"champion sentinel: {v['status']}: {v['detail']}")
            moved = {"champion": v["audited"], "previous": v["actual"], "observed": v["actual"]}
            context["outlet_events"][fc.champion_asset(spec.name)].extra = fc.champion_event(
                spec, "restore", moved, (v["restored"] or {}).get("reason", v["detail"]), context)
            return moved

        @task
        def detect_drift(**context) -> dict:
            from pipelines.layout import Layout
            from pipelines.monitor import check_drift

            lay = Layout.from_env()
            ev = fc.interval_events(context, scores)[-1]
            # dedupe: ask Airflow (Task SDK) whether a retrain of this model is already queued or running
            in_flight = context["ti"].get_dr_count(dag_id=f"train__{spec.name}", states=["queued", "running"])
            result, decision, plan = check_drift(spec, lay.scores(spec.name), lay.reports(spec.name),
                                           fc.parse_ts(ev["interval_end"]), ev["key"],
                                           validated_dir=lay.validated(spec.dataset.name), retrain_in_flight=in_flight)
            log.info("drift: %s/%s columns drifted (%.0f%%); performance %s; %s", result.drifted_count,
                     len(result.columns), 100 * result.drifted_share, result.performance.get("status"),
                     decision.reason)
            log.info("email: %s (%s)", plan.kind, plan.reason)
            return {"drift": result.to_dict(), "alarm": decision.alarm, "email": plan.send, "episode": plan.episode,
                    "email_reason": plan.reason,
                    "request": decision.request,
                    "rule": decision.rule, "reason": decision.reason, "key": ev["key"],
                    "interval_start": ev["interval_start"], "interval_end": ev["interval_end"],
                    "run_url": fc.run_link(context)}

        @task
        def email_report(found: dict, **context) -> dict:
            if not found["email"]:
                raise AirflowSkipException(f"no email for this window: {found['email_reason']}")
            import os
            from functools import partial

            from pipelines.monitor import send_drift_report

            links = {"Airflow run": found["run_url"]}
            if os.environ.get("FLYWHEEL_MLFLOW_UI"):
                version = found["drift"]["champion_version"]
                links["MLflow model"] = (f"{os.environ['FLYWHEEL_MLFLOW_UI']}/#/models/{spec.registered_model_name}"
                                         + (f"/versions/{version}" if version else ""))
            ti = context["ti"]
            queue = partial(fc.send_or_queue, expire_hours=spec.email_expire_hours)
            return send_drift_report(spec, found["drift"]["verdict_json"], links, fc.send_email,
                                     pages=fc.flywheel_pages(), final_try=ti.try_number > ti.max_tries, queue=queue)

        @task(outlets=[retrain])
        def request_retrain(found: dict, **context) -> str:
            if not found["request"]:
                raise AirflowSkipException(found["reason"])
            context["outlet_events"][retrain].extra = {
                "reason": found["reason"], "interval_start": found["interval_start"],
                "interval_end": found["interval_end"], "key": found["key"],
                "drifted_share": found["drift"]["drifted_share"]}
            return found["reason"]

        @task
        def guard_champion(**context) -> dict:
            from pipelines.layout import Layout
            from pipelines.monitor.guard import apply_guard, check_guard, record_guard

            lay = Layout.from_env()
            ev = fc.interval_events(context, scores)[-1]
            verdict = check_guard(spec, lay.scores(spec.name), lay.validated(spec.dataset.name),
                                  fc.parse_ts(ev["interval_start"]), fc.parse_ts(ev["interval_end"]))
            moved = apply_guard(spec, verdict, fc.run_key(context["dag_run"].run_id),
                                # `<who> via <dag_id> run <run_id>`, as every audited actor (the page links the run)
                                actor=f"guardrail via {context['dag_run'].dag_id} run {context['dag_run'].run_id}")
            record_guard(lay.reports(spec.name), ev["key"], verdict, moved)
            log.info("guardrail: %s: %s", verdict.action, verdict.reason)
            return {"verdict": verdict.to_dict(), "moved": moved, "run_url": fc.run_link(context)}

        # the <model>__champion event only when an alias moved (an outlet task that succeeds always emits one)
        @task(outlets=[fc.champion_asset(spec.name)])
        def announce_rollback(judged: dict, **context) -> dict:
            if judged["moved"] is None:
                raise AirflowSkipException(f"the guardrail moved nothing: {judged['verdict']['reason']}")
            context["outlet_events"][fc.champion_asset(spec.name)].extra = fc.champion_event(
                spec, "rollback", judged["moved"], judged["verdict"]["reason"], context)
            return judged["moved"]

        @task
        def email_guard(judged: dict, **context) -> dict:
            if judged["verdict"]["action"] == "none":
                raise AirflowSkipException(f"the guardrail did not act: {judged['verdict']['reason']}")
            from pipelines.guardrail import GuardVerdict
            from pipelines.monitor.guard import compose_guard_email

            mail = compose_guard_email(spec, GuardVerdict(**judged["verdict"]), judged["moved"], fc.flywheel_pages(),
                                       {"Airflow run": judged["run_url"]})
            return fc.send_or_queue(mail, expire_hours=spec.email_expire_hours)

        # beside the drift check and the guardrail (not before them: a monitor run's latency is on the loop's path)
        announce_restore(watch_champion())
        found = detect_drift()
        email_report(found)
        request_retrain(found)
        if spec.guardrail is not None:
            judged = guard_champion()
            email_guard(judged)
            announce_rollback(judged)
    return dag


for _spec in fc.specs().values():
    globals()[f"monitor__{_spec.name}"] = build(_spec)
