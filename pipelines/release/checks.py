"""The release checks the gate runs beside its holdout checks: golden sets and fairness parity.

`release_checks` turns them into the gate's `Check`s (one per golden set, one per fairness rule), so the
decision, its tags, the model card and the Flywheel page show them like every other check, and a failing
golden set (or a blocking parity rule) means "not promoted".
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipelines.gate import Check
    from pipelines.spec import ModelSpec


def release_checks(spec: ModelSpec, holdout: pd.DataFrame, y: np.ndarray, challenger_pred: np.ndarray | None,
                   features: list[str], predict_version: Any, challenger_version: str,
                   champion_version: str | None) -> tuple[list[Check], dict[str, Any]]:
    """(checks, record): the golden sets' and the fairness rules' checks, and their full results (JSON-able)
    for the decision artifact and the card."""
    from pipelines.gate import Check
    from pipelines.release.fairness import parity
    from pipelines.release.golden import evaluate_golden
    from pipelines.util import json_safe

    checks: list[Check] = []
    record: dict[str, Any] = {"golden": [], "fairness": []}
    for r in evaluate_golden(spec, features, predict_version, challenger_version, champion_version):
        checks.append(Check(f"golden.{r.name}", r.passed, r.challenger, None, r.detail))
        record["golden"].append(json_safe(asdict(r)))
    for rule in spec.fairness:
        if challenger_pred is None or rule.column not in holdout.columns:
            missing = ("no challenger predictions" if challenger_pred is None
                       else f"column {rule.column!r} is not in the holdout")
            checks.append(Check(f"fairness.{rule.column}.{rule.metric}", not rule.blocking, None, rule.threshold,
                                f"{rule.metric} by {rule.column}: not computed ({missing})"
                                + (" — blocking rule: not promoted" if rule.blocking else "")))
            continue
        res = parity(rule, y, challenger_pred, holdout[rule.column].to_numpy())
        detail = res.detail + ("" if res.passed or not res.blocking else " — blocking rule: not promoted")
        if not res.passed and not res.blocking:
            detail += " (reported, not blocking)"
        # a non-blocking breach is recorded as a passing check with its detail: promotion is not held up by it
        checks.append(Check(f"fairness.{rule.column}.{rule.metric}", res.passed or not res.blocking, res.value,
                            rule.threshold, detail))
        record["fairness"].append(res.to_dict())
    return checks, record
