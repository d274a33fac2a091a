"""monitor__<model>: Evidently drift of the production log vs the champion's training reference.

On drift the owners get the report by email; if the retrain policy agrees (cooldown), the retrain
Asset fires and `train__<model>` starts with no human step.
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
    with DAG(
        **fc.dag_kwargs(spec, "monitor", "monitor"),
        schedule=[scores],
        doc_md=fc.doc(spec, "Drift monitoring",
                      f"Last {spec.drift.window_days} days of scores vs a sample of the champion's training set; "
                      f"drift when >= {spec.drift.drift_share:.0%} of columns drift (per-column threshold "
                      f"{spec.drift.threshold}). Retrain requests respect a {spec.drift.cooldown_days}-day cooldown."),
    ) as dag:

        @task
        def detect_drift(**context) -> dict:
            from pipelines.layout import Layout
            from pipelines.monitor import check_drift

            lay = Layout.from_env()
            ev = fc.interval_events(context, scores)[-1]
            result, decision = check_drift(spec, lay.scores(spec.name), lay.reports(spec.name),
                                           fc.parse_ts(ev["interval_end"]), ev["key"])
            log.info("drift: %s/%s columns drifted (%.0f%%); %s", result.drifted_count, len(result.columns),
                     100 * result.drifted_share, decision.reason)
            return {"drift": result.to_dict(), "request": decision.request, "reason": decision.reason,
                    "key": ev["key"], "interval_start": ev["interval_start"], "interval_end": ev["interval_end"],
                    "run_url": fc.run_link(context)}

        @task
        def email_report(found: dict) -> str:
            if not found["drift"]["drift_detected"]:
                raise AirflowSkipException("no drift: no email")
            import os

            from pipelines.monitor import DriftResult, RetrainDecision, compose_drift_email

            result = DriftResult(**found["drift"])
            decision = RetrainDecision(found["request"], found["reason"])
            links = {"Airflow run": found["run_url"]}
            if os.environ.get("FLYWHEEL_MLFLOW_UI"):
                links["MLflow model"] = f"{os.environ['FLYWHEEL_MLFLOW_UI']}/#/models/{spec.registered_model_name}"
            mail = compose_drift_email(spec, result, decision, links)
            fc.send_email(list(mail.to), mail.subject, mail.html, list(mail.attachments))
            return mail.subject

        @task(outlets=[retrain])
        def request_retrain(found: dict, **context) -> str:
            if not found["request"]:
                raise AirflowSkipException(found["reason"])
            context["outlet_events"][retrain].extra = {
                "reason": found["reason"], "interval_start": found["interval_start"],
                "interval_end": found["interval_end"], "key": found["key"],
                "drifted_share": found["drift"]["drifted_share"]}
            return found["reason"]

        found = detect_drift()
        email_report(found)
        request_retrain(found)
    return dag


for _spec in fc.specs().values():
    globals()[f"monitor__{_spec.name}"] = build(_spec)
