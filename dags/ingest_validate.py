"""ingest_validate__<dataset>: validate each landed batch once; block it or pass its clean rows on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.timetables.interval import CronDataIntervalTimetable

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import DatasetContract, ModelSpec

log = logging.getLogger(__name__)


def build(contract: DatasetContract, readers: list[ModelSpec]) -> DAG:
    name = contract.name
    models = ", ".join(f"`{m.name}`" for m in readers) or "none yet"
    with DAG(
        **fc.data_dag_kwargs(f"ingest_validate__{name}", contract.owners, "ingest",
                             [f"dataset:{name}", *(f"model:{m.name}" for m in readers)]),
        schedule=CronDataIntervalTimetable(contract.cadence, timezone="UTC"),
        doc_md=(f"### Ingest & validate · dataset `{name}`\n\n{contract.description}\n\nGreat Expectations checks "
                f"the batch landed for the data interval against `{contract.path.name}`, once for every model that "
                f"reads it ({models}). A broken batch is blocked (the run fails, the dataset's and the models' "
                "owners are emailed, nothing downstream runs); bad rows are quarantined with reasons. Data Docs: "
                f"`data/data_docs/{name}/site/`; `flywheel validate --dataset {name} <file>` runs the same gate "
                f"outside Airflow.\n\n*Owners:* {', '.join(contract.owners)}  \n*Cadence:* `{contract.cadence}`"),
    ) as dag:

        @task
        def validate_batch(data_interval_start=None, data_interval_end=None, dag_run=None) -> dict:
            from pipelines import storage
            from pipelines.layout import Layout, interval_key
            from pipelines.validate import validate_batch as run_validation

            lay = Layout.from_env()
            # started by land__<dataset> for a landed file: its interval and file are in the run's conf (a run
            # triggered from a task gets the data interval of its trigger time, not of the file); otherwise the
            # run's data interval and the file the contract names for it
            conf = (dag_run.conf or {}) if dag_run is not None else {}
            landed = conf.get("file")
            if conf.get("interval_start") and conf.get("interval_end"):
                data_interval_start, data_interval_end = (fc.parse_ts(conf["interval_start"]),
                                                          fc.parse_ts(conf["interval_end"]))
            if landed and storage.parent(landed) != storage.parent(storage.join(lay.landing(name), "x")):
                raise AirflowFailException(f"conf.file {landed} is not in the landing area of {name} "
                                           f"({lay.landing(name)}); land the file there instead.")
            path = landed or storage.join(lay.landing(name), contract.file_name(data_interval_start))
            if not storage.exists(path):
                raise AirflowSkipException(f"no batch landed for {data_interval_start:%Y-%m-%d %H:%M} → "
                                           f"{data_interval_end:%Y-%m-%d %H:%M} (expected {path})")
            key = interval_key(data_interval_start)
            result = run_validation(path, contract, data_interval_start, data_interval_end, lay.validated(name),
                                    lay.quarantine(name), lay.validation_reports(name),
                                    docs_dir=lay.data_docs(name), readers=readers)
            log.info("%s", result.summary)
            return {**result.to_dict(), "key": key, "summary": result.summary}

        # the gate publishes: an accepted batch's clean rows go on through the `<dataset>__validated` Asset (its
        # event's extra says which interval); a blocked one fails here, and a failed task emits no Asset event.
        # One task, not a gate then a publish: one scheduler hop (about a second) less for every batch
        @task(retries=0, email_on_failure=False, outlets=[fc.validated_asset(name)])   # a block sends its own notice
        def gate_batch(result: dict, **context) -> dict:
            if result["verdict"] == "accepted":
                context["outlet_events"][fc.validated_asset(name)].extra = {
                    "dataset": name,
                    "interval_start": result["interval_start"],
                    "interval_end": result["interval_end"],
                    "key": result["key"],
                    "clean_path": result["clean_path"],
                    "rows_clean": result["rows_clean"],
                    "rows_quarantined": result["rows_quarantined"],
                }
                return {"key": result["key"], "rows_clean": result["rows_clean"]}
            from pipelines.layout import Layout
            from pipelines.notify import blocked_batch_email
            from pipelines.validate import preserve_blocked

            kept = preserve_blocked(result["batch_file"], Layout.from_env().blocked(name), result["key"])
            log.info("blocked batch kept at %s", kept)
            mail = blocked_batch_email(contract, readers, result, fc.run_link(context), pages=fc.flywheel_pages())
            # the block stands even when the mail server is down: then the mail waits in the outbox
            sent = fc.send_or_queue(mail, expire_hours=contract.email_expire_hours)
            told = "owners emailed" if sent["status"] == "sent" else f"email pending in the outbox ({sent['error']})"
            raise AirflowFailException(f"batch BLOCKED ({told}): {result['summary']}")

        gate_batch(validate_batch())
    return dag


_specs = fc.specs()
for _contract in fc.datasets().values():
    globals()[f"ingest_validate__{_contract.name}"] = build(
        _contract, [s for s in _specs.values() if s.dataset.name == _contract.name])
