"""The FeatureService's views read from the online store, for request rows.

One `get_online_features` call per request (Feast serializes the entity keys, reads each view from SQLite or
Redis, and decodes the values: p99 ~0.5 ms for one row on either store here, bench/serving.py), with the event
timestamps, from which each view's freshness is the row's event time minus the snapshot's time. As the
training join does (pipelines.features.online_features), a value older than its view's TTL at the row's event
time is missing. An entity with no value at all in a view is *unknown* to that view (Feast answers timestamp 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewInfo:
    name: str
    join_keys: tuple[str, ...]
    features: tuple[str, ...]
    ttl_s: float | None                # None: no TTL


@dataclass
class OnlineRows:
    values: dict[str, list[Any]]                  # feature -> one value per row (None: missing)
    age_s: list[dict[str, float | None]]          # per row: view -> seconds between the snapshot and the event
    unknown: list[list[str]]                      # per row: the views that hold nothing for its entity
    stale: list[list[str]]                        # per row: the views whose value is older than the TTL


class OnlineFeatures:
    """The online reads of one FeatureService (one FeatureStore, built once)."""

    def __init__(self, repo_path: Path, service: str) -> None:
        from pipelines.features import feature_store

        self.repo_path, self.service = repo_path, service
        self.store: FeatureStore = feature_store(repo_path)
        self.fs = self.store.get_feature_service(service)
        views = []
        for proj in self.fs.feature_view_projections:
            fv = self.store.get_feature_view(proj.name)
            keys = tuple(fv.join_keys) if getattr(fv, "join_keys", None) else tuple(
                c.name for c in fv.entity_columns)
            ttl = fv.ttl.total_seconds() if fv.ttl else None
            views.append(ViewInfo(proj.name, keys, tuple(f.name for f in proj.features), ttl))
        self.views = tuple(views)
        self.join_keys = list(dict.fromkeys(k for v in self.views for k in v.join_keys))
        self.names = [f for v in self.views for f in v.features]

    def read(self, rows: list[dict[str, Any]], at: list[float]) -> OnlineRows:
        """The service's values for `rows` (each holding the join keys), as of `at` (epoch seconds per row)."""
        entity_rows = [{k: int(r[k]) if isinstance(r[k], float) else r[k] for k in self.join_keys} for r in rows]
        got = self.store.get_online_features(features=self.fs, entity_rows=entity_rows).to_dict(
            include_event_timestamps=True)
        n = len(rows)
        values: dict[str, list[Any]] = {}
        age: list[dict[str, float | None]] = [{} for _ in range(n)]
        unknown: list[list[str]] = [[] for _ in range(n)]
        stale: list[list[str]] = [[] for _ in range(n)]
        for view in self.views:
            stamps = got[f"{view.features[0]}__ts"] if view.features else [0] * n
            expired = []
            for i in range(n):
                ts = stamps[i]
                if not ts:
                    unknown[i].append(view.name)
                    age[i][view.name] = None
                    expired.append(False)
                    continue
                a = at[i] - float(ts)
                age[i][view.name] = a
                old = view.ttl_s is not None and a > view.ttl_s
                expired.append(old)
                if old:
                    stale[i].append(view.name)
            for f in view.features:
                col = got[f]
                values[f] = [None if expired[i] else col[i] for i in range(n)] if any(expired) else list(col)
        return OnlineRows(values, age, unknown, stale)

    def ping(self) -> None:
        """Raises when the online store does not answer (a read of a key that need not exist)."""
        probe = {k: 0 for k in self.join_keys}
        self.store.get_online_features(features=self.fs, entity_rows=[probe]).to_dict()
