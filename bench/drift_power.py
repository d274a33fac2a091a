"""How often the drift check alarms on a window of the same world (A/A), and how often it catches an injected shift.

    .venv/bin/python bench/drift_power.py [--windows 15] [--seed-start 0]

Data: the card generator's four normal weeks (scenarios/drift_windows.py). A/A: each seed draws a disjoint
reference/current pair of 3,000 rows each from the same weeks. Shift: a fresh reference and a current window with
the market shift injected (amounts x1.5, the post-shift category mix: gaming/crypto heavy), the other columns
untouched. Each window carries a synthetic fraud score (`prediction`). Every window is judged by
`pipelines.monitor.drift_scores` (Evidently, as the monitor runs it) with the default `DriftSpec()` (the shipped
fraud settings: Wasserstein normed / Jensen-Shannon, threshold 0.1, drift share 30%).

Prints, per case: windows, window alarms with the rate's 95% Clopper-Pearson interval, and how often each column
was flagged; the seconds per window, next to the floor: the same per-column tests in numpy/scipy on the same
frames (`scipy.stats.wasserstein_distance / std`, `jensenshannon` of the frequencies), timed in the same run.
Targets (were unit tests, moved here as statistical repetitions): A/A alarms in at most 1 of 15 windows; the
shift detected in at least 14 of 15, `amount` and `category` flagged every time, `channel` and `country` at most
once. The exit code is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = 1 - conf
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def floor_scores(ref, cur, cols, categorical) -> dict[str, float]:
    """The same tests, plain numpy/scipy: what the drift check cannot be faster than."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    out = {}
    for c in cols:
        if c in categorical:
            values = sorted(set(ref[c].astype(str)) | set(cur[c].astype(str)))
            p = ref[c].astype(str).value_counts(normalize=True).reindex(values, fill_value=0).to_numpy()
            q = cur[c].astype(str).value_counts(normalize=True).reindex(values, fill_value=0).to_numpy()
            out[c] = float(jensenshannon(p, q))
        else:
            r, k = ref[c].to_numpy(dtype=float), cur[c].to_numpy(dtype=float)
            out[c] = float(wasserstein_distance(r, k) / max(float(np.std(r)), 0.001))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=15)
    ap.add_argument("--seed-start", type=int, default=0)
    args = ap.parse_args()

    from pipelines.monitor import drift_scores
    from pipelines.spec import REPO_ROOT, DriftSpec, load_spec
    from scenarios.drift_windows import CATEGORICAL, RAW, shifted, split, stable_period

    spec = load_spec(REPO_ROOT / "models" / "fraud.yaml")
    import dataclasses

    spec = dataclasses.replace(spec, drift=DriftSpec())
    pool = stable_period()
    cols = [*RAW, "prediction"]
    n = args.windows
    results = {}
    for case in ("A/A", "shift"):
        alarms, flagged, t_check, t_floor = 0, dict.fromkeys(cols, 0), 0.0, 0.0
        for i in range(n):
            seed = args.seed_start + i
            if case == "A/A":
                ref, cur = split(pool, seed)
            else:
                ref, _ = split(pool, 1000 + seed)
                cur = shifted(pool, 2000 + seed)
            t0 = time.perf_counter()
            scores = drift_scores(ref, cur, RAW, CATEGORICAL, spec)
            t1 = time.perf_counter()
            floor_scores(ref, cur, cols, CATEGORICAL)
            t2 = time.perf_counter()
            t_check, t_floor = t_check + t1 - t0, t_floor + t2 - t1
            alarms += bool(scores.drift_detected)
            for c, v in scores.columns.items():
                flagged[c] += bool(v["drifted"])
        results[case] = (alarms, flagged, t_check / n, t_floor / n)

    print(f"drift check over {n} windows of 3,000 + 3,000 rows each (default DriftSpec, Evidently 0.7)")
    print(f"{'case':<6} {'alarms':>7} {'rate':>6} {'95% CI':>15}  {'s/window':>8} {'floor s':>8} {'ratio':>6}  "
          "columns flagged")
    for case, (k, flagged, sec, floor) in results.items():
        lo, hi = clopper_pearson(k, n)
        cols_txt = ", ".join(f"{c} {v}" for c, v in flagged.items())
        print(f"{case:<6} {k:>4}/{n:<2} {k / n:>6.2f} [{lo:.2f}, {hi:.2f}]  {sec:>8.3f} {floor:>8.4f} "
              f"{sec / floor:>5.0f}x  {cols_txt}")
    aa, shift = results["A/A"], results["shift"]
    misses = []
    if aa[0] > max(1, n // 15):
        misses.append(f"A/A alarmed in {aa[0]} of {n} windows (target <= {max(1, n // 15)})")
    if shift[0] < n - max(1, n // 15):
        misses.append(f"the shift was detected in {shift[0]} of {n} windows (target >= {n - max(1, n // 15)})")
    if not shift[1]["amount"] == shift[1]["category"] == n:
        misses.append(f"amount/category not flagged in every shifted window: {shift[1]}")
    if shift[1]["channel"] > max(1, n // 15) or shift[1]["country"] > max(1, n // 15):
        misses.append(f"untouched columns flagged: {shift[1]}")
    for m in misses:
        print("TARGET MISSED:", m)
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
