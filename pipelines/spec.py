"""Model specs and dataset contracts: declared once in YAML, loaded into frozen dataclasses.

Parsing touches nothing but the YAML files, so DAG files can call it at parse time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml

# direction and tasks of each metric, derived from the metrics registry (stdlib-only at import time)
from pipelines.guardrail import GuardSpec
from pipelines.metrics import HIGHER_IS_BETTER, METRIC_TASKS
from pipelines.release.specs import ExplainSpec, GoldenSpec, ParitySpec, parse_explain, parse_fairness, parse_golden

REPO_ROOT = Path(__file__).resolve().parent.parent
# Numeric keys of a spec's `gate:` section (see pipelines/gate.py for what each one means).
GATE_KEYS = {
    "min_primary": "value threshold: floor of a higher-is-better primary metric",
    "max_primary": "value threshold: ceiling of a lower-is-better primary metric",
    "min_delta": "change threshold: the bootstrap lower bound of the improvement must be > this",
    "min_relative_delta": "change threshold: that lower bound / |champion| must be > this",
    "min_holdout_rows": "fewer holdout rows: not promoted",
    "min_holdout_positives": "classifiers: fewer positive holdout rows: not promoted",
    "bootstrap_resamples": "paired bootstrap resamples (default 1000)",
    "confidence": "two-sided confidence of the bootstrap interval (default 0.95)",
    "max_brier": "classifiers: calibration bound on the Brier score",
    "max_latency_p95_ms": "p95 single-row prediction latency budget (ms)",
    "latency_samples": "single-row predictions timed (default 300)",
    "slice_tolerance": "a slice may be worse than the champion by this much (beyond noise) before it blocks",
    "slice_min_rows": "slices with fewer rows are ignored (default 100)",
    "slice_min_positives": "classifiers: slices with fewer positives are ignored (default 5)",
}


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
    max_null_share: float | None = None  # nullable columns: more nulls than this share of the batch blocks it


@dataclass(frozen=True)
class DatasetContract:
    """A dataset: its landing contract, owners, event timestamp, cadence and the gate's batch limits.

    Declared once in `datasets/<name>.yaml`; `ingest_validate__<name>` validates every landed batch
    against it once, whichever models read the dataset.
    """
    name: str
    file_pattern: str
    row_id: str
    columns: tuple[ColumnRule, ...]
    path: Path
    owners: tuple[str, ...] = ()
    timestamp: str = ""          # the event-time column (type timestamp)
    cadence: str = "@daily"      # cron (UTC) of the batches: one file per interval
    description: str = ""
    max_quarantine_share: float = 0.05  # validation.*: more bad rows than this share blocks the batch
    min_rows: int = 1
    max_rows: int | None = None
    distribution: DistributionSpec = field(default_factory=lambda: DistributionSpec())
    email_expire_hours: float = 72.0    # notify.expire_hours: an undelivered email is retried this long

    def file_name(self, start: datetime) -> str:
        """The landed file of the interval starting at `start` (`file_pattern`, e.g. `x_{start:%Y-%m-%d}.parquet`)."""
        return self.file_pattern.format(start=start)

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


# Evidently 0.7 stat tests: id -> (kind, column types it accepts, Evidently's default threshold).
# "distance": drift when score >= threshold; "p_value": drift when p < threshold.
DRIFT_METHODS: dict[str, tuple[str, tuple[str, ...], float]] = {
    "wasserstein": ("distance", ("numeric",), 0.1),  # normed by the reference std
    "ed": ("distance", ("numeric",), 0.1),
    "jensenshannon": ("distance", ("numeric", "categorical"), 0.1),
    "hellinger": ("distance", ("numeric", "categorical"), 0.1),
    "kl_div": ("distance", ("numeric", "categorical"), 0.1),
    "psi": ("distance", ("numeric", "categorical"), 0.1),
    "ks": ("p_value", ("numeric",), 0.05),
    "anderson": ("p_value", ("numeric",), 0.1),
    "cramer_von_mises": ("p_value", ("numeric",), 0.1),
    "empirical_mmd": ("p_value", ("numeric",), 0.1),
    "es": ("p_value", ("numeric",), 0.05),
    "mannw": ("p_value", ("numeric",), 0.05),
    "t_test": ("p_value", ("numeric",), 0.05),
    "chisquare": ("p_value", ("categorical",), 0.05),
    "fisher_exact": ("p_value", ("categorical",), 0.1),
    "g_test": ("p_value", ("categorical",), 0.1),
    "TVD": ("p_value", ("categorical",), 0.1),
    "z": ("p_value", ("categorical",), 0.05),
}
# Evidently's own choice above 1,000 reference rows, pinned for every size (below it Evidently
# switches to p-value tests, where the same threshold would mean the opposite).
DEFAULT_DRIFT_METHODS = {"numeric": "wasserstein", "categorical": "jensenshannon"}
DRIFT_KEYS = ("window_days", "drift_share", "threshold", "cooldown_days", "reference_rows", "max_rows", "methods",
              "columns", "hysteresis", "performance", "alerts")
# `drift.alerts`: how owners hear about an alarm that persists (pipelines/monitor/policy.py, `plan_email`)
ALERT_MODES = {
    "episode": "one email when an alarm episode starts, again only if it still alarms after cooldown_days",
    "digest": "as episode, and the windows not emailed go out as one digest after cooldown_days or when it clears",
}


@dataclass(frozen=True)
class ColumnDriftRule:
    """A per-column override of the drift method and/or threshold (`drift.columns.<name>`)."""
    method: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftSpec:
    """The `drift:` section: what the monitor compares, how it scores each column, when it asks for a retrain.

    Per column, an Evidently stat test (`methods` by column type, `columns` per-column overrides). A
    distance method (DRIFT_METHODS kind "distance") drifts when its score >= the threshold (default
    `threshold`); a p-value method drifts when p < its threshold (default: Evidently's for that test).
    A window *alarms* when >= `drift_share` of the columns drift, or (with `performance_retrain`) when
    the primary metric on the labelled rows fell more than `performance_max_drop` (relative) below the
    champion's gate-time holdout value. A retrain is requested when >= `alarm_windows` of the last
    `of_windows` windows alarmed, no retrain is queued or running, and the champion is older than
    `cooldown_days`. Each side is sampled (seeded) to `max_rows` rows before Evidently (0: no sampling).
    Owners are emailed once per alarm episode (`alerts`, see ALERT_MODES), not once per window.
    """

    window_days: int = 7
    drift_share: float = 0.3
    threshold: float = 0.1
    cooldown_days: int = 14
    reference_rows: int = 20000  # rows of the training set kept as the drift reference (at training)
    max_rows: int = 50000  # rows per side given to Evidently (seeded sample); 0 = all
    methods: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DRIFT_METHODS))
    columns: dict[str, ColumnDriftRule] = field(default_factory=dict)
    alarm_windows: int = 1  # N of ...
    of_windows: int = 1  # ... M consecutive windows must alarm (hysteresis)
    performance_max_drop: float = 0.25  # relative drop of the primary metric vs the gate-time holdout value
    performance_min_rows: int = 500  # fewer labelled rows in the window: performance not judged
    performance_min_positives: int = 20  # classifiers: fewer positive labels: not judged
    performance_retrain: bool = False  # does a performance drop alone make the window alarm?
    alerts: str = "episode"  # ALERT_MODES: one email per alarm episode, or that and a digest of the rest

    def method_for(self, column: str, kind: Literal["numeric", "categorical"]) -> str:
        rule = self.columns.get(column)
        return rule.method if rule is not None and rule.method else self.methods[kind]

    def threshold_for(self, column: str, method: str) -> float:
        rule = self.columns.get(column)
        if rule is not None and rule.threshold is not None:
            return float(rule.threshold)
        kind, _, default = DRIFT_METHODS[method]
        return float(self.threshold) if kind == "distance" else default


@dataclass(frozen=True)
class SliceSpec:
    """A column the gate compares slice by slice; numeric columns are bucketed at `bins` (edges)."""
    column: str
    bins: tuple[float, ...] = ()


@dataclass(frozen=True)
class DistributionSpec:
    """Distribution sanity of a batch against the profiles of the batches accepted before it.

    For each column: the mean (and for float columns the 5th, 50th and 95th percentiles) of the
    batch's clean rows must lie within a factor `max_ratio` of the same statistic averaged over the
    last `reference_batches` accepted batches (a statistic of 0 in the reference allows
    +-(max_ratio - 1) reference standard deviations). A gross-error check (units, a broken feed, a
    collapsed label rate), not drift detection: the monitor stage does that with Evidently.
    """

    severity: Literal["warn", "block", "off"] = "warn"
    columns: tuple[str, ...] = ()
    reference_batches: int = 4
    max_ratio: float = 3.0


# `training.sampling`: which training rows are kept (pipelines/training.py `sample_mask`), one rule per spec
SAMPLING_RULES = {
    "negatives": "binary models: keep every positive and this fraction of the negatives (label 0), each "
                 "weighted 1/fraction",
    "rows": "any model: keep this fraction of the training rows, each weighted 1/fraction",
}


@dataclass(frozen=True)
class SamplingSpec:
    """`training.sampling`: train on a deterministic sample of the training rows (never of the holdout).

    A training row is kept when a hash of its row id and `seed` falls below `fraction` (the same rows on every
    re-run), under `rule`: `negatives` samples only the rows labelled 0 of a binary model and keeps every
    other row, `rows` samples every row. Each sampled row carries the weight 1/fraction in training and in
    early stopping (the rows kept whole weigh 1), so the fit, its calibration and its early-stopping metric
    estimate those of the whole window.
    """

    rule: Literal["negatives", "rows"]
    fraction: float
    seed: int

    @property
    def weight(self) -> float:
        """The weight of a sampled row: it stands for 1/fraction rows of the window."""
        return 1.0 / self.fraction


VALIDATION_KEYS = ("max_quarantine_share", "min_rows", "max_rows", "distribution")
DISTRIBUTION_KEYS = ("severity", "columns", "reference_batches", "max_ratio")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    owners: tuple[str, ...]
    task: Literal["binary", "regression"]
    dataset: DatasetContract
    entity_key: str
    label: LabelSpec
    feature_service: str
    row_features: tuple[str, ...]
    window_days: int
    holdout_days: int
    seed: int
    params: dict[str, Any]
    primary_metric: str
    gate: dict[str, float]
    drift: DriftSpec
    path: Path
    tags: tuple[str, ...] = field(default=())
    slices: tuple[SliceSpec, ...] = field(default=())
    warmup_days: int | None = None  # training.warmup_days: skip rows this soon after history starts (None: lookback)
    email_expire_hours: float = 72.0  # notify.expire_hours: an undelivered email is retried this long
    guardrail: GuardSpec | None = None  # `guardrail:`: watch each new champion against the one it replaced (None: off)
    golden: tuple[GoldenSpec, ...] = ()     # `golden:` sets every challenger is judged on (pipelines/release/)
    fairness: tuple[ParitySpec, ...] = ()   # `fairness:` parity rules between groups of a column
    explain: ExplainSpec | None = None      # `explain:` top-k contributions per scored row (None: none stored)
    # `registry: {out_of_band: alarm | restore}`: what the champion sentinel does when `champion` was moved outside
    # the audited path (pipelines/sentinel.py): alarm the owners, or alarm and restore the audited champion
    out_of_band: Literal["alarm", "restore"] = "alarm"
    sampling: SamplingSpec | None = None    # `training.sampling`: train on a sample of the rows (None: every row)

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.primary_metric]

    @property
    def registered_model_name(self) -> str:
        return f"flywheel-{self.name}"

    @property
    def event_timestamp(self) -> str:
        """The event-time column of the model's rows: the dataset's (declared once, in the contract)."""
        return self.dataset.timestamp

    @property
    def schedule(self) -> str:
        """The batch cadence the model follows: its dataset's."""
        return self.dataset.cadence


def models_dir() -> Path:
    return Path(os.environ.get("FLYWHEEL_MODELS_DIR", REPO_ROOT / "models"))


def datasets_dir() -> Path:
    return Path(os.environ.get("FLYWHEEL_DATASETS_DIR", REPO_ROOT / "datasets"))


def _require(raw: dict[str, Any], key: str, path: Path, section: str = "") -> Any:
    if not isinstance(raw, dict) or key not in raw or raw[key] is None:
        raise SpecError(f"{path}: required key `{section}{key}` is missing; add it (see models/fraud.yaml).")
    return raw[key]


CONTRACT_KEYS = ("name", "description", "owners", "file_pattern", "row_id", "timestamp", "cadence", "columns",
                 "validation", "notify")
COLUMN_RULES = ("type", "nullable", "unique", "allowed", "min", "max", "max_null_share")


def load_dataset(name: str, directory: Path | None = None) -> DatasetContract:
    path = (directory or datasets_dir()) / f"{name}.yaml"
    if not path.exists():
        raise SpecError(f"dataset contract {path} not found; create it or fix `dataset:` in the spec.")
    return load_contract(path)


def load_contract(path: Path) -> DatasetContract:
    """One `datasets/<name>.yaml`, checked key by key (see datasets/transactions.yaml)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a dataset contract is a YAML mapping.")
    unknown = sorted(set(raw) - set(CONTRACT_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {unknown}; known: {', '.join(CONTRACT_KEYS)}.")
    name = _require(raw, "name", path)
    if not str(name).isidentifier():
        raise SpecError(f"{path}: name {name!r} must be a Python identifier (used in DAG ids and Asset names).")
    if Path(path).stem != name:
        raise SpecError(f"{path}: the file must be named after the dataset: {name}.yaml.")
    cols = []
    columns = _require(raw, "columns", path)
    if not isinstance(columns, dict) or not columns:
        raise SpecError(f"{path}: `columns` maps each column name to its rules, e.g. {{type: int, nullable: false}}.")
    for cname, rule in columns.items():
        rule = dict(rule or {})
        bad_rules = set(rule) - set(COLUMN_RULES)
        if bad_rules:
            raise SpecError(f"{path}: column `{cname}` has unknown rule(s) {sorted(bad_rules)}; "
                            f"known: {', '.join(COLUMN_RULES)}.")
        if rule.get("type") not in ("string", "int", "float", "timestamp"):
            raise SpecError(f"{path}: column `{cname}` has type {rule.get('type')!r}; "
                            "use one of string, int, float, timestamp.")
        share = rule.get("max_null_share")
        if share is not None:
            if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share < 1:
                raise SpecError(f"{path}: column `{cname}`: max_null_share must be a number in [0, 1), got {share!r}.")
            if rule.get("nullable") is False:
                raise SpecError(f"{path}: column `{cname}` is not nullable: max_null_share does not apply.")
            rule["max_null_share"] = float(share)
        allowed = rule.pop("allowed", None)
        cols.append(ColumnRule(name=str(cname), allowed=tuple(allowed) if allowed else None, **rule))
    types = {c.name: c.type for c in cols}
    row_id = _require(raw, "row_id", path)
    if row_id not in types:
        raise SpecError(f"{path}: row_id `{row_id}` is not one of the columns ({', '.join(types)}).")
    timestamp = _require(raw, "timestamp", path)
    if types.get(timestamp) != "timestamp":
        raise SpecError(f"{path}: timestamp `{timestamp}` must name a column of type timestamp "
                        f"(columns of that type: {[c for c, t in types.items() if t == 'timestamp']}).")
    owners = tuple(_require(raw, "owners", path))
    if not owners or any(not isinstance(o, str) or "@" not in o for o in owners):
        raise SpecError(f"{path}: owners must be a non-empty list of email addresses, got {owners!r}.")
    cadence = str(_require(raw, "cadence", path))
    _check_cron(cadence, path, "cadence")
    max_share, min_rows, max_rows, distribution = _validation_settings(raw.get("validation") or {}, cols, path)
    return DatasetContract(
        name=name, file_pattern=_require(raw, "file_pattern", path), row_id=row_id, columns=tuple(cols),
        path=Path(path), owners=owners, timestamp=timestamp, cadence=cadence,
        description=str(raw.get("description", "")), max_quarantine_share=max_share, min_rows=min_rows,
        max_rows=max_rows, distribution=distribution, email_expire_hours=_notify_expire_hours(raw, path))


def _check_cron(expr: str, path: Path, key: str) -> None:
    """A 5-field cron expression (or an @preset): the cadence decides intervals and DAG schedules."""
    presets = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}
    if expr in presets:
        return
    if len(expr.split()) != 5:
        raise SpecError(f"{path}: `{key}` {expr!r} must be a cron expression with 5 fields (e.g. \"0 0 * * 1\" "
                        f"for weekly on Monday) or one of {', '.join(sorted(presets))}.")
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter arrives with Airflow
        return
    if not croniter.is_valid(expr):
        raise SpecError(f"{path}: `{key}` {expr!r} is not a valid cron expression.")


def load_datasets(directory: Path | None = None) -> dict[str, DatasetContract]:
    """Every contract under datasets/, keyed by name."""
    return {c.name: c for c in (load_contract(p) for p in sorted((directory or datasets_dir()).glob("*.yaml")))}


MOVED_TO_CONTRACT = {"validation": "validation", "schedule": "cadence", "event_timestamp": "timestamp"}
MODEL_KEYS = ("name", "description", "owners", "task", "dataset", "entity_key", "label", "features", "training",
              "metric", "gate", "drift", "tags", "notify", "guardrail", "golden", "fairness", "explain",
              "registry")
TRAINING_KEYS = ("window_days", "holdout_days", "warmup_days", "seed", "params", "sampling")
GUARDRAIL_KEYS = ("guard_days", "tolerance", "min_rows", "min_positives", "confidence", "resamples", "action",
                  "shadow_rows")


def _notify_expire_hours(raw: Any, path: Path) -> float:
    """`notify: {expire_hours: N}`: how long an email that could not be sent is retried (pipelines/outbox.py)."""
    notify = raw.get("notify") or {}
    if not isinstance(notify, dict) or set(notify) - {"expire_hours"}:
        raise SpecError(f"{path}: `notify` takes one key, expire_hours (how long an undelivered email is retried).")
    hours = notify.get("expire_hours", 72)
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours <= 0:
        raise SpecError(f"{path}: `notify.expire_hours` must be a positive number of hours, got {hours!r}.")
    return float(hours)


def load_spec(path: Path, datasets: Path | None = None) -> ModelSpec:
    """One `models/<name>.yaml`, checked key by key; its dataset from `datasets` (default: datasets_dir())."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a model spec is a YAML mapping.")
    for key, there in MOVED_TO_CONTRACT.items():
        if key in raw:
            raise SpecError(f"{path}: `{key}` belongs to the dataset now: declare it as `{there}` in "
                            f"datasets/{raw.get('dataset', '<dataset>')}.yaml (a batch is validated once per dataset, "
                            "whichever models read it) and remove it here.")
    unknown = sorted(set(raw) - set(MODEL_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {unknown}; known: {', '.join(MODEL_KEYS)}.")
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
    _known_keys(training, "training", TRAINING_KEYS, path)
    metric = _require(_require(raw, "metric", path), "primary", path, "metric.")
    if metric not in HIGHER_IS_BETTER:
        raise SpecError(f"{path}: metric.primary {metric!r} is not one of {sorted(HIGHER_IS_BETTER)}.")
    _check_metric_fits(metric, task, path)
    gate, slices = _gate(_require(raw, "gate", path), metric, path)
    dataset = load_dataset(_require(raw, "dataset", path), datasets or datasets_dir())
    entity_key = _require(raw, "entity_key", path)
    label_spec = LabelSpec(
        kind=label_kind,
        column=_require(label, "column", path, "label."),
        delay_days=int(label.get("delay_days", 0)),
        horizon_days=int(label.get("horizon_days", 0)),
    )
    if not isinstance(features, dict) or set(features) - {"service", "row"}:
        extra = sorted(set(features) - {"service", "row"}) if isinstance(features, dict) else features
        raise SpecError(f"{path}: `features` takes `service` (a Feast FeatureService of feature_repo/, which "
                        f"declares the views) and `row` (columns of the row itself); got {extra!r}.")
    row_features = tuple(features.get("row", []) or [])
    names = set(dataset.column_names)
    for what, col in [("entity_key", entity_key), ("label.column", label_spec.column),
                      *(("features.row", c) for c in row_features)]:
        if col not in names:
            raise SpecError(f"{path}: {what} `{col}` is not a column of {dataset.path.name} "
                            f"({', '.join(dataset.column_names)}); fix the spec or the contract.")
    if label_spec.column in row_features:
        raise SpecError(f"{path}: the label `{label_spec.column}` cannot also be a row feature.")
    if label_kind == "future_sum" and label_spec.horizon_days < 1:
        raise SpecError(f"{path}: label.horizon_days must be >= 1 for a future_sum label.")
    return ModelSpec(
        name=name,
        description=str(raw.get("description", "")),
        owners=owners,
        task=task,
        dataset=dataset,
        entity_key=entity_key,
        label=label_spec,
        feature_service=_require(features, "service", path, "features."),
        row_features=row_features,
        window_days=int(training.get("window_days", 28)),
        holdout_days=int(training.get("holdout_days", 7)),
        seed=int(training.get("seed", 0)),
        params=dict(training.get("params", {})),
        primary_metric=metric,
        gate=gate,
        drift=_drift_settings(raw.get("drift") or {}, path),
        path=Path(path),
        tags=tuple(raw.get("tags", ())),
        slices=slices,
        warmup_days=int(training["warmup_days"]) if training.get("warmup_days") is not None else None,
        email_expire_hours=_notify_expire_hours(raw, path),
        guardrail=_guardrail(raw.get("guardrail"), task, seed=int(training.get("seed", 0)), path=path),
        golden=parse_golden(raw.get("golden"), Path(path), REPO_ROOT),
        fairness=parse_fairness(raw.get("fairness"), Path(path), task, list(dataset.column_names)),
        explain=parse_explain(raw.get("explain"), Path(path)),
        out_of_band=_registry_out_of_band(raw.get("registry"), Path(path)),
        sampling=_sampling(training.get("sampling"), task, seed=int(training.get("seed", 0)), path=Path(path)),
    )


def _known_keys(raw: Any, section: str, keys: tuple[str, ...], path: Path, alternative: str = "") -> None:
    """A spec section is a mapping of known keys, else a SpecError naming the file, the section and the keys."""
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: `{section}` must be a mapping (keys: {', '.join(keys)}){alternative}.")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {[section + '.' + k for k in unknown]}; known: {', '.join(keys)}.")


def _registry_out_of_band(raw: Any, path: Path) -> Literal["alarm", "restore"]:
    """`registry: {out_of_band: alarm | restore}` (default alarm): the champion sentinel's action."""
    registry = raw or {}
    if not isinstance(registry, dict) or set(registry) - {"out_of_band"}:
        raise SpecError(f"{path}: `registry` takes one key, out_of_band (alarm or restore: what the sentinel does "
                        "when `champion` was moved outside the audited path).")
    value = registry.get("out_of_band", "alarm")
    if value not in ("alarm", "restore"):
        raise SpecError(f"{path}: `registry.out_of_band` must be alarm (email the owners) or restore (email them and "
                        f"move `champion` back to the audited version), got {value!r}.")
    return "restore" if value == "restore" else "alarm"


def _sampling(raw: Any, task: str, *, seed: int, path: Path) -> SamplingSpec | None:
    """`training.sampling` (SamplingSpec), checked key by key; absent: every training row is kept."""
    if raw is None:
        return None
    known = ", ".join(f"{k} ({v})" for k, v in SAMPLING_RULES.items())
    if not isinstance(raw, dict) or not raw:
        raise SpecError(f"{path}: `training.sampling` must be a mapping with one rule, e.g. {{negatives: 0.1}} or "
                        f"{{rows: 0.2}}; got {raw!r}. Rules: {known}. Remove the key to train on every row.")
    unknown = sorted(set(raw) - set(SAMPLING_RULES))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {['training.sampling.' + k for k in unknown]}; known: {known}.")
    if len(raw) > 1:
        raise SpecError(f"{path}: `training.sampling` declares {' and '.join(sorted(raw))}: keep one rule "
                        "(negatives keeps every positive; rows samples every row).")
    rule, value = next(iter(raw.items()))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise SpecError(f"{path}: `training.sampling.{rule}` must be a fraction in (0, 1], the share of "
                        f"{'negative ' if rule == 'negatives' else ''}training rows kept (e.g. 0.1), got {value!r}.")
    if rule == "negatives" and task != "binary":
        raise SpecError(f"{path}: `training.sampling.negatives` ({value!r}) applies to binary models only (it keeps "
                        f"every positive); this model's task is {task}: use `training.sampling.rows` to keep a "
                        "fraction of every row.")
    return SamplingSpec(rule="negatives" if rule == "negatives" else "rows", fraction=float(value), seed=seed)


def _guardrail(raw: Any, task: str, *, seed: int, path: Path) -> GuardSpec | None:
    """The `guardrail:` section (pipelines/guardrail.py), checked key by key; absent or `false`: no guardrail."""
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {}
    _known_keys(raw, "guardrail", GUARDRAIL_KEYS, path, " or false")
    d = GuardSpec()

    def number(key: str, default: float, *, whole: bool = False, low: float = 0.0, high: float | None = None,
               low_open: bool = False) -> Any:
        v = raw.get(key, default)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not whole or float(v).is_integer())
        if ok and (v < low or (low_open and v == low) or (high is not None and v >= high)):
            ok = False
        if not ok:
            bound = f"{'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
            raise SpecError(f"{path}: `guardrail.{key}` must be a {'whole ' if whole else ''}number {bound}, "
                            f"got {v!r}.")
        return int(v) if whole else float(v)

    action = raw.get("action", d.action)
    if action not in ("rollback", "alert"):
        raise SpecError(f"{path}: `guardrail.action` must be `rollback` (roll back automatically) or `alert` "
                        f"(email the evidence, move nothing), got {action!r}.")
    out = GuardSpec(guard_days=number("guard_days", d.guard_days, whole=True, low=1),
                    tolerance=number("tolerance", d.tolerance),
                    min_rows=number("min_rows", d.min_rows, whole=True, low=1),
                    min_positives=number("min_positives", d.min_positives if task == "binary" else 0, whole=True),
                    confidence=number("confidence", d.confidence, low=0.5, high=1.0),
                    resamples=number("resamples", d.resamples, whole=True, low=100),
                    action=action, seed=seed,
                    shadow_rows=number("shadow_rows", d.shadow_rows, whole=True, low=1000))
    if out.shadow_rows < out.min_rows:
        raise SpecError(f"{path}: `guardrail.shadow_rows` ({out.shadow_rows}) is below `guardrail.min_rows` "
                        f"({out.min_rows}): an interval's shadow sample could never be judged; raise shadow_rows.")
    return out


