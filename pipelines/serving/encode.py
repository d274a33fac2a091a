"""The model's input matrix for request rows: the same values `pipelines.model.to_matrix_frame` gives, built with
plain Python and numpy (to_matrix_frame on one row costs ~5 ms of pandas; this ~20 µs).

Per input column, in the version's feature order (`features.json`):
- a categorical column (the version's `categories.json`, else the contract's allowed sets, as to_matrix_frame):
  the value as text, coded by its position in the version's categories; a value unseen at training is missing
  (NaN: XGBoost's missing branch), counted;
- a timestamp row feature: seconds since the epoch (a naive time is UTC);
- anything else: a float (None, or text that is no number, is missing).

tests/unit/test_serving.py holds it equal to to_matrix_frame + predict, row by row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.serving.schema import parse_time

if TYPE_CHECKING:
    import numpy as np

    from pipelines.spec import ModelSpec

NAN = float("nan")


def _text(value: Any) -> str:
    """A value as pandas' `astype("string")` writes it (so 5 and "5" are one category)."""
    if isinstance(value, float) and value.is_integer():
        return repr(value)          # 5.0 -> "5.0", as pandas does
    return str(value)


@dataclass(frozen=True)
class MatrixEncoder:
    features: tuple[str, ...]
    kinds: tuple[str, ...]                       # per column: "categorical" | "timestamp" | "number"
    codes: tuple[dict[str, int] | None, ...]     # per categorical column: category -> code

    @classmethod
    def of(cls, spec: ModelSpec, features: list[str], categories: dict[str, list[str]] | None) -> MatrixEncoder:
        from pipelines.model import _row_features_of_type, contract_categories

        cats = categories if categories is not None else contract_categories(spec, features)
        stamps = set(_row_features_of_type(spec, features, "timestamp"))
        kinds: list[str] = []
        codes: list[dict[str, int] | None] = []
        for name in features:
            if name in cats:
                kinds.append("categorical")
                codes.append({c: i for i, c in enumerate(cats[name])})
            else:
                kinds.append("timestamp" if name in stamps else "number")
                codes.append(None)
        return cls(tuple(features), tuple(kinds), tuple(codes))

    def frame(self, matrix: np.ndarray) -> Any:
        """The matrix as the DataFrame `pipelines.model.to_matrix_frame` builds (categoricals with their recorded
        categories): what XGBoost's contributions need (they go through a DMatrix)."""
        import numpy as np
        import pandas as pd

        cols: dict[str, Any] = {}
        for j, (name, kind, codes) in enumerate(zip(self.features, self.kinds, self.codes, strict=True)):
            if kind == "categorical" and codes is not None:
                values = matrix[:, j]
                ints = np.where(np.isnan(values), -1, values).astype(np.int64)
                cols[name] = pd.Categorical.from_codes(ints, categories=list(codes))
            else:
                cols[name] = matrix[:, j]
        return pd.DataFrame(cols)

    def matrix(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, int]]:
        """The float64 matrix of `rows` (each a dict holding every feature) and the unseen categories per column."""
        import numpy as np

        out = np.empty((len(rows), len(self.features)), dtype=np.float64)
        unseen: dict[str, int] = {}
        for j, (name, kind, codes) in enumerate(zip(self.features, self.kinds, self.codes, strict=True)):
            for i, row in enumerate(rows):
                value = row.get(name)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    out[i, j] = NAN
                elif kind == "categorical":
                    code = codes.get(_text(value)) if codes is not None else None
                    if code is None:
                        unseen[name] = unseen.get(name, 0) + 1
                        out[i, j] = NAN
                    else:
                        out[i, j] = code
                elif kind == "timestamp":
                    ts = parse_time(value) if isinstance(value, str) else None
                    out[i, j] = ts.timestamp() if ts is not None else NAN
                else:
                    try:
                        out[i, j] = float(value)
                    except (TypeError, ValueError):
                        out[i, j] = NAN
        return out, unseen
