"""land__<dataset>: a file landed in the dataset's landing area is ingested for its interval, without a
REST call. The `<dataset>__landed` Asset's watcher (flywheel/triggers.py) fires when a file appears or
changes; this DAG starts `ingest_validate__<dataset>` for the file's interval (its run `batch__<key>`;
a run that already exists for the interval is cleared and runs again on the new file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import DatasetContract


def build(contract: DatasetContract) -> DAG:
    name = contract.name
    landed = fc.landed_asset(name)
    with DAG(
        **fc.data_dag_kwargs(f"land__{name}", contract.owners, "ingest", [f"dataset:{name}"]),
        schedule=[landed],
        doc_md=(f"### Landing · dataset `{name}`\n\nA file landed in `data/landing/{name}/` (or a new version of "
                "one) is ingested for the interval its name places it in (`file_pattern` "
                f"`{contract.file_pattern}`, cadence `{contract.cadence}`), else the interval of its earliest "
                f"event: this DAG starts `ingest_validate__{name}` run `batch__<interval>`. Backfill = land "
                "files for past intervals."),
    ) as dag:

        @task
        def plan_ingestion(**context) -> list[dict]:
            """One ingest run per landed interval (the newest version of its file). A file announced again while
            it waits (`refire`) is started only when no run of its interval is queued, running or failed (a
            failed one waits for a person: clear it in the UI)."""
            latest: dict[str, dict] = {}
            for ev in context["triggering_asset_events"][landed]:
                payload = dict((ev.extra or {}).get("payload") or {})
                for f in payload.get("files") or [payload]:   # one event per scan (or one file, before)
                    if f.get("key") and not (f.get("refire") and latest.get(f["key"])):
                        latest[f["key"]] = f
            ti = context["ti"]
            for key, p in list(latest.items()):
                if p.get("refire") and ti.get_dr_count(dag_id=f"ingest_validate__{name}", run_ids=[f"batch__{key}"],
                                                       states=["queued", "running", "failed"]):
                    del latest[key]
            # logical date and run_after at the interval's end: the run's data interval is the file's interval
            # (infer_manual_data_interval of the cadence), shown as such in the UI
            return [{"trigger_run_id": f"batch__{key}", "logical_date": p["interval_end"],
                     "run_after": p["interval_end"],
                     "conf": {"file": p["file"], "sha256": p["sha256"], "interval_start": p["interval_start"],
                              "interval_end": p["interval_end"]}}
                    for key, p in sorted(latest.items())]

        TriggerDagRunOperator.partial(
            task_id="start_ingestion", trigger_dag_id=f"ingest_validate__{name}", reset_dag_run=True,
            wait_for_completion=False,
        ).expand_kwargs(plan_ingestion())
    return dag


for _contract in fc.datasets().values():
    globals()[f"land__{_contract.name}"] = build(_contract)
