"""Feast definitions of the examples (card transactions, movie ratings): entities, computed feature views, one
service per model.

Each view is a Feast `BatchFeatureView` declaring its `aggregations` over a dataset of datasets/ (tag
`flywheel.dataset`), at a snapshot granularity (tag `flywheel.granularity`). Flywheel computes them
(pipelines/feature_engine.py; Feast's local engine cannot) into the view's table, one parquet file per
interval under <FLYWHEEL_DATA_URI>/features/<view>/ (FLYWHEEL_HOME by default), which the view's
FileSource reads (from $FLYWHEEL_HOME/features/<view>/, a local cache that readers sync from the store
when the store is remote). The snapshot at `feature_ts` = t summarises the events in [t - window, t);
a row at time s reads the latest snapshot with t <= s, at most the TTL old (3 days for daily views).
Semantics: pipelines/features/__init__.py.

`share` aggregations name the value they count on the output field: tags={"flywheel.match": "<value>"}.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import BatchFeatureView, Entity, FeatureService, Field, FileSource
from feast.aggregation import Aggregation
from feast.types import Float64, Int64
from feast.value_type import ValueType

FEATURES_ROOT = Path(os.environ.get("FLYWHEEL_HOME", Path(__file__).resolve().parent.parent / ".flywheel")) / "features"
DAILY_FROM_TRANSACTIONS = {"flywheel.dataset": "transactions", "flywheel.granularity": "daily"}
DAILY_FROM_RATINGS = {"flywheel.dataset": "ratings", "flywheel.granularity": "daily"}

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                  description="A card holder.")
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64,
                  description="A card acceptor.")


def table(view: str) -> FileSource:
    """The view's table: Flywheel writes it, Feast reads it."""
    return FileSource(name=f"{view}_table", path=str(FEATURES_ROOT / view / "*.parquet"),
                      timestamp_field="feature_ts", created_timestamp_column="created_ts")


DAY, WEEK, MONTH, QUARTER = timedelta(days=1), timedelta(days=7), timedelta(days=30), timedelta(days=90)

customer_stats = BatchFeatureView(
    name="customer_stats",
    entities=[customer],
    source=table("customer_stats"),
    aggregations=[
        Aggregation(column="transaction_id", function="count", time_window=DAY, name="cust_txn_count_1d"),
        Aggregation(column="transaction_id", function="count", time_window=WEEK, name="cust_txn_count_7d"),
        Aggregation(column="amount", function="sum", time_window=WEEK, name="cust_amount_sum_7d"),
        Aggregation(column="amount", function="mean", time_window=MONTH, name="cust_amount_mean_30d"),
        Aggregation(column="amount", function="max", time_window=WEEK, name="cust_amount_max_7d"),
    ],
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="cust_txn_count_1d", dtype=Int64),
        Field(name="cust_txn_count_7d", dtype=Int64),
        Field(name="cust_amount_sum_7d", dtype=Float64),
        Field(name="cust_amount_mean_30d", dtype=Float64),
        Field(name="cust_amount_max_7d", dtype=Float64),
    ],
    tags=DAILY_FROM_TRANSACTIONS,
    online=True,
    description="A customer's recent spending, snapshot daily.",
)

merchant_stats = BatchFeatureView(
    name="merchant_stats",
    entities=[merchant],
    source=table("merchant_stats"),
    aggregations=[
        Aggregation(column="transaction_id", function="count", time_window=WEEK, name="merch_txn_count_7d"),
        Aggregation(column="amount", function="mean", time_window=WEEK, name="merch_amount_mean_7d"),
        Aggregation(column="channel", function="share", time_window=WEEK, name="merch_wallet_share_7d"),
    ],
    schema=[
        Field(name="merchant_id", dtype=Int64),
        Field(name="merch_txn_count_7d", dtype=Int64),
        Field(name="merch_amount_mean_7d", dtype=Float64),
        Field(name="merch_wallet_share_7d", dtype=Float64, tags={"flywheel.match": "wallet"}),
    ],
    tags=DAILY_FROM_TRANSACTIONS,
    online=True,
    description="A merchant's recent traffic, snapshot daily.",
)

fraud_features = FeatureService(name="fraud_features", features=[customer_stats, merchant_stats],
                                description="Features of models/fraud.yaml")
spend_features = FeatureService(name="spend_features", features=[customer_stats],
                                description="Features of models/spend.yaml")


# ---- movie ratings (datasets/ratings.yaml): a user's and a movie's recent ratings, for models/movie_rating.yaml

user = Entity(name="user", join_keys=["userId"], value_type=ValueType.INT64, description="A MovieLens user.")
movie = Entity(name="movie", join_keys=["movieId"], value_type=ValueType.INT64, description="A movie of the catalogue.")

user_ratings = BatchFeatureView(
    name="user_ratings",
    entities=[user],
    source=table("user_ratings"),
    aggregations=[
        Aggregation(column="rating_id", function="count", time_window=MONTH, name="user_ratings_30d"),
        Aggregation(column="rating_id", function="count", time_window=QUARTER, name="user_ratings_90d"),
        Aggregation(column="rating", function="mean", time_window=QUARTER, name="user_mean_rating_90d"),
        Aggregation(column="rating", function="std", time_window=QUARTER, name="user_rating_std_90d"),
    ],
    schema=[
        Field(name="userId", dtype=Int64),
        Field(name="user_ratings_30d", dtype=Int64),
        Field(name="user_ratings_90d", dtype=Int64),
        Field(name="user_mean_rating_90d", dtype=Float64),
        Field(name="user_rating_std_90d", dtype=Float64),
    ],
    tags=DAILY_FROM_RATINGS,
    online=True,
    description="How much and how generously a user rated over the last 90 days, snapshot daily.",
)

movie_ratings = BatchFeatureView(
    name="movie_ratings",
    entities=[movie],
    source=table("movie_ratings"),
    aggregations=[
        Aggregation(column="rating_id", function="count", time_window=QUARTER, name="movie_ratings_90d"),
        Aggregation(column="rating", function="mean", time_window=QUARTER, name="movie_mean_rating_90d"),
    ],
    schema=[
        Field(name="movieId", dtype=Int64),
        Field(name="movie_ratings_90d", dtype=Int64),
        Field(name="movie_mean_rating_90d", dtype=Float64),
    ],
    tags=DAILY_FROM_RATINGS,
    online=True,
    description="How often and how well a movie was rated over the last 90 days, snapshot daily.",
)

movie_rating_features = FeatureService(name="movie_rating_features", features=[user_ratings, movie_ratings],
                                       description="Features of models/movie_rating.yaml")
