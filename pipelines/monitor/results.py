"""The drift stage's results: a window's verdict, the retrain decision, per-column scores.

Plain frozen dataclasses, JSON-able through `to_dict()`; `_ranked` orders a verdict's columns by how
far past their threshold they are (the email's and the summary's order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class DriftResult:
    model: str
    interval_start: str  # ISO, the window of current data
    interval_end: str
    champion_version: str | None
    rows_reference: int  # rows given to Evidently (after sampling)
    rows_current: int
    columns: dict[str, dict]  # column -> {"score", "drifted", "method", "method_id", "kind", "threshold"}
    drifted_share: float
    drift_detected: bool  # drifted_share >= spec.drift.drift_share
    report_html: str  # location (path or URI) of the Evidently HTML report
    verdict_json: str  # location (path or URI) of the JSON verdict
    performance: dict[str, Any] = field(default_factory=dict)  # see performance_drift(); {} = not checked
    rows_current_total: int | None = None  # rows in the window before sampling (None: not sampled)
    # rows of the window before sampling by where they were scored: {"batch": n, "online": m} ({} = not counted)
    rows_by_source: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DriftResult:
        """From `to_dict()` or a verdict JSON (extra keys such as `decision` are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @property
    def drifted_columns(self) -> list[str]:
        """Drifted columns, most drifted first (score relative to its threshold)."""
        return [c for c in _ranked(self.columns) if self.columns[c]["drifted"]]

    @property
    def drifted_count(self) -> int:
        return sum(1 for v in self.columns.values() if v["drifted"])

    @property
    def performance_degraded(self) -> bool:
        return self.performance.get("status") == "degraded"


@dataclass(frozen=True)
class RetrainDecision:
    request: bool
    reason: str
    # which rule decided: no_alarm | hysteresis | dedupe | cooldown | champion_newer | requested
    rule: str = ""
    alarm: bool = False  # this window alarmed (drift, or a performance drop that may trigger retrains)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ColumnScores:
    """Per-column drift verdicts of one comparison, before any file is written."""

    columns: dict[str, dict]
    drifted_share: float
    drift_detected: bool
    rows_reference: int
    rows_current: int


def _severity(v: Mapping[str, Any]) -> float:
    """How far past its threshold a column is: score/threshold for distances, threshold/p for p-values."""
    score, thr = float(v["score"]), float(v["threshold"]) or 1.0
    if not math.isfinite(score):
        return math.inf
    if v.get("kind", "distance") == "p_value":
        return thr / max(score, 1e-300)
    return score / thr


def _ranked(columns: dict[str, dict]) -> list[str]:
    return sorted(columns, key=lambda c: (not columns[c]["drifted"], -_severity(columns[c]), c))


@dataclass(frozen=True)
class EmailPlan:
    """Whether this window's verdict is emailed, and which alarm episode it belongs to (`plan_email`)."""

    send: bool
    # first (an episode starts) | reminder (it still alarms, the cooldown since its last email is over) |
    # digest (digest mode: the windows not emailed yet, when the cooldown is over or the alarm cleared) |
    # persisting (no email: inside the cooldown of its episode) | quiet (nothing alarms)
    kind: str
    episode: str | None  # key of the episode's first window; None outside an episode
    reason: str
    windows: tuple[str, ...] = ()  # the keys a digest covers, oldest first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
