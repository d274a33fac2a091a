"""Feature declarations: what `feature_repo/definitions.py` declares, in Feast's own vocabulary.

A computed view is a Feast `BatchFeatureView` whose `aggregations` Flywheel computes (Feast 0.67 accepts
them in Python but its local engine cannot compute time windows and its registry drops them):

    BatchFeatureView(
        name="...", entities=[...],                    # join keys: the entities' join keys
        source=FileSource(path=<the view's table>, timestamp_field=..., created_timestamp_column=...),
        aggregations=[Aggregation(column, function, time_window, name=...)],
        schema=[Field(name=<join key>, ...), Field(name=<aggregation name>, dtype=...), ...],
        tags={"flywheel.dataset": "<dataset>", "flywheel.granularity": "daily" | "hourly"},
    )

- `flywheel.dataset`: the dataset (datasets/<name>.yaml) whose validated batches feed the view; the
  events' time is the contract's `timestamp` column; aggregation columns and join keys are its columns.
- `flywheel.granularity`: how often a snapshot is taken (default daily).
- `function`: count, sum, mean, min, max, std, count_distinct, last or share. `share` is the share of
  rows whose column equals a value, declared on the output field: `Field(..., tags={"flywheel.match": "v"})`
  (a string; for an int or float column it is parsed as a number).
- The lookback is the largest window; the TTL, unless declared, is 3 granularities (a snapshot older
  than that is not served: two missed snapshots are tolerated).

Flywheel reads the definitions module itself (`load_repo`), and writes each view's aggregations into
its `flywheel.aggregations` tag when it applies them, so readers of the registry find them too.
The point-in-time semantics are in pipelines/feature_engine.py and pipelines/features/__init__.py.

DAG files need the views' names and datasets at parse time without importing Feast (4-5 s): `view_index`
reads them from a small JSON cache keyed by the definitions file's hash (rebuilt when it changes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.spec import SpecError

if TYPE_CHECKING:
    from pipelines.feature_engine import ViewSpec

DATASET_TAG = "flywheel.dataset"
GRANULARITY_TAG = "flywheel.granularity"
MATCH_TAG = "flywheel.match"
AGGREGATIONS_TAG = "flywheel.aggregations"
GRANULARITIES = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
TTL_GRANULES = 3
DEFINITIONS = "definitions.py"


@dataclass(frozen=True)
class DeclaredView:
    """A computed feature view as Flywheel runs it."""
    name: str
    dataset: str
    engine: ViewSpec                  # what pipelines/feature_engine.py computes
    ttl: timedelta
    features: tuple[str, ...]
    description: str = ""

    @property
    def join_keys(self) -> tuple[str, ...]:
        return self.engine.join_keys

    @property
    def lookback(self) -> timedelta:
        return self.engine.lookback


@dataclass(frozen=True)
class FeatureRepo:
    views: dict[str, DeclaredView]
    services: dict[str, tuple[str, ...]]   # FeatureService -> its views
    objects: list[Any]                     # the Feast objects to apply
    path: Path

    def view(self, name: str) -> DeclaredView:
        if name not in self.views:
            raise SpecError(f"{self.path / DEFINITIONS}: no computed feature view {name!r}; declared: "
                            f"{sorted(self.views)}.")
        return self.views[name]

    def service_views(self, service: str) -> tuple[str, ...]:
        if service not in self.services:
            raise SpecError(f"{self.path / DEFINITIONS}: no FeatureService {service!r}; declared: "
                            f"{sorted(self.services)}.")
        return self.services[service]


def _module(repo_path: Path) -> Any:
    path = repo_path / DEFINITIONS
    spec = importlib.util.spec_from_file_location("flywheel_feature_definitions", path)
    if spec is None or spec.loader is None:
        raise SpecError(f"{path}: cannot be imported; it must be a Python file of Feast definitions.")
    module = importlib.util.module_from_spec(spec)
    import warnings

    with warnings.catch_warnings():   # "Batch feature views are experimental": we know, and compute them ourselves
        warnings.simplefilter("ignore", RuntimeWarning)
        spec.loader.exec_module(module)
    return module


def _match_value(raw: str, column_type: str) -> Any:
    if column_type == "int":
        return int(raw)
    if column_type == "float":
        return float(raw)
    return raw


def load_repo(repo_path: Path, datasets: dict[str, Any] | None = None) -> FeatureRepo:
    """Read and check every declaration; raises SpecError listing every problem, with file and view."""
    from feast import BatchFeatureView, Entity, FeatureService, FeatureView
    from feast.infra.offline_stores.file_source import FileSource

    from pipelines.feature_engine import AggregationSpec, ViewSpec, check_view
    from pipelines.spec import load_datasets

    where = repo_path / DEFINITIONS
    module = _module(repo_path)
    datasets = datasets if datasets is not None else load_datasets()
    objects = [v for v in vars(module).values() if isinstance(v, (Entity, FeatureView, FeatureService))]
    entities = {o.name: o for o in objects if isinstance(o, Entity)}
    problems: list[str] = []
    views: dict[str, DeclaredView] = {}
    for fv in (o for o in objects if isinstance(o, FeatureView)):
        aggs = list(getattr(fv, "aggregations", None) or []) if isinstance(fv, BatchFeatureView) else []
        at = f"{where}: view {fv.name}"
        if not aggs:
            problems.append(f"{at}: declares no aggregations; Flywheel computes BatchFeatureViews with "
                            "`aggregations=[Aggregation(column, function, time_window, name=...)]`.")
            continue
        tags = dict(fv.tags or {})
        dataset = tags.get(DATASET_TAG)
        contract = datasets.get(dataset) if dataset else None
        if contract is None:
            problems.append(f"{at}: tag `{DATASET_TAG}` must name a dataset of datasets/ ({sorted(datasets)}), "
                            f"got {dataset!r}.")
            continue
        gran_name = tags.get(GRANULARITY_TAG, "daily")
        if gran_name not in GRANULARITIES:
            problems.append(f"{at}: tag `{GRANULARITY_TAG}` {gran_name!r} must be one of {sorted(GRANULARITIES)}.")
            continue
        granularity = GRANULARITIES[gran_name]
        src = fv.batch_source
        if not isinstance(src, FileSource) or not src.timestamp_field:
            problems.append(f"{at}: the source must be a FileSource over the view's table, with timestamp_field.")
            continue
        types = {c.name: c.type for c in contract.columns}
        join_keys = tuple(entities[e].join_key for e in fv.entities) if all(e in entities for e in fv.entities) else ()
        if not join_keys:
            problems.append(f"{at}: its entities {fv.entities} must be declared Entities with join keys.")
            continue
        for k in join_keys:
            if k not in types:
                problems.append(f"{at}: join key `{k}` is not a column of {contract.path.name}.")
        fields = {f.name: f for f in fv.schema}
        specs = []
        for a in aggs:
            name = a.resolved_name(a.time_window)
            if a.column not in types:
                problems.append(f"{at}: feature {name} aggregates `{a.column}`, which is not a column of "
                                f"{contract.path.name} ({', '.join(types)}).")
                continue
            if name not in fields:
                problems.append(f"{at}: feature {name} has no Field in `schema`; add Field(name={name!r}, dtype=...).")
                continue
            raw_match = (fields[name].tags or {}).get(MATCH_TAG)
            try:
                match = _match_value(raw_match, types[a.column]) if raw_match is not None else None
            except ValueError:
                problems.append(f"{at}: feature {name}: `{MATCH_TAG}` {raw_match!r} is not a value of the "
                                f"{types[a.column]} column `{a.column}`.")
                continue
            if a.time_window is None:
                problems.append(f"{at}: feature {name} needs a time_window (1 hour to 90 days).")
                continue
            specs.append(AggregationSpec(name=name, column=a.column, function=a.function, window=a.time_window,
                                         match=match))
        engine = ViewSpec(name=fv.name, join_keys=join_keys, timestamp=contract.timestamp, granularity=granularity,
                          aggregations=tuple(specs), feature_timestamp=src.timestamp_field,
                          created_timestamp=src.created_timestamp_column or "created_ts")
        problems += [f"{at}: {p}" for p in check_view(engine)]
        ttl = fv.ttl if fv.ttl and fv.ttl > timedelta(0) else TTL_GRANULES * granularity
        if ttl < granularity:
            problems.append(f"{at}: ttl {ttl} is shorter than the granularity ({gran_name}): nothing would be served.")
        fv.ttl = ttl
        fv.tags = {**tags, AGGREGATIONS_TAG: json.dumps(
            [{"name": s.name, "column": s.column, "function": s.function, "window_s": s.window.total_seconds(),
              **({"match": s.match} if s.match is not None else {})} for s in specs], sort_keys=True)}
        views[fv.name] = DeclaredView(fv.name, contract.name, engine, ttl, tuple(s.name for s in specs),
                                      fv.description or "")
    services = {}
    for svc in (o for o in objects if isinstance(o, FeatureService)):
        names = tuple(p.name for p in svc.feature_view_projections)
        for n in names:
            if n not in views:
                problems.append(f"{where}: FeatureService {svc.name} uses {n}, which is not a computed view.")
        services[svc.name] = names
    if problems:
        raise SpecError("feature declarations:\n  - " + "\n  - ".join(problems))
    return FeatureRepo(views, services, objects, repo_path)


# ------------------------------------------------------------------------------------------------
# parse-time index (no Feast import unless the definitions changed)


def _cache_path(repo_path: Path) -> Path:
    home = Path(os.environ.get("FLYWHEEL_HOME", repo_path.resolve().parent / ".flywheel"))
    return home / "feast" / "declarations.json"


def view_index(repo_path: Path) -> dict[str, Any]:
    """{"views": {view: {"dataset", "join_keys", "features", "lookback_s"}}, "services": {svc: [views]}}.

    Read from a JSON cache keyed by the sha256 of the definitions and the contracts; rebuilt (importing
    Feast) only when one of them changed.
    """
    from pipelines.spec import datasets_dir

    digest = hashlib.sha256((repo_path / DEFINITIONS).read_bytes())
    for contract in sorted(datasets_dir().glob("*.yaml")):
        digest.update(contract.read_bytes())
    key = digest.hexdigest()
    cache = _cache_path(repo_path)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("sha256") == key:
            return dict(cached)
    except (OSError, ValueError):
        pass
    repo = load_repo(repo_path)
    index = {"sha256": key,
             "views": {v.name: {"dataset": v.dataset, "join_keys": list(v.join_keys), "features": list(v.features),
                                "lookback_s": v.lookback.total_seconds()} for v in repo.views.values()},
             "services": {k: list(v) for k, v in repo.services.items()}}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        tmp.replace(cache)
    except OSError:  # a read-only home: parse again next time
        pass
    return index
