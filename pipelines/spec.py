"""Model specs and dataset contracts: declared once in YAML, loaded into frozen dataclasses.

Parsing touches nothing but the YAML files, so DAG files can call it at parse time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
HIGHER_IS_BETTER = {"average_precision": True, "roc_auc": True, "mae": False, "rmse": False}


class SpecError(ValueError):
    """A model spec or dataset contract is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class ColumnRule:
    name: str
    type: Literal["string", "int", "float", "timestamp"]
    nullable: bool = True
    unique: bool = False
    allowed: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class DatasetContract:
    name: str
    file_pattern: str
    row_id: str
    columns: tuple[ColumnRule, ...]
    path: Path

    def column(self, name: str) -> ColumnRule:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class LabelSpec:
    kind: Literal["column", "future_sum"]
    column: str
    delay_days: int
    horizon_days: int = 0


@dataclass(frozen=True)
class DriftSpec:
    window_days: int = 7
    drift_share: float = 0.3
    threshold: float = 0.1
    cooldown_days: int = 14
    reference_rows: int = 20000


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    owners: tuple[str, ...]
    task: Literal["binary", "regression"]
    dataset: DatasetContract
    entity_key: str
    event_timestamp: str
    label: LabelSpec
    feature_service: str
    feature_views: tuple[str, ...]
    row_features: tuple[str, ...]
    window_days: int
    holdout_days: int
    seed: int
    params: dict[str, Any]
    primary_metric: str
    gate: dict[str, float]
    drift: DriftSpec
    schedule: str
    max_quarantine_share: float
    min_rows: int
    path: Path
    tags: tuple[str, ...] = field(default=())

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.primary_metric]

    @property
    def registered_model_name(self) -> str:
        return f"flywheel-{self.name}"


def models_dir() -> Path:
    return Path(os.environ.get("FLYWHEEL_MODELS_DIR", REPO_ROOT / "models"))


def datasets_dir() -> Path:
    return Path(os.environ.get("FLYWHEEL_DATASETS_DIR", REPO_ROOT / "datasets"))


def _require(raw: dict[str, Any], key: str, path: Path, section: str = "") -> Any:
    if not isinstance(raw, dict) or key not in raw or raw[key] is None:
        raise SpecError(f"{path}: required key `{section}{key}` is missing; add it (see models/fraud.yaml).")
    return raw[key]


def load_dataset(name: str, directory: Path | None = None) -> DatasetContract:
    path = (directory or datasets_dir()) / f"{name}.yaml"
    if not path.exists():
        raise SpecError(f"dataset contract {path} not found; create it or fix `dataset:` in the spec.")
    raw = yaml.safe_load(path.read_text()) or {}
    cols = []
    for cname, rule in _require(raw, "columns", path).items():
        rule = dict(rule or {})
        unknown = set(rule) - {"type", "nullable", "unique", "allowed", "min", "max"}
        if unknown:
            raise SpecError(f"{path}: column `{cname}` has unknown rule(s) {sorted(unknown)}; "
                            "known: type, nullable, unique, allowed, min, max.")
        if rule.get("type") not in ("string", "int", "float", "timestamp"):
            raise SpecError(f"{path}: column `{cname}` has type {rule.get('type')!r}; "
                            "use one of string, int, float, timestamp.")
        allowed = rule.pop("allowed", None)
        cols.append(ColumnRule(name=cname, allowed=tuple(allowed) if allowed else None, **rule))
    return DatasetContract(
        name=_require(raw, "name", path),
        file_pattern=_require(raw, "file_pattern", path),
        row_id=_require(raw, "row_id", path),
        columns=tuple(cols),
        path=path,
    )


def load_spec(path: Path) -> ModelSpec:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a model spec is a YAML mapping.")
    name = _require(raw, "name", path)
    if not str(name).isidentifier():
        raise SpecError(f"{path}: name {name!r} must be a Python identifier (used in DAG ids).")
    task = _require(raw, "task", path)
    if task not in ("binary", "regression"):
        raise SpecError(f"{path}: task {task!r} must be `binary` or `regression`.")
    owners = tuple(_require(raw, "owners", path))
    if not owners or any("@" not in o for o in owners):
        raise SpecError(f"{path}: owners must be a non-empty list of email addresses, got {owners!r}.")
    label = _require(raw, "label", path)
    features = _require(raw, "features", path)
    label_kind = label.get("kind", "column") if isinstance(label, dict) else None
    if label_kind not in ("column", "future_sum"):
        raise SpecError(f"{path}: label.kind {label_kind!r} must be `column` or `future_sum`.")
    training = _require(raw, "training", path)
    metric = _require(_require(raw, "metric", path), "primary", path, "metric.")
    if metric not in HIGHER_IS_BETTER:
        raise SpecError(f"{path}: metric.primary {metric!r} is not one of {sorted(HIGHER_IS_BETTER)}.")
    gate = {k: float(v) for k, v in (_require(raw, "gate", path) or {}).items()}
    validation = raw.get("validation") or {}
    return ModelSpec(
        name=name,
        description=str(raw.get("description", "")),
        owners=owners,
        task=task,
        dataset=load_dataset(_require(raw, "dataset", path), datasets_dir()),
        entity_key=_require(raw, "entity_key", path),
        event_timestamp=_require(raw, "event_timestamp", path),
        label=LabelSpec(
            kind=label_kind,
            column=_require(label, "column", path, "label."),
            delay_days=int(label.get("delay_days", 0)),
            horizon_days=int(label.get("horizon_days", 0)),
        ),
        feature_service=_require(features, "service", path, "features."),
        feature_views=tuple(features.get("views", [])),
        row_features=tuple(features.get("row", [])),
        window_days=int(training.get("window_days", 28)),
        holdout_days=int(training.get("holdout_days", 7)),
        seed=int(training.get("seed", 0)),
        params=dict(training.get("params", {})),
        primary_metric=metric,
        gate=gate,
        drift=DriftSpec(**(raw.get("drift") or {})),
        schedule=str(raw.get("schedule", "@weekly")),
        max_quarantine_share=float(validation.get("max_quarantine_share", 0.05)),
        min_rows=int(validation.get("min_rows", 1)),
        path=Path(path),
        tags=tuple(raw.get("tags", ())),
    )


def load_specs(directory: Path | None = None) -> dict[str, ModelSpec]:
    """Every spec under models/, keyed by name. Reads only the YAML files."""
    specs: dict[str, ModelSpec] = {}
    for path in sorted((directory or models_dir()).glob("*.yaml")):
        spec = load_spec(path)
        if spec.name in specs:
            raise SpecError(f"{path}: model name {spec.name!r} is already declared in {specs[spec.name].path}.")
        specs[spec.name] = spec
    return specs
