"""What each model version costs: CPU seconds, wall time and peak memory of its training, its gate and each
scoring run, recorded on the version's MLflow run and summed per model per week.

Recorded as MLflow metrics of the version's training run, `cost.<stage>.cpu_s`, `cost.<stage>.wall_s`,
`cost.<stage>.peak_mb` (stage: train, gate, score), with `step` = the data day the work was for (days since
1970-01-01 of the interval start for scoring, of the training as-of for train and gate), so a re-run of the
same interval adds a second value at the same step and `weekly_costs` keeps the last one (idempotent sums).

`peak_mb` is the task process's peak resident memory (`getrusage` maxrss: on Linux a forked task starts with
the pages it shares with the scheduler that forked it, so it includes the preloaded libraries), `cpu_s` the
process's user + system time during the work (threads included: XGBoost's two), `wall_s` the elapsed time.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

STAGES = ("train", "gate", "score")
FIELDS = ("cpu_s", "wall_s", "peak_mb")


@dataclass
class Cost:
    cpu_s: float = math.nan
    wall_s: float = math.nan
    peak_mb: float = math.nan

    def to_dict(self) -> dict[str, float]:
        return {"cpu_s": self.cpu_s, "wall_s": self.wall_s, "peak_mb": self.peak_mb}


def metric_name(stage: str, what: str) -> str:
    if stage not in STAGES or what not in FIELDS:
        raise ValueError(f"cost of stage {stage!r} / {what!r}: stages {STAGES}, fields {FIELDS}")
    return f"cost.{stage}.{what}"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


@contextmanager
def measured() -> Iterator[Cost]:
    """Measure the block: `with measured() as cost: ...`; `cost` is filled when the block ends (also on error)."""
    cost = Cost()
    t, c = time.perf_counter(), time.process_time()
    try:
        yield cost
    finally:
        cost.wall_s = time.perf_counter() - t
        cost.cpu_s = time.process_time() - c
        cost.peak_mb = _peak_mb()


def data_day(when: datetime) -> int:
    """The MLflow step of a cost: days since 1970-01-01 of the data time the work was for."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime(1970, 1, 1, tzinfo=UTC)).days


def record_cost(client: Any, run_id: str, stage: str, cost: Cost, when: datetime) -> None:
    """Log the cost on the version's training run (MLflow metrics, step = the data day `when`); an MLflow error is
    logged, not raised."""
    step = data_day(when)
    stamp = int(time.time() * 1000)
    try:
        for what, value in cost.to_dict().items():
            if math.isfinite(value):
                client.log_metric(run_id, metric_name(stage, what), float(value), timestamp=stamp, step=step)
    except Exception:   # the work is done and recorded; a cost MLflow could not take must not fail (and redo) it
        log.exception("the cost of %s on run %s could not be logged", stage, run_id)
        return
    log.info("cost of %s for %s (run %s): %.2f CPU s, %.2f s wall, peak %.0f MB", stage, when.date(), run_id,
             cost.cpu_s, cost.wall_s, cost.peak_mb)


def week_start(day: int) -> str:
    """The Monday (ISO date) of the week holding data day `day`."""
    d = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)
    return (d - timedelta(days=d.weekday())).date().isoformat()


def version_costs(client: Any, run_id: str) -> dict[str, dict[int, dict[str, float]]]:
    """stage -> data day -> {cpu_s, wall_s, peak_mb} of one version's run (the last value logged per day)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for stage in STAGES:
        for what in FIELDS:
            last: dict[int, tuple[int, float]] = {}
            for m in client.get_metric_history(run_id, metric_name(stage, what)):
                if m.step not in last or m.timestamp >= last[m.step][0]:
                    last[m.step] = (m.timestamp, m.value)
            for day, (_, value) in last.items():
                out.setdefault(stage, {}).setdefault(day, {})[what] = value
    return out


def weekly_costs(per_version: dict[str, dict[str, dict[int, dict[str, float]]]]) -> list[dict[str, Any]]:
    """Per data week (Monday): CPU and wall seconds summed over every version's runs of each stage, and the
    largest peak, from {version: version_costs(...)}. Pure."""
    weeks: dict[str, dict[str, Any]] = {}
    for costs in per_version.values():
        for stage, days in costs.items():
            for day, c in days.items():
                w = weeks.setdefault(week_start(day), {"week": week_start(day), "runs": {}, "cpu_s": 0.0,
                                                       "wall_s": 0.0, "peak_mb": 0.0})
                w["runs"][stage] = w["runs"].get(stage, 0) + 1
                w["cpu_s"] += c.get("cpu_s", 0.0)
                w["wall_s"] += c.get("wall_s", 0.0)
                w["peak_mb"] = max(w["peak_mb"], c.get("peak_mb", 0.0))
                for what in ("cpu_s", "wall_s"):
                    key = f"{stage}_{what}"
                    w[key] = w.get(key, 0.0) + c.get(what, 0.0)
    return [{**w, "cpu_s": round(w["cpu_s"], 3), "wall_s": round(w["wall_s"], 3), "peak_mb": round(w["peak_mb"], 1)}
            for _, w in sorted(weeks.items())]


def model_weekly_costs(client: Any, registered_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """({version: version_costs}, weekly_costs) of every version of a registered model."""
    per_version = {}
    for mv in client.search_model_versions(f"name='{registered_name}'"):
        per_version[str(mv.version)] = version_costs(client, mv.run_id)
    return per_version, weekly_costs(per_version)
