"""The evaluation gate: challenger vs champion on the same fresh holdout. Fails closed."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class GateDecision:
    model: str
    challenger_version: str
    champion_version: str | None
    promote: bool
    reason: str
    metric: str
    challenger_value: float | None
    champion_value: float | None
    holdout_rows: int
    checks: tuple[Check, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [asdict(c) for c in self.checks]
        return d


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def decide_promotion(spec: ModelSpec, challenger_version: str, challenger_value: float | None,
                     champion_version: str | None, champion_value: float | None,
                     holdout_rows: int, champion_error: str | None = None) -> GateDecision:
    """Promote only if every check passes; anything missing or undefined means "not promoted"."""
    metric, hib = spec.primary_metric, spec.higher_is_better
    checks: list[Check] = []
    min_rows = spec.gate.get("min_holdout_rows", 1.0)
    checks.append(Check("holdout_size", holdout_rows >= min_rows, float(holdout_rows), min_rows,
                        f"{holdout_rows} holdout rows (need >= {min_rows:g})"))
    checks.append(Check("challenger_metric_defined", _finite(challenger_value), challenger_value, None,
                        f"challenger {metric} = {challenger_value}"))
    floor_key = "min_primary" if hib else "max_primary"
    floor = spec.gate.get(floor_key)
    if floor is None:
        checks.append(Check("value_threshold", False, challenger_value, None,
                            f"no `gate.{floor_key}` in {spec.path.name}: refusing to promote without one"))
    else:
        ok = _finite(challenger_value) and (challenger_value >= floor if hib else challenger_value <= floor)  # type: ignore[operator]
        checks.append(Check("value_threshold", bool(ok), challenger_value, floor,
                            f"challenger {metric} {_fmt(challenger_value)} "
                            f"(must be {'>=' if hib else '<='} {floor:g})"))
    if champion_version is None and champion_error is None:
        checks.append(Check("vs_champion", True, None, None, "no champion yet: value thresholds only"))
    elif not _finite(challenger_value):
        checks.append(Check("vs_champion", False, None, None,
                            f"challenger {metric} is undefined ({challenger_value}): cannot compare"))
    elif champion_error is not None or not _finite(champion_value):
        checks.append(Check("vs_champion", False, None, None,
                            f"champion v{champion_version} could not be evaluated: {champion_error or champion_value}"))
    else:
        min_delta = spec.gate.get("min_delta")
        delta = (challenger_value - champion_value) if hib else (champion_value - challenger_value)  # type: ignore[operator]
        if min_delta is None:
            checks.append(Check("vs_champion", False, delta, None,
                                f"no `gate.min_delta` in {spec.path.name}: refusing to promote without one"))
        else:
            ok = _finite(delta) and delta >= min_delta
            checks.append(Check("vs_champion", bool(ok), delta, min_delta,
                                f"challenger {_fmt(challenger_value)} vs champion v{champion_version} "
                                f"{_fmt(champion_value)}: improvement {_fmt(delta)} (need >= {min_delta:g})"))
    failed = [c for c in checks if not c.passed]
    promote = not failed
    if promote:
        reason = "promoted: " + "; ".join(c.detail for c in checks if c.name in ("value_threshold", "vs_champion"))
    else:
        reason = "rejected: " + "; ".join(c.detail for c in failed)
    return GateDecision(spec.name, challenger_version, champion_version, promote, reason, metric,
                        challenger_value, champion_value, holdout_rows, tuple(checks))


def _fmt(x: float | None) -> str:
    return f"{x:.4f}" if _finite(x) else str(x)


def evaluate_gate(spec: ModelSpec, challenger_version: str, holdout_path: str, features: list[str],
                  out_dir: Path) -> GateDecision:
    """Score challenger and champion on the same holdout, decide, record the decision in MLflow."""
    import pandas as pd

    from pipelines import model as m
    from pipelines.training import LABEL

    holdout = pd.read_parquet(holdout_path)
    x = m.to_matrix_frame(holdout, spec, features)
    y = holdout[LABEL].to_numpy()
    name = spec.registered_model_name
    challenger_value: float | None
    challenger_error: str | None = None
    try:
        challenger_value = m.metrics_for(spec, y, m.predict(m.load_version(name, challenger_version), x)).get(
            spec.primary_metric)
    except Exception as exc:  # fail closed: an unreadable challenger is not promoted
        log.exception("challenger v%s could not be evaluated", challenger_version)
        challenger_value = None
        challenger_error = f"challenger unreadable: {exc}"
    champ = m.champion(name)
    champion_version = champ.version if champ is not None else None
    champion_value, champion_error = None, challenger_error
    if champ is not None and champ.version == challenger_version:
        champion_error = "challenger is already the champion"
    elif champ is not None:
        try:
            champion_value = m.metrics_for(spec, y, m.predict(m.load_version(name, champ.version), x)).get(
                spec.primary_metric)
        except Exception as exc:
            log.exception("champion v%s could not be evaluated", champ.version)
            champion_error = str(exc)
    decision = decide_promotion(spec, challenger_version, challenger_value, champion_version, champion_value,
                                len(holdout), champion_error)
    record_decision(spec, decision, out_dir)
    return decision


def record_decision(spec: ModelSpec, decision: GateDecision, out_dir: Path) -> Path:
    """Tags on the challenger version plus a JSON artifact on its run."""
    from pipelines import model as m

    m.configure_mlflow_env()
    from mlflow import MlflowClient

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gate_v{decision.challenger_version}.json"
    path.write_text(json.dumps(decision.to_dict(), indent=2, default=str))
    client = MlflowClient()
    name = spec.registered_model_name
    tags = {"flywheel.gate.decision": "promoted" if decision.promote else "rejected",
            "flywheel.gate.reason": decision.reason[:5000],
            "flywheel.gate.metric": decision.metric,
            "flywheel.gate.challenger_value": str(decision.challenger_value),
            "flywheel.gate.champion_value": str(decision.champion_value),
            "flywheel.gate.champion_version": str(decision.champion_version)}
    for k, v in tags.items():
        client.set_model_version_tag(name, decision.challenger_version, k, v)
    run_id = client.get_model_version(name, decision.challenger_version).run_id
    client.log_artifact(run_id, str(path), artifact_path="gate")
    log.info("gate %s v%s: %s", spec.name, decision.challenger_version, decision.reason)
    return path


def promote(spec: ModelSpec, version: str, reason: str, when: datetime) -> dict[str, str | None]:
    """Move `champion` to `version`; the old champion keeps the `previous-champion` alias."""
    from pipelines import model as m

    m.configure_mlflow_env()
    from mlflow import MlflowClient

    client = MlflowClient()
    name = spec.registered_model_name
    old = m.champion(name)
    if old is not None and old.version == version:
        return {"champion": version, "previous": None}
    if old is not None:
        client.set_registered_model_alias(name, "previous-champion", old.version)
    client.set_registered_model_alias(name, m.CHAMPION, version)
    client.set_model_version_tag(name, version, "flywheel.promoted_at", when.isoformat())
    client.set_model_version_tag(name, version, "flywheel.promoted_reason", reason[:5000])
    log.info("%s: champion -> v%s (was %s)", name, version, old.version if old else None)
    return {"champion": version, "previous": old.version if old else None}
