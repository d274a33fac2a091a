"""Explanations a reviewer and an on-call engineer can read: global importance per version, and the top
contributions of each scored row.

* **Global** (in the model card): XGBoost's total gain per feature, and the mean absolute SHAP contribution
  (exact TreeSHAP, `pred_contribs=True`) over `explain.importance_rows` holdout rows, written as
  `explain/importance.json` on the version's run.
* **Per row** (with the scores): the `explain.top_k` largest contributions of each row, as columns
  `contribution_<i>_feature` / `contribution_<i>_value` (i = 1..k, largest |value| first), in margin units
  (log-odds for a classifier). They come from XGBoost's approximate contributions (`approx_contribs=True`,
  Saabas: the path each row takes through each tree): exact TreeSHAP costs ~70 s per million rows at 40
  trees with these categorical splits, 30-50x the approximation (bench/explain.py). Both satisfy
  XGBoost's identity: a row's contributions plus the bias sum to its margin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

IMPORTANCE_ARTIFACT = "explain/importance.json"


def contributions(booster: xgb.Booster, matrix: pd.DataFrame, exact: bool = False) -> np.ndarray:
    """(rows, features + 1) contributions in margin units; the last column is the bias."""
    import xgboost as xgb

    dm = xgb.DMatrix(matrix, enable_categorical=True)
    return booster.predict(dm, pred_contribs=True, approx_contribs=not exact)


def explained_rows(booster: xgb.Booster, matrix: pd.DataFrame, prediction: np.ndarray, k: int,
                   min_prediction: float | None = None) -> dict[str, Any]:
    """The top-k columns for every row of `matrix`, or, with `min_prediction`, for the rows whose prediction is
    at least that (the others get missing values): what the scoring log stores."""
    import numpy as np
    import pandas as pd

    names = list(matrix.columns)
    if min_prediction is None:
        return top_contributions(contributions(booster, matrix), names, k)
    keep = np.asarray(prediction) >= min_prediction
    some = top_contributions(contributions(booster, matrix.loc[keep]), names, k) if keep.any() else {}
    out: dict[str, Any] = {}
    for i in range(1, min(k, len(names)) + 1):
        codes = np.full(len(matrix), -1, dtype=np.int64)
        values = np.full(len(matrix), np.nan, dtype=np.float32)
        if some:
            codes[keep] = some[f"contribution_{i}_feature"].codes
            values[keep] = some[f"contribution_{i}_value"]
        out[f"contribution_{i}_feature"] = pd.Categorical.from_codes(codes, categories=names)
        out[f"contribution_{i}_value"] = values
    return out


def top_contributions(contribs: np.ndarray, names: list[str], k: int) -> dict[str, Any]:
    """Columns `contribution_<i>_feature` / `contribution_<i>_value` (i = 1..k) of each row's k largest |values|
    (the bias column left out)."""
    import numpy as np

    values = np.asarray(contribs)[:, : len(names)]
    k = min(k, len(names))
    if k <= 0 or len(values) == 0:
        return {}
    mag = np.abs(values)
    part = np.argpartition(-mag, k - 1, axis=1)[:, :k] if k < len(names) else np.tile(np.arange(len(names)),
                                                                                        (len(values), 1))
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(mag, part, axis=1), axis=1, kind="stable"),
                               axis=1)
    import pandas as pd

    out: dict[str, Any] = {}
    for i in range(k):
        idx = order[:, i]
        # categorical: a code per row, the names once (parquet writes it as a dictionary; ~0.4 s less per 1M rows)
        out[f"contribution_{i + 1}_feature"] = pd.Categorical.from_codes(idx, categories=list(names))
        out[f"contribution_{i + 1}_value"] = values[np.arange(len(values)), idx].astype("float32")
    return out


def global_importance(booster: xgb.Booster, matrix: pd.DataFrame, names: list[str], rows: int,
                      seed: int = 0) -> list[dict[str, Any]]:
    """Per feature: total gain, and mean |SHAP| over up to `rows` rows of `matrix` (exact TreeSHAP), sorted by
    mean |SHAP|, largest first."""
    import numpy as np

    sample = matrix.sample(n=min(rows, len(matrix)), random_state=seed) if len(matrix) else matrix
    gain = booster.get_score(importance_type="total_gain")
    shap = (np.abs(contributions(booster, sample, exact=True)[:, : len(names)]).mean(axis=0)
            if len(sample) else np.full(len(names), np.nan))
    out = [{"feature": f, "mean_abs_shap": float(shap[i]), "total_gain": float(gain.get(f, 0.0))}  # type: ignore[arg-type]
           for i, f in enumerate(names)]
    return sorted(out, key=lambda r: -r["mean_abs_shap"] if np.isfinite(r["mean_abs_shap"]) else 0.0)
