"""deliver_outbox: emails that could not be sent at once are retried here until delivered or expired.

Every 5 minutes. A run fails (red in the UI) while messages are still pending, naming them, their attempts
and the last error; an expired message goes out in a digest once the mail server answers again. The
outbox lives in `<data root>/outbox/` (pending/, sent/, expired/): see pipelines/outbox.py.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException

from flywheel import dagkit as fc

log = logging.getLogger(__name__)

with DAG(
    dag_id="deliver_outbox",
    start_date=fc.START_DATE,
    schedule=timedelta(minutes=5),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,   # infrastructure: undelivered mail must not wait for someone to unpause it
    default_args={"owner": "flywheel", "retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["flywheel", "stage:notify"],
    doc_md=__doc__,
) as dag:

    @task(retries=0)
    def deliver_pending() -> dict:
        from datetime import UTC

        from pipelines.layout import Layout
        from pipelines.outbox import deliver_pending as deliver

        def late(msg) -> None:   # a producer asked to hear about a late delivery
            if msg.on_sent.get("kind") == "drift_report":
                from pipelines.monitor import record_late_delivery

                record_late_delivery(msg.on_sent["verdict_json"], msg.sent_at)

        report = deliver(Layout.from_env().outbox(), fc.send_email, now=datetime.now(UTC), notify_sent=late)
        log.info("outbox: %d delivered, %d pending, %d expired, %d digest(s) sent", len(report.sent),
                 len(report.pending), len(report.expired), report.digests_sent)
        if report.pending:
            lines = "; ".join(f"{p['subject']} ({p['attempts']} attempts, {p['last_error']}, expires {p['expires_at']})"
                              for p in report.pending)
            raise AirflowFailException(f"{len(report.pending)} email(s) still pending delivery: {lines}")
        return report.to_dict()

    deliver_pending()
