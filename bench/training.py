"""What `pipelines.model.fit` costs at scale with QuantileDMatrix against plain DMatrix (issue 16).

    .venv/bin/python bench/training.py [--rows 1000000 5000000 10000000] [--rounds 5] [--json out.json]

The situation: the retrain of issue 16 (35 days x 1M rows a day, negatives sampled at 0.1: ~4M weighted rows;
unsampled: 35M). Each size is a synthetic training set of `--rows` rows and 15 inputs shaped like a
transactions model's: 3 string row features with an allowed set in the (synthetic) dataset contract (3, 24 and
200 values, categoricals through `to_matrix_frame` as in production) and 12 float features (a few with missing
values), a binary label at a ~3% base rate driven by some of them, and the sampling weight column (10 for a
negative, 1 for a positive), as a training set built with `training.sampling: {negatives: 0.1}` carries it.

Each (size, matrix) pair runs in a fresh subprocess (`--child`), so that one run's heap and XGBoost's caches
do not flatter the next. The child builds the frame (not timed), then times `pipelines.model.fit` as training
calls it, `--rounds` boosting rounds (early stopping never triggers: the rounds are the same in both ways)
with `quantile=True` (QuantileDMatrix fed `TRAIN_CHUNK_ROWS` = 1M rows of the input frame at a time, the
validation matrix binned with `ref=` the training one) or `quantile=False` (DMatrix of the whole input
frame, the path before issue 16):

- `fit s`, `cpu s`: wall and CPU time (all threads) of the whole `fit` (input frame, matrices, boosting);
- `matrices s`: the input frame and the two matrices alone, timed again after the fit (`_train_matrices`). A
  DMatrix defers the quantile sketch and the binning to the first boosting round, a QuantileDMatrix does
  them here: compare `fit s`;
- `peak MB`: the process's RSS high-water mark during `fit` (VmHWM, reset through /proc/self/clear_refs
  just before) and `growth MB` that minus the RSS before it (the frame already in memory);
- `maxrss MB`: `ru_maxrss` of the child at its end (frame building included): what a task process would see;
- `max |diff|`: on 20,000 rows, the largest difference between the two ways' predicted probabilities (the
  same model up to float rounding, or not).

XGBoost runs on 2 threads (`nthread` of fit). At the defaults the bench takes about 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

CATEGORIES = {"kind": 3, "group": 24, "region": 200}     # string row features and how many values each has
NUMERIC = [f"x{i:02d}" for i in range(12)]
FEATURES = [*CATEGORIES, *NUMERIC]
CONTRACT = {
    "name": "bench_events", "owners": ["bench@example.com"], "file_pattern": "events_{start:%Y-%m-%d}.parquet",
    "row_id": "event_id", "timestamp": "event_ts", "cadence": "@daily",
    "columns": {"event_id": {"type": "string", "nullable": False, "unique": True},
                "account": {"type": "int", "nullable": False},
                "event_ts": {"type": "timestamp", "nullable": False},
                **{c: {"type": "string", "allowed": [f"{c}-{i:03d}" for i in range(k)]} for c, k in CATEGORIES.items()},
                "outcome": {"type": "int", "nullable": False}},
}
SPEC = {
    "name": "bench_model", "owners": ["bench@example.com"], "task": "binary", "dataset": "bench_events",
    "entity_key": "account", "label": {"kind": "column", "column": "outcome", "delay_days": 0},
    "features": {"service": "bench_features", "row": list(CATEGORIES)},
    "training": {"window_days": 35, "holdout_days": 2, "seed": 7, "sampling": {"negatives": 0.1}},
    "metric": {"primary": "average_precision"}, "gate": {"min_primary": 0.1},
}


def rss_mb(field: str = "VmRSS") -> float:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def load_bench_spec(folder: Path):
    import yaml

    from pipelines.spec import load_spec

    (folder / "datasets").mkdir(parents=True, exist_ok=True)
    (folder / "datasets" / "bench_events.yaml").write_text(yaml.safe_dump(CONTRACT, sort_keys=False))
    (folder / "bench_model.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return load_spec(folder / "bench_model.yaml", folder / "datasets")


def training_frame(rows: int, seed: int = 3):
    """The synthetic training set: 3 string categoricals, 12 floats, a ~3% label, the sampling weights."""
    import numpy as np
    import pandas as pd

    from pipelines.training import LABEL, WEIGHT

    rng = np.random.default_rng(seed)
    frame = {}
    for c, k in CATEGORIES.items():      # object strings, as pd.read_parquet gives them (shared objects)
        values = np.array([f"{c}-{i:03d}" for i in range(k)], dtype=object)
        frame[c] = values[rng.zipf(1.6, rows) % k]
    for i, c in enumerate(NUMERIC):
        x = rng.lognormal(3.0, 1.0, rows) if i % 3 == 0 else rng.normal(0.0, 1.0, rows)
        if i % 4 == 1:
            x[rng.random(rows) < 0.05] = np.nan
        frame[c] = x
    df = pd.DataFrame(frame)
    z = (-4.2 + 0.9 * np.nan_to_num(df["x01"].to_numpy()) + 0.4 * np.log(df["x00"].to_numpy())
         - 0.6 * df["x02"].to_numpy() + (df["kind"].to_numpy() == "kind-002") * 1.2
         + (df["region"].to_numpy() == "region-007") * 1.5 - 2.0)
    df[LABEL] = (rng.random(rows) < 1.0 / (1.0 + np.exp(-z))).astype("float64")
    df[WEIGHT] = np.where(df[LABEL].to_numpy() == 0, 10.0, 1.0)
    return df


def child(rows: int, quantile: bool, rounds: int, pred_out: Path) -> dict:
    import numpy as np

    from pipelines import model as m
    from pipelines.training import LABEL, WEIGHT

    with tempfile.TemporaryDirectory(prefix="flywheel-bench-training-") as tmp:
        spec = load_bench_spec(Path(tmp))
    train = training_frame(rows)
    params = {"max_depth": 6, "eta": 0.1, "num_boost_round": rounds, "early_stopping_rounds": rounds + 1,
              "min_child_weight": 2}
    cats = m.fit_categories(spec, train, FEATURES)
    before = rss_mb()
    with open("/proc/self/clear_refs", "w") as fh:   # reset VmHWM: the peak of fit from here on
        fh.write("5")
    t0, c0 = time.perf_counter(), time.process_time()
    booster = m.fit(spec, train, FEATURES, params, cats, quantile=quantile)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    peak = rss_mb("VmHWM")
    t1 = time.perf_counter()
    cut = int(len(train) * 0.85)
    mats = m._train_matrices(lambda lo, hi: m.to_matrix_frame(train.iloc[lo:hi], spec, FEATURES, cats),
                             train[LABEL].to_numpy(), train[WEIGHT].to_numpy(), cut, {"tree_method": "hist"}, quantile,
                             m.TRAIN_CHUNK_ROWS)
    matrices_s = time.perf_counter() - t1
    del mats
    probe = training_frame(20_000, seed=99)
    np.save(pred_out, m.predict(booster, m.to_matrix_frame(probe, spec, FEATURES, cats)))
    return {"rows": rows, "matrix": "QuantileDMatrix" if quantile else "DMatrix", "fit_s": fit_s, "cpu_s": cpu_s,
            "matrices_s": matrices_s, "rss_before_mb": before, "peak_mb": peak, "growth_mb": peak - before,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rounds": booster.num_boosted_rounds()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", choices=["quantile", "dmatrix"], help=argparse.SUPPRESS)
    ap.add_argument("--pred-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.rows[0], args.child == "quantile", args.rounds, args.pred_out)))
        return 0

    import numpy as np

    results = []
    print(f"pipelines.model.fit, {len(FEATURES)} inputs ({len(CATEGORIES)} categorical), {args.rounds} rounds, "
          f"depth 6, 2 threads; each line a fresh subprocess")
    head = (f"{'rows':>11} {'matrix':<16} {'fit s':>7} {'cpu s':>7} {'matrices s':>10} {'peak MB':>8} "
            f"{'growth MB':>9} {'maxrss MB':>9}")
    print(head + "\n" + "-" * len(head))
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-training-") as tmp:
        for rows in args.rows:
            preds = {}
            pair = {}
            for way in ("dmatrix", "quantile"):
                out = Path(tmp) / f"{rows}-{way}.npy"
                proc = subprocess.run([sys.executable, __file__, "--child", way, "--rows", str(rows), "--rounds",
                                       str(args.rounds), "--pred-out", str(out)], capture_output=True, text=True,
                                      cwd=ROOT)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return proc.returncode
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                preds[way], pair[way] = np.load(out), r
                results.append(r)
                print(f"{rows:>11,} {r['matrix']:<16} {r['fit_s']:>7.2f} {r['cpu_s']:>7.2f} {r['matrices_s']:>10.2f} "
                      f"{r['peak_mb']:>8,.0f} {r['growth_mb']:>9,.0f} {r['maxrss_mb']:>9,.0f}", flush=True)
            d, q = pair["dmatrix"], pair["quantile"]
            diff = float(np.max(np.abs(preds["dmatrix"] - preds["quantile"])))
            q["max_abs_diff"] = diff
            print(f"{'':>11} {'ratio Q/D':<16} {q['fit_s'] / d['fit_s']:>7.2f} {q['cpu_s'] / d['cpu_s']:>7.2f} "
                  f"{q['matrices_s'] / d['matrices_s']:>10.2f} {q['peak_mb'] / d['peak_mb']:>8.2f} "
                  f"{q['growth_mb'] / d['growth_mb']:>9.2f} {q['maxrss_mb'] / d['maxrss_mb']:>9.2f}   "
                  f"max |diff| of predictions {diff:.1e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
