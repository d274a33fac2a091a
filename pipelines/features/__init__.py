"""Feature stage: declared views computed by one engine, served by Feast offline and online.

- `declarations`: the views as declared in feature_repo/definitions.py (Feast `BatchFeatureView` with
  `Aggregation`s and Flywheel tags), checked against the dataset contracts;
- `tables`: each view's snapshots per interval of its source dataset, computed by
  pipelines/feature_engine.py into the parquet files the view's Feast FileSource reads;
- `store`: Feast configuration, apply, materialize (online store), online reads;
- `retrieval`: point-in-time training sets (DuckDB ASOF JOIN from the registry's definitions, or Feast's).

Point-in-time semantics, end to end (the leakage oracle in tests/integration/test_feature_store.py
checks them for every declared view):

1. A view with granularity g takes a snapshot of every active entity at each t = k*g (UTC). The feature
   of an aggregation with window W at t summarises the entity's events with timestamp in [t - W, t):
   half-open, as Chronon's and Tecton's windows; an event exactly at t is in the snapshot at t + g.
   An entity is active at t when it has an event in [t - lookback, t) (lookback = the largest window).
2. A row (training, scoring or an online request) at time s reads, per view, the latest snapshot with
   t <= s and t >= s - ttl (ttl = 3g unless declared); otherwise the features are missing (NaN). So a
   row never sees its own event or anything after it, and events in [t, s) are not seen yet either:
   features are at most one granularity stale.
3. The snapshots of interval [start, end) of the source dataset are t in (start, end], written to
   `<view>/<start key>.parquet` with `created_ts` = end; re-validating a past batch rebuilds its
   interval and every later table whose snapshots see it (t < end + lookback). Whatever the order of
   events, a table older than a validated batch it reads is stale (`stale_keys`): every features run, and
   every training and scoring run before it reads, rebuilds those first (`catch_up`).
"""

from pipelines.features.declarations import DeclaredView, FeatureRepo, load_repo, view_index
from pipelines.features.retrieval import (
    ViewRetrieval,
    asof_sql,
    historical_features,
    historical_features_asof,
    retrieval_plan,
)
from pipelines.features.store import (
    ONLINE_STORE_ENV,
    REDIS_ENV,
    RETRIEVAL_ENV,
    apply_feature_repo,
    feature_store,
    materialize,
    online_features,
    repo_config,
)
from pipelines.features.tables import (
    ViewTable,
    build_view_table,
    build_view_tables,
    catch_up,
    dependent_keys,
    read_validated,
    stale_keys,
    sync_feature_tables,
    table_keys,
    validated_keys,
)

__all__ = [
    "ONLINE_STORE_ENV", "REDIS_ENV", "RETRIEVAL_ENV", "DeclaredView", "FeatureRepo", "ViewRetrieval", "ViewTable",
    "apply_feature_repo", "asof_sql", "build_view_table", "build_view_tables", "catch_up", "dependent_keys",
    "feature_store", "historical_features", "historical_features_asof", "load_repo", "materialize", "online_features",
    "read_validated", "repo_config", "retrieval_plan", "stale_keys", "sync_feature_tables", "table_keys",
    "validated_keys", "view_index",
]
