"""Feast definitions: entities, sources, feature views and one feature service per model.

Feature tables are written by pipelines/features.py as one parquet file per data interval under
<FLYWHEEL_DATA_URI>/features/<view>/ (FLYWHEEL_HOME by default); the DuckDB offline store reads them
with a glob from $FLYWHEEL_HOME/features/<view>/ (the same folder by default, else a local cache that
every reader syncs from the store first: pipelines.features.sync_feature_tables). Each holds one daily
snapshot per entity, stamped `event_ts` at the end of the day it summarises, with `created_ts` the
interval end; no (entity, event_ts) is written twice (should a file from elsewhere repeat one, the
row with the latest `created_ts` wins, offline and online). A row at time t sees the latest snapshot
stamped <= t and at most `ttl` old: with daily snapshots, 3 days tolerate a late or missed day.

These are the only definitions: training sets, materialization and online reads all take their
sources, timestamps, TTLs, join keys and features from the registry these objects are applied to.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

FEATURES_ROOT = Path(os.environ.get("FLYWHEEL_HOME", Path(__file__).resolve().parent.parent / ".flywheel")) / "features"

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                  description="A card holder.")
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64,
                  description="A card acceptor.")


def _source(view: str) -> FileSource:
    return FileSource(name=f"{view}_source", path=str(FEATURES_ROOT / view / "*.parquet"),
                      timestamp_field="event_ts", created_timestamp_column="created_ts")


customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=3),
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="cust_txn_count_1d", dtype=Int64),
        Field(name="cust_txn_count_7d", dtype=Int64),
        Field(name="cust_amount_sum_7d", dtype=Float64),
        Field(name="cust_amount_mean_30d", dtype=Float64),
        Field(name="cust_amount_max_7d", dtype=Float64),
    ],
    source=_source("customer_stats"),
    online=True,
    description="Daily snapshot of a customer's recent spending (stats over days up to the snapshot).",
)

merchant_stats = FeatureView(
    name="merchant_stats",
    entities=[merchant],
    ttl=timedelta(days=3),
    schema=[
        Field(name="merchant_id", dtype=Int64),
        Field(name="merch_txn_count_7d", dtype=Int64),
        Field(name="merch_amount_mean_7d", dtype=Float64),
        Field(name="merch_wallet_share_7d", dtype=Float64),
    ],
    source=_source("merchant_stats"),
    online=True,
    description="Daily snapshot of a merchant's recent traffic.",
)

fraud_features = FeatureService(name="fraud_features", features=[customer_stats, merchant_stats],
                                description="Features of models/fraud.yaml")
spend_features = FeatureService(name="spend_features", features=[customer_stats],
                                description="Features of models/spend.yaml")
