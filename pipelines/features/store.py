"""Feast configuration, `apply`, materialization and online reads.

Every Flywheel code path builds its FeatureStore with `feature_store(repo)`: feature_store.yaml with its
${VAR}s expanded and the online store chosen by the environment (SQLite embedded, Redis scaled out).
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.util import as_utc

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from pipelines.storage import Location

log = logging.getLogger(__name__)

ONLINE_STORE_ENV = "FLYWHEEL_FEAST_ONLINE_STORE"   # sqlite (default) | redis
REDIS_ENV = "FLYWHEEL_FEAST_REDIS"                 # host:port[,db=N,password=...] of the Redis online store
RETRIEVAL_ENV = "FLYWHEEL_FEAST_RETRIEVAL"         # asof (default) | feast: how training sets are joined


def repo_config(repo_path: Path) -> RepoConfig:
    """feature_store.yaml with ${VAR}s expanded, and the online store chosen by the environment.

    FLYWHEEL_FEAST_ONLINE_STORE=sqlite (default) keeps the yaml's SQLite store at FLYWHEEL_FEAST_ONLINE;
    FLYWHEEL_FEAST_ONLINE_STORE=redis replaces it with Redis at FLYWHEEL_FEAST_REDIS (host:port[,db=N,...]).
    """
    import yaml
    from feast.repo_config import RepoConfig

    yaml_path = repo_path / "feature_store.yaml"
    raw = yaml.safe_load(os.path.expandvars(yaml_path.read_text()))
    kind = (os.environ.get(ONLINE_STORE_ENV) or "sqlite").strip().lower()
    if kind == "redis":
        conn = (os.environ.get(REDIS_ENV) or "").strip()
        if not conn:
            raise ValueError(f"{ONLINE_STORE_ENV}=redis needs {REDIS_ENV}=host:port (e.g. 127.0.0.1:6379); "
                             "see .env.example.")
        raw["online_store"] = {"type": "redis", "connection_string": conn}
    elif kind != "sqlite":
        raise ValueError(f"{ONLINE_STORE_ENV}={kind!r} is not supported: use sqlite (default) or redis.")
    paths = [part.get("path") if isinstance(part, dict) else part
             for part in (raw.get("registry"), raw.get("online_store"))]
    unset = sorted({m for v in paths if isinstance(v, str) for m in re.findall(r"\$\{(\w+)\}", v)})
    if unset:
        raise ValueError(f"{yaml_path}: set {', '.join(unset)} in the environment (see .env.example).")
    config = RepoConfig(**raw)
    config.repo_path = repo_path
    return config


def feature_store(repo_path: Path) -> FeatureStore:
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_path), config=repo_config(repo_path))


def apply_feature_repo(repo_path: Path) -> list[str]:
    """Register the repo's definitions (the programmatic `feast apply`). Idempotent.

    Declared aggregations are written into each view's `flywheel.aggregations` tag on the way (Feast's
    registry keeps tags, not aggregations), and TTLs not declared are set from the granularity. A new view's
    SQLite online table is created first, in a layout that writes one B-tree per row instead of Feast's three
    (pipelines.features.online.create_sqlite_tables).
    """
    from feast import FeatureView

    from pipelines.features.declarations import load_repo, view_index
    from pipelines.features.online import create_sqlite_tables

    repo = load_repo(repo_path)
    store = feature_store(repo_path)
    made = create_sqlite_tables(store, [o for o in repo.objects if isinstance(o, FeatureView) and o.online])
    if made:
        log.info("online store: %s created in SQLite's one-B-tree layout", ", ".join(made))
    store.apply(repo.objects)
    view_index(repo_path)   # the DAG files' parse-time index, refreshed while Feast is loaded anyway
    return sorted(getattr(o, "name", "?") for o in repo.objects)


def materialize(repo_path: Path, views: list[str], start: datetime, end: datetime,
                tables: tuple[Location, Path] | None = None, engine: str = "bulk") -> dict[str, str]:
    """Load the latest feature values of [start, end] into the online store; returns view -> end used.

    `tables` = (store root of the feature tables, local cache Feast reads): synced first.
    A backfill (an interval older than one already materialized) is widened to end at the newest
    materialized end: the online store then keeps each entity's newest value instead of the
    backfill's older one (the SQLite store overwrites unconditionally; Redis compares timestamps).

    engine `bulk` (default) writes what Feast's `materialize` would, column by column
    (pipelines.features.online), and falls back to Feast's own `materialize` for what it does not handle
    (logged with the reason); `feast` always calls Feast's. Both record the interval in the registry.
    """
    if engine not in ("bulk", "feast"):
        raise ValueError(f"materialize engine {engine!r} is not supported: use bulk (default) or feast.")
    if tables:
        from pipelines.features.tables import sync_feature_tables

        sync_feature_tables(tables[0], tables[1], views)
    from pipelines.features import online

    store = feature_store(repo_path)
    used = {}
    for view in views:
        done = [as_utc(e) for _, e in store.get_feature_view(view).materialization_intervals]
        until = max([as_utc(end), *done])
        if until > as_utc(end):
            log.info("%s: backfill of %s..%s widened to end at %s (already materialized up to there)",
                     view, start, end, until)
        why = "asked for" if engine == "feast" else online.unsupported(store, view)
        if why is None:
            read, written = online.materialize_view(store, view, start, until)
            log.info("%s: %d entity rows of %s..%s, %d written to the %s online store in bulk", view, read, start,
                     until, written, store.config.online_store.type)
        else:
            log.info("%s: materialized through Feast's materialize (%s)", view, why)
            store.materialize(start_date=start, end_date=until, feature_views=[view])
        used[view] = until.isoformat()
    return used


def online_features(repo_path: Path, service: str, entity_rows: list[dict[str, Any]],
                    as_of: datetime | None = None) -> dict[str, list[Any]]:
    """The service's materialized values for `entity_rows` (serving), from the online store.

    With `as_of` (the serving time), a value older than its view's TTL at `as_of` is None, as the
    training join would have it: the online store keeps an entity's last value forever (an entity
    that stopped having snapshots keeps a stale one), Feast does not check the TTL on reads.
    """
    store = feature_store(repo_path)
    fs = store.get_feature_service(service)
    response = store.get_online_features(features=fs, entity_rows=entity_rows)
    if as_of is None:
        return response.to_dict()
    got = response.to_dict(include_event_timestamps=True)
    at = as_utc(as_of).timestamp()
    for proj in fs.feature_view_projections:
        ttl = store.get_feature_view(proj.name).ttl
        for f in proj.features:
            stamps = got.pop(f"{f.name}__ts")
            if ttl:
                oldest = at - ttl.total_seconds()
                got[f.name] = [v if s >= oldest else None for v, s in zip(got[f.name], stamps, strict=True)]
    return got
