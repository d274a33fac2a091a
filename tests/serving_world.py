"""A small real world for the online-serving tests and bench/serving.py: the shipped Feast repo on a fresh SQL
registry and online store (SQLite, or Redis under a project name of its own), feature tables of a few hundred
customers and merchants materialized into it, a validated batch of transactions, and the fraud model trained on
synthetic rows and registered in an MLflow tracking store on SQLite (a file URI: no server).

Not platform code: the model spec, dataset and views are the shipped examples (the platform is tested on what a
user declares)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.spec import REPO_ROOT

REPO = REPO_ROOT / "feature_repo"
SNAPSHOT = datetime(2026, 3, 2, tzinfo=UTC)          # the features' snapshot time (a Monday)
BATCH_START = SNAPSHOT                               # the validated batch: one day after the snapshot
BATCH_END = SNAPSHOT + timedelta(days=7)
CUSTOMERS, MERCHANTS = 400, 80
CATEGORIES = ["grocery", "restaurants", "fuel", "travel", "electronics", "fashion", "health", "entertainment",
              "gaming", "crypto"]
CHANNELS = ["pos", "online", "wallet"]
COUNTRIES = ["US", "GB", "DE", "FR"]


@dataclass
class World:
    home: Path
    repo: Path
    env: dict[str, str]
    spec: Any
    features: list[str]
    batch: Any                        # the validated batch (pandas), rows of BATCH_START..BATCH_END
    versions: list[str] = field(default_factory=list)
    redis_project: str | None = None

    @property
    def validated(self) -> Path:
        return self.home / "data" / "validated" / "transactions"

    @property
    def scores(self) -> Path:
        return self.home / "scores" / self.spec.name


def feast_env(home: Path, online: str, redis: str = "127.0.0.1:6379") -> dict[str, str]:
    env = {"FLYWHEEL_HOME": str(home), "FLYWHEEL_FEAST_REGISTRY": f"sqlite:///{home / 'feast' / 'registry.db'}",
           "FLYWHEEL_FEAST_ONLINE": str(home / "feast" / "online.db"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
           "FLYWHEEL_FEAST_ONLINE_STORE": online, "FLYWHEEL_FEAST_RETRIEVAL": "asof"}
    if online == "redis":
        env["FLYWHEEL_FEAST_REDIS"] = redis
    return env


def redis_client(redis_at: str, **options: Any) -> Any:
    """A redis-py client for a Feast connection string (host:port[,db=N,password=...]), parsed by Feast's own
    Redis online store: the same server, database and password as the store's client."""
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(redis_at)
    return redis.Redis(host=nodes[0]["host"], port=int(nodes[0].get("port") or 6379), **{**options, **params})


def redis_unreachable(redis_at: str = "127.0.0.1:6379") -> str | None:
    try:
        redis_client(redis_at, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001 - any failure to talk to it
        return f"Redis at {redis_at.split(',')[0]} is unreachable ({type(exc).__name__}: {exc})"
    return None


def _feature_tables(home: Path) -> dict[str, Any]:
    """One snapshot per customer and merchant at SNAPSHOT, in the views' table layout (feature_ts, created_ts)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    ts = pd.Timestamp(SNAPSHOT)
    cust = pd.DataFrame({
        "customer_id": np.arange(CUSTOMERS, dtype="int64"), "feature_ts": ts, "created_ts": ts,
        "cust_txn_count_1d": rng.poisson(1, CUSTOMERS).astype("int64"),
        "cust_txn_count_7d": rng.poisson(6, CUSTOMERS).astype("int64"),
        "cust_amount_sum_7d": rng.gamma(2, 200, CUSTOMERS), "cust_amount_mean_30d": rng.gamma(2, 40, CUSTOMERS),
        "cust_amount_max_7d": rng.gamma(2, 90, CUSTOMERS)})
    cust.loc[::17, "cust_amount_mean_30d"] = np.nan            # some missing values, as new customers have
    merch = pd.DataFrame({
        "merchant_id": np.arange(MERCHANTS, dtype="int64"), "feature_ts": ts, "created_ts": ts,
        "merch_txn_count_7d": rng.poisson(40, MERCHANTS).astype("int64"),
        "merch_amount_mean_7d": rng.gamma(2, 50, MERCHANTS), "merch_wallet_share_7d": rng.random(MERCHANTS)})
    tables = {"customer_stats": cust, "merchant_stats": merch}
    for view, frame in tables.items():
        out = home / "features" / view / f"{SNAPSHOT:%Y-%m-%d}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out, index=False)
    return tables


def transactions(n: int, seed: int, start: datetime = BATCH_START, hours: float = 24.0) -> Any:
    """Transactions of the world's customers and merchants, `hours` after `start` (within the views' TTL)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    channel = rng.choice(CHANNELS, n, p=[0.5, 0.35, 0.15])
    category = rng.choice(CATEGORIES, n)
    amount = np.round(rng.gamma(2.0, 80.0, n), 2) + 0.01
    risk = -3.0 + 1.5 * (channel == "online") + 1.2 * np.isin(category, ["crypto", "gaming"]) + amount / 150.0
    return pd.DataFrame({
        "transaction_id": [f"t{seed}-{i}" for i in range(n)],
        "customer_id": rng.integers(0, CUSTOMERS, n).astype("int64"),
        "merchant_id": rng.integers(0, MERCHANTS, n).astype("int64"),
        "category": category, "amount": amount, "channel": channel,
        "country": rng.choice(COUNTRIES, n),
        "event_ts": pd.Timestamp(start) + pd.to_timedelta(rng.uniform(60, hours * 3600, n), unit="s"),
        "is_fraud": (rng.random(n) < 1 / (1 + np.exp(-risk))).astype("int64")})


