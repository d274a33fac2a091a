"""ingest_validate__<model>: validate each landed batch; block it or pass its clean rows on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.timetables.interval import CronDataIntervalTimetable

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


def build(spec: ModelSpec) -> DAG:
    with DAG(
        **fc.dag_kwargs(spec, "ingest_validate", "ingest"),
        schedule=CronDataIntervalTimetable(spec.schedule, timezone="UTC"),
        doc_md=fc.doc(spec, "Ingest & validate",
                      "Great Expectations checks the batch landed for the data interval against "
                      f"`{spec.dataset.path.name}`. A broken batch is blocked (the run fails, owners are "
                      "emailed, nothing downstream runs); bad rows are quarantined with reasons. Each run has a GX "
                      f"Data Docs page under `data/data_docs/{spec.name}/site/`; `flywheel validate --model "
                      f"{spec.name} <file>` runs the same gate outside Airflow."),
    ) as dag:

        @task
        def validate_batch(data_interval_start=None, data_interval_end=None) -> dict:
            from pipelines import storage
            from pipelines.datagen import batch_file_name
            from pipelines.layout import Layout, interval_key
            from pipelines.validate import validate_batch as run_validation

            lay = Layout.from_env()
            path = storage.join(lay.landing(spec.dataset.name),
                                batch_file_name(spec.dataset.file_pattern, data_interval_start))
            if not storage.exists(path):
                raise AirflowSkipException(f"no batch landed for {data_interval_start:%Y-%m-%d} → "
                                           f"{data_interval_end:%Y-%m-%d} (expected {path})")
            key = interval_key(data_interval_start)
            result = run_validation(path, spec, data_interval_start, data_interval_end,
                                    lay.validated(spec.name), lay.quarantine(spec.name),
                                    lay.validation_reports(spec.name), docs_dir=lay.data_docs(spec.name))
            log.info("%s", result.summary)
            return {**result.to_dict(), "key": key, "summary": result.summary}

        @task(retries=0)
        def gate_batch(result: dict, **context) -> dict:
            if result["verdict"] == "accepted":
                return result
            from pipelines.layout import Layout
            from pipelines.notify import blocked_batch_email
            from pipelines.validate import preserve_blocked

            kept = preserve_blocked(result["batch_file"], Layout.from_env().blocked(spec.name), result["key"])
            log.info("blocked batch kept at %s", kept)
            mail = blocked_batch_email(spec, result, fc.run_link(context))
            try:
                fc.send_email(list(mail.to), mail.subject, mail.html, list(mail.attachments))
            except Exception:  # the block must stand even when the mail server is down
                log.exception("could not email the owners about the blocked batch")
            raise AirflowFailException(f"batch BLOCKED: {result['summary']}")

        @task(outlets=[fc.validated_asset(spec.name)])
        def publish_validated(result: dict, data_interval_start=None, data_interval_end=None, **context) -> dict:
            context["outlet_events"][fc.validated_asset(spec.name)].extra = {
                "interval_start": data_interval_start.isoformat(),
                "interval_end": data_interval_end.isoformat(),
                "key": result["key"],
                "clean_path": result["clean_path"],
                "rows_clean": result["rows_clean"],
                "rows_quarantined": result["rows_quarantined"],
            }
            return {"key": result["key"], "rows_clean": result["rows_clean"]}

        publish_validated(gate_batch(validate_batch()))
    return dag


for _spec in fc.specs().values():
    globals()[f"ingest_validate__{_spec.name}"] = build(_spec)
