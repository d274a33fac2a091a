"""Freeze the fraud model's golden set: labelled cases of the ordinary fraud patterns and of the holiday
gift-card scam, with the model's inputs as the platform computes them, written once and versioned with the spec.

    .venv/bin/python -m scenarios.golden_cards [--out golden/fraud/holiday_scam.parquet]

It plays the card generator in a world of its own (seed 2026: other customers and merchants than the demo's),
lands four ordinary weeks as history, then an ordinary week and a holiday week; builds the fraud service's
feature tables with Flywheel's engine and joins them as of each row (`training.with_features`, the same path
training and scoring take), in a temporary Flywheel home. The set keeps every fraud of the ordinary week and
a sample of its legitimate rows, and the holiday week's scam segment (wallet payments to gaming/crypto
merchants: the new pattern, frauds and not) with a sample of its other rows. Prints the sha256 to declare in
models/fraud.yaml (`golden:`). Deterministic: the same code writes the same rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HISTORY_WEEKS = 4


def build(out: Path) -> Path:
    from pipelines.spec import load_specs
    from pipelines.util import sha256_file
    from scenarios import cards

    spec = load_specs()["fraud"]
    sc = cards.Scenario(seed=2026)
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="flywheel-golden-") as tmp:
        home = Path(tmp)
        (home / "feast").mkdir()
        os.environ.update({"FLYWHEEL_HOME": str(home), "FEAST_USAGE": "False",
                           "FLYWHEEL_FEAST_REGISTRY": f"sqlite:///{home / 'feast' / 'registry.db'}",
                           "FLYWHEEL_FEAST_ONLINE": str(home / "feast" / "online.db")})
        for k in ("FLYWHEEL_FEAST_ONLINE_STORE", "FLYWHEEL_FEAST_RETRIEVAL", "FLYWHEEL_DATA_URI"):
            os.environ.pop(k, None)
        try:
            golden = _golden_rows(spec, sc, home)
        finally:   # a temporary home: nothing of it stays in the environment
            os.environ.clear()
            os.environ.update(saved)
    out.parent.mkdir(parents=True, exist_ok=True)
    golden.to_parquet(out, index=False)
    by_case = golden.groupby("golden_case")[spec.label.column].agg(["size", "sum"])
    print(f"{out}: {len(golden)} rows\n{by_case.to_string()}\nsha256: {sha256_file(out)}")  # noqa: T201 (a command)
    return out


def _golden_rows(spec: Any, sc: Any, home: Path) -> Any:
    import pandas as pd

    from pipelines import features, training
    from scenarios import cards

    repo = REPO / "feature_repo"
    declared = features.load_repo(repo)
    views = training.ModelViews.of(spec, repo)
    validated = home / "validated"
    validated.mkdir()
    plan = [(w, "normal") for w in range(HISTORY_WEEKS + 1)] + [(HISTORY_WEEKS + 1, "holiday")]
    for week, kind in plan:
        start = sc.start + timedelta(weeks=week)
        cards.generate_week(sc, week, kind).to_parquet(validated / f"{start:%Y-%m-%d}.parquet", index=False)
        for v in views.views:
            features.build_view_table(declared.views[v], validated, home / "features", start,
                                      start + timedelta(weeks=1), f"{start:%Y-%m-%d}")
    features.apply_feature_repo(repo)
    inputs = training.feature_columns(spec, repo)
    parts = []
    for week, kind in plan[-2:]:
        start = sc.start + timedelta(weeks=week)
        rows = training.label_rows(spec, validated, start, start + timedelta(weeks=1), views=views)
        rows = training.with_features(spec, repo, rows).rename(columns={training.LABEL: spec.label.column})
        if kind == "normal":
            keep = pd.concat([rows[rows[spec.label.column] == 1],
                              rows[rows[spec.label.column] == 0].sample(n=1500, random_state=1)])
        else:
            scam = (rows["channel"] == "wallet") & rows["category"].isin(["gaming", "crypto"])
            keep = pd.concat([rows[scam], rows[~scam].sample(n=1500, random_state=2)])
        parts.append(keep.assign(golden_case=f"{kind} week"))
    golden = pd.concat(parts, ignore_index=True)
    cols = list(dict.fromkeys([spec.dataset.row_id, spec.entity_key, spec.event_timestamp, *inputs,
                               spec.label.column, "golden_case"]))
    golden = golden[cols].sort_values(spec.dataset.row_id, kind="stable").reset_index(drop=True)
    golden[spec.label.column] = golden[spec.label.column].astype("int64")
    return golden


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "golden" / "fraud" / "holiday_scam.parquet")
    build(ap.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