def _training_frame(tables: dict[str, Any], n: int, seed: int) -> Any:
    """Training rows: transactions joined with their entities' snapshot values, plus a `label`."""
    frame = transactions(n, seed)
    frame = frame.merge(tables["customer_stats"].drop(columns=["feature_ts", "created_ts"]), on="customer_id")
    frame = frame.merge(tables["merchant_stats"].drop(columns=["feature_ts", "created_ts"]), on="merchant_id")
    return frame.assign(label=frame["is_fraud"].astype(float))


def train_version(world: World, run_key: str, params: dict[str, Any], seed: int) -> str:
    """Train and register one version of the fraud model (no alias moved); returns its version."""
    from pipelines.model import train_and_register

    tables = _feature_tables_of(world)
    out = world.home / "work" / run_key
    out.mkdir(parents=True, exist_ok=True)
    train, hold = out / "train.parquet", out / "holdout.parquet"
    _training_frame(tables, 3000, seed).to_parquet(train, index=False)
    _training_frame(tables, 800, seed + 1).to_parquet(hold, index=False)
    tset = {"train_path": str(train), "holdout_path": str(hold), "train_rows": 3000, "holdout_rows": 800,
            "train_sha256": hashlib.sha256(train.read_bytes()).hexdigest(),
            "holdout_sha256": hashlib.sha256(hold.read_bytes()).hexdigest(),
            "window": {"train_start": "2026-01-01T00:00:00+00:00", "holdout_start": "2026-02-20T00:00:00+00:00",
                       "labelled_until": "2026-03-01T00:00:00+00:00"}, "as_of": "2026-03-02T00:00:00+00:00"}
    version = train_and_register(world.spec, tset, world.features, params, run_key, out, f"serving world {run_key}")
    world.versions.append(version.version)
    return version.version


def _feature_tables_of(world: World) -> dict[str, Any]:
    import pandas as pd

    return {v: pd.read_parquet(world.home / "features" / v) for v in ("customer_stats", "merchant_stats")}


def set_champion(world: World, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(world.spec.registered_model_name, "champion", version)


def build(home: Path, online: str = "sqlite", versions: int = 2, redis_at: str = "127.0.0.1:6379") -> World:
    """The world in `home`; sets its environment in os.environ (the caller restores it). Champion: none yet."""
    import mlflow

    from pipelines import features
    from pipelines.spec import load_specs

    home.mkdir(parents=True, exist_ok=True)
    (home / "mlflow").mkdir(exist_ok=True)
    (home / "feast").mkdir(exist_ok=True)
    env = feast_env(home, online, redis_at)
    os.environ.update(env)
    repo, project = REPO, None
    if online == "redis":   # a project of its own: the key suffix in Redis (removed by `teardown`)
        project = f"flywheel_serving_{uuid.uuid4().hex[:10]}"
        repo = home / "feature_repo"
        repo.mkdir(exist_ok=True)
        shutil.copy(REPO / "definitions.py", repo / "definitions.py")
        text, n = re.subn(r"(?m)^project: *flywheel\b", f"project: {project}",
                          (REPO / "feature_store.yaml").read_text())
        assert n == 1
        (repo / "feature_store.yaml").write_text(text)
    spec = load_specs()["fraud"]
    _feature_tables(home)
    features.apply_feature_repo(repo)
    features.materialize(repo, ["customer_stats", "merchant_stats"], SNAPSHOT - timedelta(days=1),
                         SNAPSHOT + timedelta(hours=1))
    from pipelines.training import feature_columns

    names = feature_columns(spec, repo)
    batch = transactions(600, 11)
    world = World(home, repo, env, spec, names, batch, redis_project=project)
    world.validated.mkdir(parents=True, exist_ok=True)
    batch.to_parquet(world.validated / f"{BATCH_START:%Y-%m-%d}.parquet", index=False)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.create_experiment(f"flywheel/{spec.name}", artifact_location=(home / "mlflow" / "artifacts").as_uri())
    small = {"max_depth": 3, "num_boost_round": 30, "early_stopping_rounds": 5}
    for i in range(versions):
        train_version(world, f"v{i + 1}", {**small, "max_depth": 2 + i}, seed=100 + i)
    return world


def teardown(world: World) -> None:
    """Remove the world's keys from Redis (nothing to do for SQLite: the files go with the folder)."""
    if world.redis_project is None:
        return
    client = redis_client(world.env["FLYWHEEL_FEAST_REDIS"])
    left = list(client.scan_iter(match=b"*" + world.redis_project.encode(), count=1000))
    if left:
        client.delete(*left)