def _check_metric_fits(metric: str, task: str, path: Path) -> None:
    """A metric the task can compute (the metrics registry says which tasks each metric serves)."""
    fits = METRIC_TASKS.get(metric, ())
    if task not in fits:
        ok = sorted(m for m, t in METRIC_TASKS.items() if task in t)
        raise SpecError(f"{path}: metric.primary {metric!r} does not fit a {task} model; use one of {ok}.")


def _validation_settings(
    validation: Any, columns: list[ColumnRule], path: Path
) -> tuple[float, int, int | None, DistributionSpec]:
    """The contract's `validation:` section: batch limits and the distribution check."""
    if not isinstance(validation, dict):
        raise SpecError(f"{path}: `validation` must be a mapping (keys: {', '.join(VALIDATION_KEYS)}).")
    unknown = set(validation) - set(VALIDATION_KEYS)
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {sorted(unknown)} in `validation`; "
                        f"known: {', '.join(VALIDATION_KEYS)}.")
    max_share = float(validation.get("max_quarantine_share", 0.05))
    if not 0 <= max_share <= 1:
        raise SpecError(f"{path}: validation.max_quarantine_share must be in [0, 1], got {max_share}.")
    min_rows = int(validation.get("min_rows", 1))
    max_rows = validation.get("max_rows")
    if max_rows is not None and int(max_rows) < min_rows:
        raise SpecError(f"{path}: validation.max_rows={max_rows} is below validation.min_rows={min_rows}.")
    raw = validation.get("distribution") or {}
    if not isinstance(raw, dict) or set(raw) - set(DISTRIBUTION_KEYS):
        raise SpecError(f"{path}: validation.distribution takes the keys {', '.join(DISTRIBUTION_KEYS)}.")
    severity = raw.get("severity", "warn")
    if severity not in ("warn", "block", "off"):
        raise SpecError(f"{path}: validation.distribution.severity {severity!r} must be warn, block or off.")
    types = {c.name: c.type for c in columns}
    if "columns" in raw:
        names = tuple(raw["columns"] or ())
    else:  # default: the measures (float columns)
        names = tuple(c.name for c in columns if c.type == "float")
    for name in names:
        if types.get(name) not in ("int", "float"):
            raise SpecError(f"{path}: validation.distribution.columns: `{name}` is not an int or float column "
                            "of the contract; list numeric columns only.")
    max_ratio = float(raw.get("max_ratio", 3.0))
    reference_batches = int(raw.get("reference_batches", 4))
    if max_ratio <= 1.0 or reference_batches < 1:
        raise SpecError(f"{path}: validation.distribution needs max_ratio > 1 and reference_batches >= 1.")
    spec = DistributionSpec(severity=severity, columns=names, reference_batches=reference_batches,
                            max_ratio=max_ratio)
    return max_share, min_rows, int(max_rows) if max_rows is not None else None, spec


