"""rollback__<model>: one trigger moves `champion` back to `previous-champion`, audited.

Trigger it from the UI (*Trigger* → `reason`) or the REST API with `{"conf": {"reason": "..."}}`. The
move is one MLflow alias update (seconds); readers of `models:/<name>@champion` always get a version.
The alias history records who, what, when and why; without a previous champion the run fails and says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from flywheel import dagkit as fc
from flywheel.access import oncall_dag_access

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


def build(spec: ModelSpec) -> DAG:
    with DAG(
        **fc.dag_kwargs(spec, "rollback", "rollback"),
        access_control=oncall_dag_access(),   # the on-call role may trigger it (FAB; flywheel/access.py)
        schedule=None,
        params={"reason": Param(type="string", minLength=1, title="Reason",
                                description="Why roll back (required): goes into the alias history and the "
                                            "rolled-back version's tags.")},
        doc_md=fc.doc(spec, "Roll back the champion",
                      f"Moves `champion` of `{spec.registered_model_name}` back to `previous-champion` in one "
                      "trigger. The rolled-back version loses its aliases, so a second rollback cannot bring it "
                      f"back: to choose any version, use `override__{spec.name}`. Requires a `reason`."),
    ) as dag:

        @task(outlets=[fc.champion_asset(spec.name)])
        def rollback_champion(params=None, **context) -> dict:
            from pipelines.gate import PromotionError, rollback

            reason = fc.required_text(params, "reason")
            try:
                moved = rollback(spec, reason, fc.actor(context), fc.run_key(context["dag_run"].run_id))
            except PromotionError as exc:   # nothing to roll back to: retrying cannot help
                raise AirflowFailException(str(exc)) from exc
            context["outlet_events"][fc.champion_asset(spec.name)].extra = fc.champion_event(
                spec, "rollback", moved, reason, context)
            log.info("ROLLBACK %s: champion v%s -> v%s (%s)", spec.name, moved["rolled_back"], moved["champion"],
                     reason)
            return moved

        rollback_champion()
    return dag


for _spec in fc.specs().values():
    globals()[f"rollback__{_spec.name}"] = build(_spec)
