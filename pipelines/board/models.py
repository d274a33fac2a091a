"""A model's board: its aliases, its gate decisions and registry moves, its metric over time, its drift.

Read from the registry (versions, their `flywheel.*` tags, the alias history) and from the monitor's
verdicts under `Layout.reports(model)`. Times: `created` is when MLflow registered a version (wall
clock), `trained_as_of` / window ends are data time, as the loop records them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines import storage, tags
from pipelines.board.files import FileRef, ref_for

if TYPE_CHECKING:
    from pipelines.layout import Layout
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    text: str   # "value=... threshold=... | detail", as the gate recorded it


@dataclass(frozen=True)
class VersionFacts:
    version: str
    run_id: str
    created: datetime | None         # registered in MLflow (wall clock)
    trained_as_of: str | None        # data time of the training (flywheel.trained_as_of)
    metric_value: float | None       # the primary metric on its gate holdout
    decision: str | None             # promoted | rejected | None (never gated)
    reason: str
    aliases: tuple[str, ...]
    checks: tuple[GateCheck, ...] = ()
    improvement: str | None = None
    card: FileRef | None = None
    run_key: str | None = None       # the train run that made it (flywheel.run_key)
    override: str | None = None      # promote | reject, by a human

    def age(self, now: datetime) -> str:
        return _age(self.created, now)


@dataclass(frozen=True)
class TimelineEvent:
    at: str                          # ISO, wall clock
    kind: str                        # gate | promote | rollback | override-promote | override-reject | ...
    version: str | None
    headline: str
    reason: str
    actor: str = ""
    checks: tuple[GateCheck, ...] = ()
    dag_id: str | None = None        # the Airflow run behind it, when known
    run_id: str | None = None
    run_key: str | None = None       # a sanitized run id (the page resolves it against Airflow's runs)


@dataclass(frozen=True)
class MetricPoint:
    at: datetime                     # data time: a version's training end, or a window's end
    value: float
    kind: str                        # holdout | live
    version: str | None
    label: str


@dataclass(frozen=True)
class DriftWindow:
    key: str
    interval_start: str
    interval_end: str
    champion_version: str | None
    drifted_share: float
    drift_detected: bool
    columns: dict[str, dict[str, Any]]   # column -> {score, threshold, drifted, method, kind}
    decision: str                        # the retrain policy's reason
    request: bool
    performance: dict[str, Any] = field(default_factory=dict)
    report: FileRef | None = None
    verdict: FileRef | None = None
    email: str | None = None
    rows_by_source: dict[str, int] = field(default_factory=dict)   # {"batch": n, "online": m}: where the rows came from


@dataclass(frozen=True)
class ModelBoard:
    name: str
    dataset: str
    description: str
    registered_model: str
    metric: str
    higher_is_better: bool
    champion: VersionFacts | None
    challenger: VersionFacts | None
    previous: VersionFacts | None
    versions: tuple[VersionFacts, ...]
    timeline: tuple[TimelineEvent, ...]
    metric_points: tuple[MetricPoint, ...]
    drift: tuple[DriftWindow, ...]
    drift_share: float                   # the spec's drift.drift_share
    problems: tuple[str, ...] = ()       # what could not be read (MLflow down, a broken verdict...)
    golden: tuple[tuple[str, str, str], ...] = ()   # (version, golden set, "PASS|FAIL sha256=...") per gated version
    costs: tuple[dict[str, Any], ...] = ()          # pipelines/release/cost.weekly_costs: per data week
    # the champion sentinel's alarm (pipelines/sentinel.py): `champion` moved outside the audited path (None: fine)
    out_of_band: str | None = None


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "—"
    s = max(0.0, (now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit}"
    return f"{int(s)} s"


def _float(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _checks(version_tags: dict[str, str]) -> tuple[GateCheck, ...]:
    out = []
    for k in sorted(version_tags):
        if k.startswith(tags.GATE_CHECK_PREFIX):
            raw = version_tags[k]
            status, _, rest = raw.partition(" ")
            out.append(GateCheck(k.removeprefix(tags.GATE_CHECK_PREFIX), status.upper() == "PASS", rest.strip()))
    return tuple(out)


def version_facts(mv: Any, aliases: dict[str, str], card: FileRef | None = None) -> VersionFacts:
    """One MLflow model version as the board shows it."""
    t = dict(mv.tags or {})
    version = str(mv.version)
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC) if mv.creation_timestamp else None
    return VersionFacts(
        version=version, run_id=str(mv.run_id or ""), created=created,
        trained_as_of=t.get(tags.TRAINED_AS_OF) or t.get(tags.TRAINED_UNTIL),
        metric_value=_float(t.get(tags.GATE_CHALLENGER_VALUE)),
        decision=t.get(tags.GATE_DECISION), reason=t.get(tags.GATE_REASON, ""),
        aliases=tuple(sorted(a for a, v in aliases.items() if str(v) == version)),
        checks=_checks(t), improvement=t.get(tags.GATE_IMPROVEMENT),
        card=card, run_key=t.get(tags.RUN_KEY), override=t.get(tags.OVERRIDE_ACTION),
    )


def _run_of(actor: str) -> tuple[str | None, str | None]:
    """`<who> via <dag_id> run <run_id>` (flywheel.dagkit.actor) -> (dag_id, run_id)."""
    _, via, rest = actor.partition(" via ")
    dag_id, run, run_id = rest.partition(" run ")
    return (dag_id.strip(), run_id.strip()) if via and run and dag_id.strip() and run_id.strip() else (None, None)


def _history_event(entry: dict[str, Any]) -> TimelineEvent:
    action = str(entry.get("action", "move"))
    moves = entry.get("moves") or []
    def v(x: Any) -> str:
        return f"v{x}" if x is not None else "none"

    what = ", ".join(f"{m.get('alias')} {v(m.get('from'))} → {v(m.get('to'))}" for m in moves) or "no alias moved"
    if action == "out-of-band":     # the champion sentinel's alarm (pipelines/sentinel.py)
        what = f"champion found on {v(entry.get('observed'))}, audited {v(entry.get('audited'))}"
    version = entry.get("to_version") or entry.get("version") or next(
        (m.get("to") for m in moves if m.get("alias") == CHAMPION), None)
    dag_id, run_id = _run_of(str(entry.get("actor", "")))
    return TimelineEvent(at=str(entry.get("at", "")), kind=action, version=str(version) if version else None,
                         headline=f"{action}: {what}", reason=str(entry.get("reason", "")),
                         actor=str(entry.get("actor", "")), dag_id=dag_id, run_id=run_id,
                         run_key=entry.get("run_key"))


def _gate_event(spec: ModelSpec, v: VersionFacts) -> TimelineEvent:
    value = f"{v.metric_value:.4g}" if v.metric_value is not None else "n/a"
    headline = f"gate: v{v.version} {v.decision} ({spec.primary_metric} {value}"
    headline += f", improvement {v.improvement})" if v.improvement and v.improvement != "n/a" else ")"
    return TimelineEvent(at=v.created.isoformat() if v.created else "", kind="gate", version=v.version,
                         headline=headline, reason=v.reason, actor="gate", checks=v.checks,
                         dag_id=f"train__{spec.name}", run_key=v.run_key)


def read_windows(spec: ModelSpec, layout: Layout) -> tuple[list[DriftWindow], list[str]]:
    """Every monitor window of the model (oldest first), with its per-column scores and its performance."""
    from pipelines.monitor.reports import list_reports

    reports = layout.reports(spec.name)
    problems: list[str] = []
    windows = []
    for h in list_reports(reports):
        verdict: dict[str, Any] = {}
        try:
            verdict = json.loads(storage.read_text(h["verdict_json"]))
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"monitor verdict {h.get('key')} of {spec.name} unreadable: {exc}")
        decision = verdict.get("decision") or {}
        windows.append(DriftWindow(
            key=str(h.get("key")), interval_start=str(h.get("interval_start", "")),
            interval_end=str(h.get("interval_end", "")), champion_version=h.get("champion_version"),
            drifted_share=float(h.get("drifted_share") or 0.0), drift_detected=bool(h.get("drift_detected")),
            columns=dict(verdict.get("columns") or {}), decision=str(decision.get("reason") or h.get("reason", "")),
            request=bool(h.get("request")), performance=dict(verdict.get("performance") or {}),
            report=ref_for(h.get("report_html"), layout, "reports", spec.name),
            verdict=ref_for(h.get("verdict_json"), layout, "reports", spec.name),
            email=h.get("email"),
            rows_by_source={str(k): int(v) for k, v in (verdict.get("rows_by_source") or {}).items()},
        ))
    return windows, problems


def metric_points(spec: ModelSpec, versions: list[VersionFacts], windows: list[DriftWindow]) -> list[MetricPoint]:
    """The primary metric over data time: each version on its gate holdout, each labelled live window."""
    points = []
    for v in versions:
        at = _parse_time(v.trained_as_of)
        if at is not None and v.metric_value is not None:
            points.append(MetricPoint(at, v.metric_value, "holdout", v.version,
                                      f"v{v.version} gate holdout ({v.decision or 'not gated'})"))
    for w in windows:
        value, at = _float(w.performance.get("value")), _parse_time(w.interval_end)
        if value is not None and at is not None:
            rows = w.performance.get("labelled_rows")
            points.append(MetricPoint(at, value, "live", w.champion_version,
                                      f"window {w.key}, v{w.champion_version} live ({rows} labelled rows)"))
    return sorted(points, key=lambda p: (p.at, p.kind))


def model_board(spec: ModelSpec, layout: Layout, client: Any, now: datetime) -> ModelBoard:
    """Everything the page shows about one model. MLflow unreachable or a broken verdict: said in `problems`,
    the rest is still shown."""
    from mlflow.exceptions import MlflowException

    from pipelines.gate import alias_history

    name = spec.registered_model_name
    problems: list[str] = []
    versions: list[VersionFacts] = []
    history: list[dict[str, Any]] = []
    aliases: dict[str, str] = {}
    try:
        rm = client.get_registered_model(name)
        aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
        for mv in client.search_model_versions(f"name='{name}'"):
            t = dict(mv.tags or {})
            card = FileRef("cards", spec.name, str(mv.version)) if t.get(tags.MODEL_CARD) else None
            versions.append(version_facts(mv, aliases, card))
        history = alias_history(spec, client)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            problems.append(f"{name} is not registered yet: train__{spec.name} has not produced a version.")
        else:
            problems.append(f"MLflow did not answer for {name}: {exc}")
    except OSError as exc:
        problems.append(f"MLflow did not answer for {name}: {exc}")
    versions.sort(key=lambda v: int(v.version) if v.version.isdigit() else 0)
    by_version = {v.version: v for v in versions}
    golden, costs = [], []
    if versions:
        from pipelines.release.cost import model_weekly_costs

        try:
            for mv in client.search_model_versions(f"name='{name}'"):
                golden += [(str(mv.version), k.removeprefix(tags.GOLDEN_PREFIX), v)
                           for k, v in sorted((mv.tags or {}).items()) if k.startswith(tags.GOLDEN_PREFIX)]
            costs = model_weekly_costs(client, name)[1]
        except (MlflowException, OSError) as exc:
            problems.append(f"golden-set verdicts and costs of {name} not read: {exc}")
    golden.sort(key=lambda g: (int(g[0]) if g[0].isdigit() else 0, g[1]))
    out_of_band = None
    if versions or history:
        from pipelines.sentinel import judge

        verdict = judge(spec, history, aliases.get(CHAMPION), now)
        out_of_band = verdict.detail if verdict.alarm else None
    windows, bad = read_windows(spec, layout)
    problems += bad
    timeline = [_gate_event(spec, v) for v in versions if v.decision]
    timeline += [_history_event(e) for e in history]
    timeline.sort(key=lambda e: e.at)
    return ModelBoard(
        name=spec.name, dataset=spec.dataset.name, description=spec.description, registered_model=name,
        metric=spec.primary_metric, higher_is_better=spec.higher_is_better,
        champion=by_version.get(aliases.get(CHAMPION, "")), challenger=by_version.get(aliases.get(CHALLENGER, "")),
        previous=by_version.get(aliases.get(PREVIOUS, "")), versions=tuple(versions), timeline=tuple(timeline),
        metric_points=tuple(metric_points(spec, versions, windows)), drift=tuple(windows),
        drift_share=spec.drift.drift_share, problems=tuple(problems), golden=tuple(golden), costs=tuple(costs),
        out_of_band=out_of_band,
    )
