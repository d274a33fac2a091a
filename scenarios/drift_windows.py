"""Monitoring windows of the card generator for judging the drift check itself (tests/unit/test_monitor.py runs one
window of each kind; bench/drift_power.py repeats them over many seeds and prints the rates).

`stable_period()`: four normal weeks of raw transactions (~60,000 rows). `split(pool, seed)`: a seeded, disjoint
reference/current pair of WINDOW_ROWS rows each from the same world (an A/A window). `shifted(pool, seed)`: a current
window with the market shift injected (amounts x1.5, the post-shift category mix). Each frame carries a synthetic
fraud score in `prediction`. WINDOW_ROWS is above Evidently's 1,000-row switch and well below `drift.max_rows`:
more noise than production sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

RAW = ["amount", "channel", "category", "country"]
CATEGORICAL = ["channel", "category", "country"]
WINDOW_ROWS = 3000


def stable_period() -> pd.DataFrame:
    import pandas as pd

    from scenarios.cards import Scenario, generate_week

    sc = Scenario()
    return pd.concat([generate_week(sc, w, "normal")[RAW] for w in range(4)], ignore_index=True)


def fraud_score(df: pd.DataFrame, seed: int) -> np.ndarray:
    import numpy as np

    rng = np.random.default_rng(seed)
    logit = (
        -7
        + 0.8 * np.log(df["amount"].to_numpy())
        + 1.3 * (df["channel"].to_numpy() == "online")
        + 1.0 * np.isin(df["category"].to_numpy(), ["electronics", "gaming"])
        + rng.normal(0, 0.3, len(df))
    )
    return 1 / (1 + np.exp(-logit))


def split(pool: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    import numpy as np

    idx = np.random.default_rng(seed).permutation(len(pool))
    ref = pool.iloc[idx[:WINDOW_ROWS]].reset_index(drop=True)
    cur = pool.iloc[idx[WINDOW_ROWS : 2 * WINDOW_ROWS]].reset_index(drop=True)
    return ref.assign(prediction=fraud_score(ref, seed)), cur.assign(prediction=fraud_score(cur, seed + 1))


def shifted(pool: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The injected shift: amounts x1.5 and the post-shift category mix (gaming/crypto heavy)."""
    import numpy as np

    from scenarios.cards import _SHIFT_CATEGORY_MIX, CATEGORIES

    target = dict(zip(CATEGORIES, _SHIFT_CATEGORY_MIX, strict=True))
    base = pool["category"].value_counts(normalize=True)
    weights = pool["category"].map(lambda c: target[c] / base[c]).to_numpy()
    gumbel_keys = np.log(weights) + np.random.default_rng(seed).gumbel(size=len(pool))  # weighted, no replacement
    idx = np.argpartition(-gumbel_keys, WINDOW_ROWS)[:WINDOW_ROWS]
    cur = pool.iloc[idx].reset_index(drop=True)
    cur["amount"] = cur["amount"] * 1.5
    return cur.assign(prediction=fraud_score(cur, seed + 1))
