"""Verdict files and the reports index: `reports/<model>/<key>.json` and one line per key in index.jsonl.

Re-running a key overwrites its verdict and its index line; `list_reports` reads the index back
(the retrain policy's history).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.util import json_safe

if TYPE_CHECKING:
    from pipelines.monitor.results import DriftResult, EmailPlan, RetrainDecision
    from pipelines.spec import ModelSpec
    from pipelines.storage import Location

log = logging.getLogger(__name__)

INDEX_FILE = "index.jsonl"


def list_reports(reports_dir: Location) -> list[dict[str, Any]]:
    """Every drift report of a model (reports/<model>/index.jsonl), oldest window first.

    Each entry: key, interval_start, interval_end, champion_version, rows_current (rows_online of them: the
    serving endpoint's requests), drifted_share,
    drift_detected, drifted_columns, performance (status), alarm, request, rule, reason, report_html,
    verdict_json and email (sent | failed | None when no email was due or it has not run yet).
    """
    path = storage.join(reports_dir, INDEX_FILE)
    if not storage.is_file(path):
        return []
    entries = [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
    return sorted(entries, key=lambda h: (str(h.get("interval_end", "")), str(h.get("key", ""))))


def index_entry(
    key: str, result: DriftResult, decision: RetrainDecision, plan: EmailPlan | None = None
) -> dict[str, Any]:
    return {
        "key": key,
        "interval_start": result.interval_start,
        "interval_end": result.interval_end,
        "champion_version": result.champion_version,
        "rows_current": result.rows_current_total or result.rows_current,
        "rows_online": result.rows_by_source.get("online", 0),
        "drifted_share": round(result.drifted_share, 4),
        "drift_detected": result.drift_detected,
        "drifted_columns": result.drifted_columns,
        "performance": result.performance.get("status"),
        "alarm": decision.alarm,
        "request": decision.request,
        "rule": decision.rule,
        "reason": decision.reason,
        "report_html": result.report_html,
        "verdict_json": result.verdict_json,
        "episode": plan.episode if plan else None,
        "emailed": plan.send if plan else None,
        "email_kind": plan.kind if plan else None,
        "email": None,
    }


def record_verdict(
    reports_dir: Location,
    key: str,
    result: DriftResult,
    decision: RetrainDecision,
    spec: ModelSpec,
    plan: EmailPlan | None = None,
) -> str:
    """Write the full verdict JSON (drift, performance, policy, decision, the email plan) and upsert the key's
    index line."""
    _check_key(key)
    d = spec.drift
    policy = {
        "drift_share": d.drift_share,
        "threshold": d.threshold,
        "methods": dict(d.methods),
        "column_overrides": {c: asdict(r) for c, r in d.columns.items()},
        "max_rows": d.max_rows,
        "hysteresis": {"alarms": d.alarm_windows, "windows": d.of_windows},
        "cooldown_days": d.cooldown_days,
        "alerts": d.alerts,
        "performance": {
            "max_drop": d.performance_max_drop,
            "min_rows": d.performance_min_rows,
            "min_positives": d.performance_min_positives,
            "retrain": d.performance_retrain,
        },
    }
    verdict = {
        **result.to_dict(),
        "decision": decision.to_dict(),
        "alarm": decision.alarm,
        "policy": policy,
        "email_plan": plan.to_dict() if plan else None,
        "episode": plan.episode if plan else None,
        "emailed": plan.send if plan else None,
        "email": None,
        "email_failed": False,
    }
    path = result.verdict_json
    _write_atomic(path, json.dumps(json_safe(verdict), indent=2).encode())
    _upsert_index(reports_dir, index_entry(key, result, decision, plan))
    return path


def _upsert_index(reports_dir: Location, entry: dict[str, Any]) -> None:
    kept = [h for h in list_reports(reports_dir) if h.get("key") != entry["key"]]
    entries = sorted([*kept, entry], key=lambda h: (str(h.get("interval_end", "")), str(h.get("key", ""))))
    data = "".join(json.dumps(json_safe(h), sort_keys=True) + "\n" for h in entries)
    _write_atomic(storage.join(reports_dir, INDEX_FILE), data.encode())


def _update_index(reports_dir: Location, key: str, changes: dict[str, Any]) -> None:
    for h in list_reports(reports_dir):
        if h.get("key") == key:
            _upsert_index(reports_dir, {**h, **changes})
            return
    log.warning("no index entry for %s in %s; email status not indexed", key, reports_dir)


def _check_key(key: str) -> None:
    if not key or "/" in key or "\\" in key or key in (".", ".."):
        raise ValueError(
            f"drift report key {key!r} must be a plain file name (no path separators), "
            "e.g. the interval key '2026-03-02'."
        )


def _write_atomic(path: Location, data: bytes) -> None:
    storage.write_bytes(data, path)
