"""override__<model>: a human force-promotes or force-rejects a model version, with a reason. Audited.

Trigger it from the UI (*Trigger* → `version`, `action`, `reason`) or the REST API with
`{"conf": {"version": "3", "action": "promote", "reason": "..."}}`. `promote` makes the version the
champion (the old one becomes `previous-champion`); `reject` takes `champion` (falling back to
`previous-champion`) and `previous-champion` away from it. The alias history and the version's
`flywheel.override.*` tags record who, what, when and why.
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
        **fc.dag_kwargs(spec, "override", "override"),
        access_control=oncall_dag_access(),   # the on-call role may trigger it (FAB; flywheel/access.py)
        schedule=None,
        params={
            "version": Param(type="string", minLength=1, title="Model version",
                             description=f"The version of {spec.registered_model_name} (e.g. 3), as in the MLflow UI."),
            "action": Param("promote", type="string", enum=["promote", "reject"], title="Action",
                            description="promote: make it the champion; reject: take champion/previous-champion "
                                        "away from it."),
            "reason": Param(type="string", minLength=1, title="Reason",
                            description="Why override the gate (required): goes into the audit history."),
        },
        doc_md=fc.doc(spec, "Override the gate",
                      f"Force-promote or force-reject a version of `{spec.registered_model_name}`, with a required "
                      "reason; recorded as an override in the alias history and on the version's tags."),
    ) as dag:

        @task(outlets=[fc.champion_asset(spec.name)])
        def override_version(params=None, **context) -> dict:
            from pipelines.gate import PromotionError, override

            version, reason = fc.required_text(params, "version"), fc.required_text(params, "reason")
            action = fc.required_text(params, "action")
            try:
                result = override(spec, version, action, reason, fc.actor(context),
                                  fc.run_key(context["dag_run"].run_id))
            except PromotionError as exc:   # unknown version, no fallback champion...: retrying cannot help
                raise AirflowFailException(str(exc)) from exc
            context["outlet_events"][fc.champion_asset(spec.name)].extra = fc.champion_event(
                spec, "override", result, reason, context)
            log.info("OVERRIDE %s: %s v%s (%s); champion is v%s", spec.name, action, version, reason,
                     result["champion"])
            return result

        override_version()
    return dag


for _spec in fc.specs().values():
    globals()[f"override__{_spec.name}"] = build(_spec)
