"""score__<model>: batch-score each featurized interval with `@champion`; the production log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec


def build(spec: ModelSpec) -> DAG:
    features = fc.features_asset(spec.name)
    with DAG(
        **fc.dag_kwargs(spec, "score", "score"),
        schedule=[features],
        doc_md=fc.doc(spec, "Batch scoring",
                      f"Scores the interval with `models:/{spec.registered_model_name}@champion` and writes "
                      "predictions with the model version (one file per interval)."),
    ) as dag:

        @task(outlets=[fc.scores_asset(spec.name)])
        def score_batch(**context) -> list[dict]:
            from pipelines.layout import Layout
            from pipelines.score import score_interval
            from pipelines.spec import REPO_ROOT

            lay = Layout.from_env()
            events = fc.interval_events(context, features)
            results = []
            for ev in events:
                res = score_interval(spec, lay.validated(spec.name), REPO_ROOT / "feature_repo",
                                     fc.parse_ts(ev["interval_start"]), fc.parse_ts(ev["interval_end"]),
                                     ev["key"], lay.scores(spec.name),
                                     tables=(lay.features(), lay.feature_cache()))
                if res is not None:
                    results.append({**ev, **res.to_dict()})
            if not results:
                raise AirflowSkipException(f"no champion for {spec.registered_model_name} yet: nothing scored "
                                           "(train one with the train DAG)")
            last = results[-1]
            context["outlet_events"][fc.scores_asset(spec.name)].extra = {
                "interval_start": last["interval_start"], "interval_end": last["interval_end"],
                "key": last["key"], "model_version": last["model_version"], "rows": last["rows"]}
            return results

        score_batch()
    return dag


for _spec in fc.specs().values():
    globals()[f"score__{_spec.name}"] = build(_spec)
