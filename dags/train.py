"""train__<model>: PIT training set from Feast → XGBoost in MLflow → gate vs champion → alias move → model card.

Runs when the monitor requests a retrain (Asset), or when triggered by hand from the UI with params
(`as_of`, `reason`, and XGBoost `params` overrides for experiments: the gate still decides).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


def build(spec: ModelSpec) -> DAG:
    retrain = fc.retrain_asset(spec.name)
    with DAG(
        **fc.dag_kwargs(spec, "train", "train"),
        schedule=[retrain],
        params={
            "as_of": Param("", type="string", description="Train as of this time (ISO). Empty: the retrain "
                           "request's interval end, else the newest validated batch."),
            "reason": Param("manual trigger", type="string", description="Why this run: recorded in MLflow."),
            "params": Param({}, type="object", description="XGBoost parameter overrides for this run only."),
        },
        doc_md=fc.doc(spec, "Train, gate, promote",
                      f"Training window {spec.window_days} d, holdout the newest {spec.holdout_days} labelled "
                      f"days; primary metric `{spec.primary_metric}`; gate thresholds {spec.gate} from the spec, "
                      f"slices {[s.column for s in spec.slices]}. The challenger (alias `challenger`) becomes "
                      "`champion` only if every gate check passes, including a paired-bootstrap lower bound of its "
                      "improvement above the tolerance. The `evaluate_gate` log lists every check; the model card "
                      "(`model_card/` on the run) is written either way."),
    ) as dag:

        @task
        def build_training_set(params=None, dag_run=None, **context) -> dict:
            from pipelines.features import validated_keys
            from pipelines.layout import Layout
            from pipelines.spec import REPO_ROOT
            from pipelines.training import build_training_set as build_set

            lay = Layout.from_env()
            events = context["triggering_asset_events"].get(retrain, []) if context.get(
                "triggering_asset_events") else []
            as_of, reason = params.get("as_of") or None, params.get("reason") or "manual trigger"
            if events:
                extra = dict(events[-1].extra or {})
                as_of = as_of or extra.get("interval_end")
                reason = extra.get("reason", reason)
            if not as_of:
                keys = validated_keys(lay.validated(spec.dataset.name))
                if not keys:
                    raise AirflowSkipException("no validated batch yet: nothing to train on")
                from pipelines.layout import parse_key

                # the end of the newest validated interval, by the dataset's cadence
                as_of = fc.next_tick(spec.dataset.cadence, parse_key(keys[-1])).isoformat()
            run_key = fc.run_key(dag_run.run_id)
            rebuilt = fc.catch_up_features(spec)
            ts = build_set(spec, lay.validated(spec.dataset.name), REPO_ROOT / "feature_repo", fc.parse_ts(as_of),
                           lay.home / "training" / spec.name / run_key, (lay.features(), lay.feature_cache()))
            log.info("training set as of %s (%s): %d train / %d holdout rows", as_of, reason, ts.train_rows,
                     ts.holdout_rows)
            return {**ts.to_dict(), "as_of": as_of, "reason": reason, "run_key": run_key, "features_rebuilt": rebuilt,
                    "params_override": dict(params.get("params") or {})}

        @task
        def train_challenger(tset: dict) -> dict:
            from pipelines.layout import Layout
            from pipelines.model import train_and_register
            from pipelines.spec import REPO_ROOT
            from pipelines.training import feature_columns

            lay = Layout.from_env()
            feats = feature_columns(spec, REPO_ROOT / "feature_repo")
            tv = train_and_register(spec, tset, feats, tset["params_override"], tset["run_key"],
                                    lay.home / "training" / spec.name / tset["run_key"], tset["reason"])
            return {**tv.to_dict(), "features": feats, "holdout_path": tset["holdout_path"],
                    "as_of": tset["as_of"], "run_key": tset["run_key"]}

        @task
        def evaluate_gate(trained: dict, **context) -> dict:
            from pipelines.gate import evaluate_gate as run_gate
            from pipelines.layout import Layout

            lay = Layout.from_env()
            decision = run_gate(spec, trained["version"], trained["holdout_path"], trained["features"],
                                lay.home / "training" / spec.name / trained["run_key"], fc.actor(context),
                                trained["run_key"])
            log.info("GATE %s v%s: %s", spec.name, trained["version"], decision.reason)
            return {**decision.to_dict(), "as_of": trained["as_of"], "run_key": trained["run_key"]}

        @task(outlets=[fc.champion_asset(spec.name)])
        def promote_champion(decision: dict, **context) -> dict:
            if not decision["promote"]:
                raise AirflowSkipException(f"not promoted — {decision['reason']}")
            from pipelines.gate import PromotionError, promote

            try:
                moved = promote(spec, decision["challenger_version"], decision["reason"],
                                fc.parse_ts(decision["as_of"]), actor=fc.actor(context), run_key=decision["run_key"],
                                expected_champion=decision["champion_version"])
            except PromotionError as exc:   # the champion moved since the gate ran: a retry cannot help
                raise AirflowFailException(str(exc)) from exc
            context["outlet_events"][fc.champion_asset(spec.name)].extra = fc.champion_event(
                spec, "promote", moved, decision["reason"], context)
            log.info("champion of %s is now v%s (previous: %s)", spec.name, moved["champion"], moved["previous"])
            return moved

        @task(trigger_rule="none_failed")   # after a promotion or a rejection (skipped promote), not a failure
        def write_model_card(decision: dict) -> dict:
            from pipelines.layout import Layout
            from pipelines.model_card import write_model_card as write_card

            lay = Layout.from_env()
            return write_card(spec, decision["challenger_version"],
                              lay.home / "training" / spec.name / decision["run_key"])

        decision = evaluate_gate(train_challenger(build_training_set()))
        promote_champion(decision) >> write_model_card(decision)
    return dag


for _spec in fc.specs().values():
    globals()[f"train__{_spec.name}"] = build(_spec)
