"""Performance drift: the primary metric on the window's labelled rows vs the champion's gate-time value.

The reference is the champion version's `tags.GATE_CHALLENGER_VALUE` tag (its primary metric on its gate
holdout), read by `_gate_value`; `performance_drift` itself is pure.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from pipelines import tags

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipelines.spec import ModelSpec

log = logging.getLogger(__name__)


def performance_drift(
    spec: ModelSpec,
    labels: np.ndarray | pd.Series | None,
    predictions: np.ndarray | pd.Series | None,
    reference_value: float | None,
    *,
    unavailable: str | None = None,
    rows_pending: int = 0,
) -> dict[str, Any]:
    """The primary metric on the window's labelled rows vs the champion's gate-time holdout value.

    status: "degraded" (worse by more than drift.performance.max_drop, relative), "ok",
    "unknown" (no gate-time value to compare with), "insufficient_labels" (fewer than min_rows labelled
    rows, fewer than min_positives positives, or a one-class window) or "not_applicable" (`unavailable`
    says why, e.g. the label kind cannot be joined row by row). Pure: no I/O.
    """
    import numpy as np

    from pipelines.metrics import metric

    d = spec.drift
    out: dict[str, Any] = {
        "metric": spec.primary_metric,
        "higher_is_better": spec.higher_is_better,
        "value": None,
        "reference_value": reference_value,
        "reference": f"champion's gate holdout ({tags.GATE_CHALLENGER_VALUE})",
        "drop": None,
        "max_drop": d.performance_max_drop,
        "labelled_rows": 0,
        "rows_pending": int(rows_pending),
        "triggers_retrain": d.performance_retrain,
    }
    if unavailable is not None:
        return {**out, "status": "not_applicable", "detail": unavailable}
    y = np.asarray(labels if labels is not None else [], dtype="float64")
    p = np.asarray(predictions if predictions is not None else [], dtype="float64")
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    out["labelled_rows"] = int(len(y))
    need = f"needs >= {d.performance_min_rows} labelled rows"
    if spec.task == "binary":
        out["positives"] = int((y > 0.5).sum())
        need += f" and >= {d.performance_min_positives} positives"
    if len(y) < d.performance_min_rows or (spec.task == "binary" and out["positives"] < d.performance_min_positives):
        got = f"{len(y)} labelled rows" + (f", {out['positives']} positives" if spec.task == "binary" else "")
        return {**out, "status": "insufficient_labels", "detail": f"{got}; {need}"}
    value = metric(spec.primary_metric).value(y, p)  # the registry's estimate, as at the gate
    if not math.isfinite(value):
        return {**out, "status": "insufficient_labels", "detail": f"{spec.primary_metric} is undefined on these labels"}
    out["value"] = float(value)
    if reference_value is None or not math.isfinite(reference_value):
        return {
            **out,
            "reference_value": None,
            "status": "unknown",
            "detail": f"the champion has no usable {tags.GATE_CHALLENGER_VALUE} tag; nothing to compare with",
        }
    worse = (reference_value - value) if spec.higher_is_better else (value - reference_value)
    drop = worse / abs(reference_value) if reference_value != 0 else (math.inf if worse > 0 else 0.0)
    out["drop"] = float(drop)
    status = "degraded" if drop > d.performance_max_drop else "ok"
    # in the metric's own direction: an AP that rose, or an MAE that fell, is "better", never "-47% worse"
    change = f"{100 * abs(drop):.0f}% {'worse' if drop > 0 else 'better'}" if drop else "unchanged"
    detail = (
        f"{spec.primary_metric} {value:.4g} on {len(y):,} labelled rows vs {reference_value:.4g} at the gate "
        f"({change}; degraded beyond {100 * d.performance_max_drop:.0f}% worse)"
    )
    return {**out, "status": status, "detail": detail}


def _gate_value(model_name: str, version: str) -> float | None:
    """The champion's primary metric on its gate holdout (version tag tags.GATE_CHALLENGER_VALUE), None if absent."""
    from mlflow import MlflowClient

    try:
        raw = MlflowClient().get_model_version(model_name, version).tags.get(tags.GATE_CHALLENGER_VALUE)
        value = float(raw) if raw not in (None, "", "None") else None
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value):
        log.warning(
            "%s v%s has no usable %s tag; performance drift is recorded as unknown",
            model_name,
            version,
            tags.GATE_CHALLENGER_VALUE,
        )
        return None
    return value
