"""What per-row explanations add to the score stage at 1M rows: scoring alone vs scoring + the top-k contributions.

    .venv/bin/python bench/explain.py [--rows 1000000] [--repeats 3] [--rounds 40 300] [--top-k 3]

The same setup as bench/shadow.py (three card-generator weeks of ~1M rows, the fraud service's feature tables,
the Feast registry) and the same stage: rows read + features joined as of each row (`label_rows` +
`with_features`), then the model part: the champion's matrix, `predict`, the scores parquet. The explained
lines add what `pipelines.score` adds when the spec declares `explain:`: XGBoost's approximate contributions
(`pipelines.release.explain.explained_rows`) and the top-k columns written with the scores; the
min_prediction line explains only the top-scoring --explained-share of rows, as `explain.min_prediction`
does (the rows a person acts on). Exact TreeSHAP is timed on --exact-rows rows only (30-50x slower: why
rows get the approximation). The issue's target: explanations within 1.5x of scoring without them, at 1M rows.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def measure(booster, rounds: int, rows, spec, features, cats, inputs_s: float, out: Path, args) -> None:
    import pandas as pd
    from shadow import timed

    from pipelines import model as m
    from pipelines import storage
    from pipelines.release.explain import contributions, explained_rows

    shares = {}

    def score(explain: bool, cutoff: float | None = None) -> None:
        scored = rows.copy()
        matrix = m.to_matrix_frame(rows, spec, features, cats)
        scored["prediction"] = m.predict(booster, matrix)
        if explain:   # as pipelines.score does it
            for col, values in explained_rows(booster, matrix, scored["prediction"].to_numpy(), args.top_k,
                                              cutoff).items():
                scored[col] = values
            shares[cutoff] = float(scored["contribution_1_value"].notna().mean())
        storage.write_parquet(scored, out / "scores.parquet")

    # the cutoff of explain.min_prediction: the score of the top --explained-share of rows, as a spec would set it
    pred = m.predict(booster, m.to_matrix_frame(rows, spec, features, cats))
    cutoff = float(pd.Series(pred).quantile(1 - args.explained_share))
    floor = None
    for name, explain, cut in (("scoring alone (the floor)", False, None),
                               (f"scoring + top-{args.top_k} contributions", True, None),
                               (f"  ... min_prediction {cutoff:.3f}", True, cutoff)):
        best = min((timed(lambda e=explain, c=cut: score(e, c)) for _ in range(args.repeats)), key=lambda x: x[0])
        floor = floor or best[0]
        stage = inputs_s + best[0]
        note = "" if not explain else f"approximate contributions, {shares[cut]:.0%} of rows explained"
        print(f"{len(rows):>10,}  {rounds:>5}  {name:34s} {best[0]:8.2f} {best[1]:7.2f} {stage:8.2f} "
              f"{stage / (inputs_s + floor):6.2f}  {note}")
    sample = m.to_matrix_frame(rows.head(args.exact_rows), spec, features, cats)
    exact = timed(lambda: contributions(booster, sample, exact=True))
    approx = timed(lambda: contributions(booster, sample, exact=False))
    print(f"{len(sample):>10,}  {rounds:>5}  {'exact TreeSHAP vs approximate':34s} {exact[0]:8.2f} "
          f"{exact[1]:7.2f} {'':>8} {exact[0] / max(approx[0], 1e-9):6.1f}  x the approximation "
          f"({approx[0]:.3f} s); per 1M rows ~{exact[0] * 1_000_000 / len(sample):.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, nargs="+", default=[40, 300])
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--exact-rows", type=int, default=10_000)
    ap.add_argument("--history-weeks", type=int, default=2)
    ap.add_argument("--explained-share", type=float, default=0.1,
                    help="the min_prediction line explains this share of rows (the top-scoring ones)")
    args = ap.parse_args()

    import xgboost as xgb
    from shadow import frame, stage_inputs, timed

    from pipelines import model as m
    from pipelines.features import view_index
    from pipelines.spec import REPO_ROOT, load_specs

    spec = load_specs()["fraud"]
    index = view_index(REPO_ROOT / "feature_repo")
    features = list(spec.row_features) + [f for v in index["services"][spec.feature_service]
                                          for f in index["views"][v]["features"]]
    train = frame(spec, features, 50_000, 1)
    cats = m.fit_categories(spec, train, features)
    tmp = tempfile.TemporaryDirectory(prefix="flywheel-bench-explain-")
    out = Path(tmp.name)
    inputs = stage_inputs(spec, args.rows, out / "stage", args.history_weeks)
    best_in = min((timed(inputs) for _ in range(args.repeats)), key=lambda x: x[0])
    rows = inputs().assign(scored_for="2026-03-02")
    print(f"{'rows':>10}  {'trees':>5}  {'line':34s} {'seconds':>8} {'cpu s':>7} {'stage s':>8} {'ratio':>6}  note")
    print("-" * 110)
    print(f"{len(rows):>10,}  {'':>5}  {'rows read + features joined':34s} {best_in[0]:8.2f} {best_in[1]:7.2f} "
          f"{'':>8} {'':>6}  label_rows + with_features")
    for rounds in args.rounds:
        params = {"objective": "binary:logistic", "max_depth": spec.params.get("max_depth", 6), "eta": 0.1,
                  "tree_method": "hist", "seed": 1, "subsample": 0.8, "nthread": 2, "max_cat_to_onehot": 1}
        booster = xgb.train(params, xgb.DMatrix(m.to_matrix_frame(train, spec, features, cats), label=train["label"],
                                                enable_categorical=True), num_boost_round=rounds)
        measure(booster, rounds, rows, spec, features, cats, best_in[0], out, args)
    tmp.cleanup()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory of this process: {peak:,.0f} MB; best of {args.repeats}; ratio = whole stage with "
          "explanations / without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
