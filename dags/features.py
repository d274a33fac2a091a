"""features__<model>: feature tables for each validated interval, then Feast materialization."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import DAG, task

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec


def build(spec: ModelSpec) -> DAG:
    validated = fc.validated_asset(spec.name)
    with DAG(
        **fc.dag_kwargs(spec, "features", "features"),
        schedule=[validated],
        doc_md=fc.doc(spec, "Features",
                      f"Daily snapshots for the views {', '.join(spec.feature_views)} from the validated "
                      "interval (one parquet file per interval, rewritten on re-run), then "
                      "`FeatureStore.materialize(start, end)` into the online store."),
    ) as dag:

        @task
        def build_feature_tables(**context) -> list[dict]:
            from pipelines.features import build_feature_tables as build_tables
            from pipelines.layout import Layout

            lay = Layout.from_env()
            out = []
            for ev in fc.interval_events(context, validated):
                tables = build_tables(lay.validated(spec.name), lay.features(), list(spec.feature_views),
                                      fc.parse_ts(ev["interval_start"]), fc.parse_ts(ev["interval_end"]), ev["key"])
                out.append({**ev, **tables.to_dict()})
            return out

        @task(pool=fc.FEAST_POOL, outlets=[fc.features_asset(spec.name)])
        def materialize_features(intervals: list[dict], **context) -> list[str]:
            from pipelines.features import materialize
            from pipelines.layout import Layout
            from pipelines.spec import REPO_ROOT

            lay = Layout.from_env()
            for iv in intervals:
                materialize(REPO_ROOT / "feature_repo", list(spec.feature_views),
                            fc.parse_ts(iv["interval_start"]), fc.parse_ts(iv["interval_end"]),
                            tables=(lay.features(), lay.feature_cache()))
            if intervals:
                last = intervals[-1]
                context["outlet_events"][fc.features_asset(spec.name)].extra = {
                    "interval_start": last["interval_start"], "interval_end": last["interval_end"],
                    "key": last["key"], "intervals": [iv["key"] for iv in intervals]}
            return [iv["key"] for iv in intervals]

        materialize_features(build_feature_tables())
    return dag


for _spec in fc.specs().values():
    globals()[f"features__{_spec.name}"] = build(_spec)
