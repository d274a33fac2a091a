"""example__on_new_champion: a data engineer's DAG that reacts to a new champion of any model.

An extension point, not part of the loop: it shows how to subscribe to Flywheel's Assets (the table of
every Asset and its `extra` keys is in the README, "Extending the loop"). Whenever a promotion, a rollback
or an override moves a model's `champion` alias, this DAG runs once and appends the event to
`<FLYWHEEL_HOME>/audit/champions.jsonl` (a stand-in for a ticket, a chat message or a cache refresh).
Copy it, change the task, keep the wiring.
"""

from __future__ import annotations

import logging
from functools import reduce
from operator import or_

from airflow.sdk import DAG, task

from flywheel import dagkit as fc

log = logging.getLogger(__name__)

_specs = fc.specs()
CHAMPIONS = [fc.champion_asset(name) for name in _specs]

with DAG(
    dag_id="example__on_new_champion",
    start_date=fc.START_DATE,
    schedule=reduce(or_, CHAMPIONS),        # any model's champion event (`a | b`); a list would mean ALL of them
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "platform", "retries": 1},
    tags=["flywheel", "stage:example", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def record_champion_change(**context) -> list[dict]:
        import json

        from pipelines.layout import Layout

        out = Layout.from_env().home / "audit" / "champions.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        seen = []
        for asset, events in context["triggering_asset_events"].items():
            for ev in events:
                extra = dict(ev.extra or {})
                line = {"asset": asset.name, "at": ev.timestamp.isoformat(), **extra}
                log.info("%s: %s of %s -> champion v%s (was v%s) by %s: %s", asset.name, extra.get("event"),
                         extra.get("model"), extra.get("champion"), extra.get("previous"), extra.get("actor"),
                         extra.get("reason"))
                seen.append(line)
        with out.open("a") as f:
            f.writelines(json.dumps(line, default=str) + "\n" for line in seen)
        return seen

    record_champion_change()
