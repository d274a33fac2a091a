"""features__<view>: each declared view's table for every validated interval of its dataset, then Feast
materialization. Built once per view, whichever models read it; emits the view's Asset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, task

from flywheel import dagkit as fc

if TYPE_CHECKING:
    from pipelines.spec import DatasetContract


def build(view: str, info: dict[str, Any], contract: DatasetContract, readers: list[str]) -> DAG:
    dataset, owners, contract_cadence = info["dataset"], contract.owners, contract.cadence
    validated = fc.validated_asset(dataset)
    with DAG(
        **fc.data_dag_kwargs(f"features__{view}", owners, "features",
                             [f"view:{view}", f"dataset:{dataset}", *(f"model:{m}" for m in readers)]),
        schedule=[validated],
        doc_md=(f"### Features · view `{view}`\n\nComputes the aggregations declared in "
                f"`feature_repo/definitions.py` ({', '.join(info['features'])}) from the validated batches of "
                f"`{dataset}` (lookback {info['lookback_s'] / 86400:g} days), one parquet table per interval "
                "(rewritten on re-run; later intervals whose windows see a re-validated batch are rebuilt once, "
                "as is any table missing or older than a batch it reads), "
                "then `FeatureStore.materialize` into the online store. Semantics: `pipelines/features/__init__.py`."
                f"\n\n*Read by:* {', '.join(readers) or 'no model yet'}"),
    ) as dag:

        @task
        def build_feature_table(**context) -> list[dict]:
            from pipelines.features import build_view_tables, catch_up, dependent_keys, load_repo, table_keys
            from pipelines.layout import Layout, parse_key

            lay = Layout.from_env()
            declared = load_repo(fc.FEATURE_REPO).view(view)
            out: list[dict] = []
            why: dict[str, str] = {}   # a later table -> the (re-)validated batch its window sees
            existing = table_keys(lay.features(), view)
            events = fc.interval_events(context, validated)
            # contiguous batches (a backfill, a month landed at once) are computed in one pass, one file each
            tables = build_view_tables(declared, lay.validated(dataset), lay.features(),
                                       [(fc.parse_ts(ev["interval_start"]), fc.parse_ts(ev["interval_end"]), ev["key"])
                                        for ev in events])
            for ev, table in zip(events, tables, strict=True):
                out.append({**ev, **table.to_dict()})
                for key in dependent_keys(declared, existing, fc.parse_ts(ev["interval_start"]),
                                          fc.parse_ts(ev["interval_end"])):
                    why.setdefault(key, ev["key"])
            # a past batch (re-)validated late: the later tables whose windows see it are older than it, so they are
            # stale and rebuilt here, once each however many of this run's batches they see (rebuilding them per
            # batch was quadratic in a backfill); so is any table missing or older than a batch it reads (an event
            # Airflow did not deliver)
            for table in catch_up(declared, lay.validated(dataset), lay.features(), contract_cadence,
                                  skip=tuple(iv["key"] for iv in out)):
                start = parse_key(table.interval_key)
                out.append({"interval_start": start.isoformat(),
                            "interval_end": fc.next_tick(contract_cadence, start).isoformat(),
                            "key": table.interval_key, "rebuilt_for": why.get(table.interval_key, "stale"),
                            **table.to_dict()})
            return out

        @task(pool=fc.FEAST_POOL, outlets=[fc.features_asset(view)])
        def materialize_features(intervals: list[dict], **context) -> list[str]:
            from pipelines.features import materialize
            from pipelines.layout import Layout

            lay = Layout.from_env()
            for iv in intervals:
                materialize(fc.FEATURE_REPO, [view], fc.parse_ts(iv["interval_start"]),
                            fc.parse_ts(iv["interval_end"]), tables=(lay.features(), lay.feature_cache()))
            fresh = [iv for iv in intervals if "rebuilt_for" not in iv]
            if fresh:
                last = fresh[-1]
                context["outlet_events"][fc.features_asset(view)].extra = {
                    "view": view, "dataset": dataset,
                    "interval_start": last["interval_start"], "interval_end": last["interval_end"],
                    "key": last["key"], "intervals": [iv["key"] for iv in fresh], "rows": last["rows"],
                    "rebuilt": [iv["key"] for iv in intervals if "rebuilt_for" in iv]}
            return [iv["key"] for iv in intervals]

        materialize_features(build_feature_table())
    return dag


_datasets = fc.datasets()
_specs = fc.specs()
for _view, _info in fc.views().items():
    _readers = [s.name for s in _specs.values() if _view in fc.model_views(s)]
    globals()[f"features__{_view}"] = build(_view, _info, _datasets[_info["dataset"]], _readers)
