"""score__<model>: batch-score each featurized interval with `@champion`; the production log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec


def build(spec: ModelSpec, views: dict[str, str]) -> DAG:
    """`views`: the model's FeatureService views -> their source dataset."""
    # every view of the FeatureService must be built (Asset AND-condition); the intervals to score are those
    # of the model's own dataset: from its views, or from its validated batches when no view reads it
    own = [fc.features_asset(v) for v, ds in views.items() if ds == spec.dataset.name]
    interval_assets = own or [fc.validated_asset(spec.dataset.name)]
    schedule = [fc.features_asset(v) for v in views] + ([] if own else interval_assets)
    with DAG(
        **fc.dag_kwargs(spec, "score", "score"),
        schedule=schedule,
        doc_md=fc.doc(spec, "Batch scoring",
                      f"Runs once every view of `{spec.feature_service}` ({', '.join(views) or 'none'}) is built for "
                      f"an interval of `{spec.dataset.name}`; scores its rows with "
                      f"`models:/{spec.registered_model_name}@champion` and writes predictions with the model "
                      "version (one file per interval)."),
    ) as dag:

        @task(outlets=[fc.scores_asset(spec.name)])
        def score_batch(**context) -> list[dict]:
            from pipelines.layout import Layout
            from pipelines.score import score_interval
            from pipelines.spec import REPO_ROOT

            lay = Layout.from_env()
            by_key = {ev["key"]: ev for asset in interval_assets for ev in fc.interval_events(context, asset)}
            events = [by_key[k] for k in sorted(by_key)]
            results = []
            if events:
                fc.catch_up_features(spec)
            for ev in events:
                res = score_interval(spec, lay.validated(spec.dataset.name), REPO_ROOT / "feature_repo",
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


_views = fc.views()
for _spec in fc.specs().values():
    globals()[f"score__{_spec.name}"] = build(_spec, {v: _views[v]["dataset"] for v in fc.model_views(_spec)})
