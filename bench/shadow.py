"""What shadow scoring adds to the score stage: the champion alone vs the champion plus its shadows.

    .venv/bin/python bench/shadow.py [--rows 1000000] [--repeats 3] [--shadows 1 2]

The score stage of `pipelines.score.score_interval`, after the rows are joined with their features, is:
the champion's input matrix (`pipelines.model.to_matrix_frame`), `pipelines.model.predict`, and the scores
parquet written. Shadow scoring (`pipelines.score.shadow_scores`) adds, per shadow version (the previous
champion, a pending challenger), its prediction on the same rows (on the champion's input matrix when the
version has the same inputs and categories, as here; else its own) and the shadow parquet (row id + version +
role + prediction). This bench times both paths in the same process on the
same rows, with the fraud spec's inputs (models/fraud.yaml: 4 row features, 2 of them categorical, and the
feature service's numeric features), real XGBoost boosters (the demo's depth; 40 trees, where the demo's
early-stopped versions end, and the spec's cap of 300) trained on a sample, so the ratio is the overhead of
shadows on the model part of the stage.

It is an upper bound for the whole stage: `score_interval` also reads the validated rows and runs the
point-in-time feature join (Feast/DuckDB, ~6.6 s per million rows on this machine, RUNTIME-FACTS.md), which
shadows do not repeat. The issue's goal: shadows add at most 30% to the score stage at 1M rows.

Prints the best of --repeats per line (wall and CPU seconds), and the ratio to the champion-only path.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def frame(spec, features: list[str], n: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = set(spec.dataset.column_names)
    cats = {c: list(spec.dataset.column(c).allowed or ["a", "b", "c"]) for c in features
            if c in names and spec.dataset.column(c).type == "string"}
    data = {}
    for f in features:
        if f in cats:
            data[f] = rng.choice(cats[f], n)
        else:
            data[f] = rng.gamma(2.0, 50.0, n)
    data[spec.dataset.row_id] = [f"r{seed}-{i}" for i in range(n)]
    data[spec.entity_key] = rng.integers(0, max(n // 5, 1), n)
    data[spec.event_timestamp] = pd.Timestamp("2026-03-02", tz="UTC") + pd.to_timedelta(rng.integers(0, 7 * 86400, n),
                                                                                         unit="s")
    df = pd.DataFrame(data)
    risk = sum((df[f].astype("category").cat.codes if f in cats else df[f] / 100.0) for f in features[:4])
    df["label"] = (rng.random(n) < 1 / (1 + np.exp(-(risk - risk.mean())))).astype(float)
    return df


def timed(fn) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def paths(rows, spec, features, cats, boosters, out: Path):
    """The two ways of the score stage's model part on `rows`: the champion alone, and with k shadows (as
    pipelines.score.shadow_scores does it: a version with the champion's inputs predicts on its matrix)."""
    import pandas as pd

    from pipelines import model as m
    from pipelines import storage

    def champion_only() -> Any:
        scored = rows.copy()
        matrix = m.to_matrix_frame(rows, spec, features, cats)
        scored["prediction"] = m.predict(boosters[0], matrix)
        scored["model_version"] = "5"
        storage.write_parquet(scored, out / "scores.parquet")
        return matrix

    def with_shadows(k: int):
        def run() -> None:
            matrix = champion_only()
            parts = [pd.DataFrame({spec.dataset.row_id: rows[spec.dataset.row_id].to_numpy(),
                                   "model_version": str(4 - i), "role": "previous-champion" if i == 0 else "challenger",
                                   "prediction": m.predict(boosters[1 + i], matrix)}) for i in range(k)]
            storage.write_parquet(pd.concat(parts, ignore_index=True), out / "shadow.parquet")
        return run

    return champion_only, with_shadows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shadows", type=int, nargs="+", default=[1, 2])
    # the demo's fraud versions stopped early at 33-39 trees (MLflow metric boosted_rounds); the spec's cap is the
    # worst case. Prediction cost grows with the trees, so both are measured.
    ap.add_argument("--rounds", type=int, nargs="+", default=[40, 300])
    args = ap.parse_args()

    import xgboost as xgb

    from pipelines import model as m
    from pipelines.features import view_index
    from pipelines.spec import REPO_ROOT, load_specs

    spec = load_specs()["fraud"]
    index = view_index(REPO_ROOT / "feature_repo")   # the service's features, as feature_columns lists them
    features = list(spec.row_features) + [f for v in index["services"][spec.feature_service]
                                          for f in index["views"][v]["features"]]
    train = frame(spec, features, 50_000, 1)
    cats = m.fit_categories(spec, train, features)
    print(f"{'rows':>10}  {'trees':>5}  {'line':34s} {'seconds':>8} {'cpu s':>7} {'ratio':>6}  note")
    print("-" * 93)
    for rounds in args.rounds:
        boosters = []
        for seed in (1, 2, 3):   # the champion and up to two shadows: the same kind of model, different seeds
            params = {"objective": "binary:logistic", "max_depth": spec.params.get("max_depth", 6), "eta": 0.1,
                      "tree_method": "hist", "seed": seed, "subsample": 0.8, "nthread": 2}
            dm = xgb.DMatrix(m.to_matrix_frame(train, spec, features, cats), label=train["label"],
                             enable_categorical=True)
            boosters.append(xgb.train(params, dm, num_boost_round=rounds))
        with tempfile.TemporaryDirectory(prefix="flywheel-bench-shadow-") as tmp:
            for n in args.rows:
                rows = frame(spec, features, n, 7).drop(columns=["label"]).assign(scored_for="2026-03-02")

                champion_only, with_shadows = paths(rows, spec, features, cats, boosters, Path(tmp))
                lines = [("champion only (the floor)", champion_only, "matrix + predict + scores parquet")]
                lines += [(f"champion + {k} shadow{'s' if k > 1 else ''}", with_shadows(k),
                           f"+ {k} predict + shadow parquet") for k in args.shadows]
                floor = None
                for name, fn, note in lines:
                    best = min((timed(fn) for _ in range(args.repeats)), key=lambda x: x[0])
                    floor = floor or best[0]
                    print(f"{n:>10,}  {rounds:>5}  {name:34s} {best[0]:8.2f} {best[1]:7.2f} {best[0] / floor:6.2f}  "
                          f"{note}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory of this process: {peak:,.0f} MB; features: {len(features)} ({', '.join(sorted(cats))} "
          "categorical); best of", args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