def _drift_settings(raw: Any, path: Path) -> DriftSpec:
    """The `drift:` section, checked key by key (see DriftSpec and models/fraud.yaml)."""
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: `drift` must be a mapping (keys: {', '.join(DRIFT_KEYS)}).")
    unknown = sorted(set(raw) - set(DRIFT_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {['drift.' + k for k in unknown]}; known: {', '.join(DRIFT_KEYS)}.")

    def number(section: dict[str, Any], key: str, default: float, where: str, *, whole: bool = False,
               low: float = 0.0, high: float = math.inf, low_open: bool = False) -> Any:
        value = section.get(key, default)
        try:
            num = int(value) if whole else float(value)
            if isinstance(value, bool) or (whole and num != float(value)):
                raise ValueError
        except (TypeError, ValueError):
            raise SpecError(f"{path}: `{where}{key}` must be a {'whole ' if whole else ''}number, "
                            f"got {value!r}.") from None
        if num < low or num > high or (low_open and num == low):
            bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
            raise SpecError(f"{path}: `{where}{key}` must be {bound}, got {value!r}.")
        return num

    def method(value: Any, kind: str | None, where: str) -> str:
        if value not in DRIFT_METHODS:
            raise SpecError(f"{path}: `{where}` {value!r} is not an Evidently stat test; "
                            f"use one of {', '.join(DRIFT_METHODS)}.")
        if kind is not None and kind not in DRIFT_METHODS[value][1]:
            fits = [m for m, v in DRIFT_METHODS.items() if kind in v[1]]
            raise SpecError(f"{path}: `{where}` {value!r} does not apply to {kind} columns; use one of "
                            f"{', '.join(fits)}.")
        return str(value)

    methods_raw = raw.get("methods") or {}
    if not isinstance(methods_raw, dict) or set(methods_raw) - set(DEFAULT_DRIFT_METHODS):
        raise SpecError(f"{path}: `drift.methods` takes the keys numeric and categorical, "
                        "e.g. {numeric: wasserstein, categorical: jensenshannon}.")
    methods = {kind: method(methods_raw.get(kind, default), kind, f"drift.methods.{kind}")
               for kind, default in DEFAULT_DRIFT_METHODS.items()}
    columns_raw = raw.get("columns") or {}
    if not isinstance(columns_raw, dict):
        raise SpecError(f"{path}: `drift.columns` maps column names to {{method, threshold}}.")
    columns = {}
    for name, rule in columns_raw.items():
        if not isinstance(rule, dict) or not rule or set(rule) - {"method", "threshold"}:
            raise SpecError(f"{path}: `drift.columns.{name}` must be a mapping with method and/or threshold.")
        columns[str(name)] = ColumnDriftRule(
            method=method(rule["method"], None, f"drift.columns.{name}.method") if "method" in rule else None,
            threshold=number(rule, "threshold", 0.0, f"drift.columns.{name}.", low_open=True)
            if "threshold" in rule else None)
    hyst = raw.get("hysteresis") or {}
    perf = raw.get("performance") or {}
    for section, keys in (("hysteresis", {"alarms", "windows"}),
                          ("performance", {"max_drop", "min_rows", "min_positives", "retrain"})):
        value = hyst if section == "hysteresis" else perf
        if not isinstance(value, dict) or set(value) - keys:
            raise SpecError(f"{path}: `drift.{section}` takes the keys {', '.join(sorted(keys))}.")
    alarms = number(hyst, "alarms", 1, "drift.hysteresis.", whole=True, low=1)
    windows = number(hyst, "windows", alarms, "drift.hysteresis.", whole=True, low=1)
    if alarms > windows:
        raise SpecError(f"{path}: `drift.hysteresis.alarms` ({alarms}) cannot exceed `windows` ({windows}).")
    retrain = perf.get("retrain", False)
    if not isinstance(retrain, bool):
        raise SpecError(f"{path}: `drift.performance.retrain` must be true or false, got {retrain!r}.")
    alerts = raw.get("alerts", "episode")
    if not isinstance(alerts, str) or alerts not in ALERT_MODES:
        raise SpecError(f"{path}: `drift.alerts` must be one of {', '.join(ALERT_MODES)}, got {alerts!r}: "
                        + "; ".join(f"{k}: {v}" for k, v in ALERT_MODES.items()) + ".")
    max_rows = number(raw, "max_rows", 50000, "drift.", whole=True)
    if 0 < max_rows < 1000:
        raise SpecError(f"{path}: `drift.max_rows` must be 0 (no sampling) or >= 1000: distances on smaller "
                        f"samples are noise. Got {max_rows}.")
    return DriftSpec(
        window_days=number(raw, "window_days", 7, "drift.", whole=True, low=1),
        drift_share=number(raw, "drift_share", 0.3, "drift.", low=0.0, high=1.0, low_open=True),
        threshold=number(raw, "threshold", 0.1, "drift.", low_open=True),
        cooldown_days=number(raw, "cooldown_days", 14, "drift.", whole=True),
        reference_rows=number(raw, "reference_rows", 20000, "drift.", whole=True, low=1),
        max_rows=max_rows,
        methods=methods,
        columns=columns,
        alarm_windows=alarms,
        of_windows=windows,
        performance_max_drop=number(perf, "max_drop", 0.25, "drift.performance.", low_open=True),
        performance_min_rows=number(perf, "min_rows", 500, "drift.performance.", whole=True, low=1),
        performance_min_positives=number(perf, "min_positives", 20, "drift.performance.", whole=True),
        performance_retrain=retrain,
        alerts=str(alerts),
    )


def _gate(raw: Any, metric: str, path: Path) -> tuple[dict[str, float], tuple[SliceSpec, ...]]:
    """The `gate:` section: numeric thresholds (GATE_KEYS) plus `slices`, checked key by key."""
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: `gate` must be a mapping of thresholds (see models/fraud.yaml).")
    raw = dict(raw)
    slices_raw = raw.pop("slices", None) or []
    unknown = sorted(set(raw) - set(GATE_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {['gate.' + k for k in unknown]}; known: {sorted(GATE_KEYS)} "
                        "and `slices`.")
    gate: dict[str, float] = {}
    for k, v in raw.items():
        try:
            gate[k] = float(v)
        except (TypeError, ValueError):
            raise SpecError(f"{path}: `gate.{k}` must be a number, got {v!r}.") from None
    wrong = "max_primary" if HIGHER_IS_BETTER[metric] else "min_primary"
    if wrong in gate:
        right = "min_primary" if HIGHER_IS_BETTER[metric] else "max_primary"
        raise SpecError(f"{path}: `gate.{wrong}` does not fit {metric} "
                        f"({'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better); use `gate.{right}`.")
    if not 0 < gate.get("confidence", 0.95) < 1:
        raise SpecError(f"{path}: `gate.confidence` must be between 0 and 1, e.g. 0.95.")
    if not isinstance(slices_raw, list):
        raise SpecError(f"{path}: `gate.slices` must be a list of column names or {{column, bins}} mappings.")
    slices = []
    for item in slices_raw:
        if isinstance(item, str):
            slices.append(SliceSpec(item))
        elif isinstance(item, dict) and isinstance(item.get("column"), str) and set(item) <= {"column", "bins"}:
            bins = tuple(float(b) for b in item.get("bins") or ())
            if list(bins) != sorted(set(bins)):
                raise SpecError(f"{path}: `gate.slices` bins of {item['column']!r} must increase strictly.")
            slices.append(SliceSpec(item["column"], bins))
        else:
            raise SpecError(f"{path}: `gate.slices` entry {item!r} must be a column name or {{column, bins}}.")
    return gate, tuple(slices)


def readers(dataset: str, specs: dict[str, ModelSpec]) -> list[ModelSpec]:
    """The models that read `dataset` (their owners hear about its blocked batches too)."""
    return [s for s in specs.values() if s.dataset.name == dataset]


def load_specs(directory: Path | None = None) -> dict[str, ModelSpec]:
    """Every spec under models/, keyed by name. Reads only the YAML files."""
    specs: dict[str, ModelSpec] = {}
    for path in sorted((directory or models_dir()).glob("*.yaml")):
        spec = load_spec(path)
        if spec.name in specs:
            raise SpecError(f"{path}: model name {spec.name!r} is already declared in {specs[spec.name].path}.")
        specs[spec.name] = spec
    return specs
