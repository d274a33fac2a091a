"""A day's point-in-time join as history grows: the span-bounded join against the join over every snapshot.

Scoring a day joins that day's rows onto each view's snapshots (issue 16: "every task's peak memory stays flat
as history grows"). A synthetic daily view (one INT64 key, 4 FLOAT64 features, `--active` entities of
`--entities` snapshotted per day, one parquet file per day, TTL 3 days as Flywheel's default for a daily view)
gets `--days` of history; `--rows` rows of the last day, on random entities, are joined:

  bounded    pipelines.features.historical_features_asof: each view reads only the snapshots stamped in
             [earliest row - TTL, latest row] (the parquet scan skips the other days' files by statistics)
  unbounded  the same call with the span left out of the SQL: every snapshot of history is read, deduplicated
             and sorted before the ASOF join (the join before this change)

Each measurement runs in its own subprocess: wall seconds of the call (imports done first) and the child's peak
RSS. Both frames are compared value by value. Usage:
.venv/bin/python bench/pit_history.py [--days 5 35 70] [--rows 1000000] [--entities 1000000] [--active 300000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(days=3)
FEATURES = ("f0", "f1", "f2", "f3")


def write_history(folder: Path, days: int, entities: int, active: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    for day in range(days):
        ids = np.sort(rng.choice(entities, active, replace=False)).astype("int64")
        at = pa.array(np.full(active, np.datetime64((T0 + timedelta(days=day + 1)).replace(tzinfo=None), "us")),
                      pa.timestamp("us", tz="UTC"))
        cols = {"entity": ids, "stamp": at, "created": at, **{f: rng.normal(size=active) for f in FEATURES}}
        pq.write_table(pa.table(cols), folder / f"{day:04d}.parquet")


def rows_of_last_day(days: int, rows: int, entities: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(11)
    start = pd.Timestamp(T0 + timedelta(days=days - 1))
    return pd.DataFrame({"entity": rng.integers(0, entities, rows).astype("int64"),
                         "at": start + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000_000, rows)), unit="us")})


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    import pipelines.features.retrieval as retrieval
    from pipelines.features import ViewRetrieval

    rows = pd.read_parquet(spec["rows"])
    plan = [ViewRetrieval("history", str(Path(spec["view"]) / "*.parquet"), "stamp", "created", TTL, ("entity",),
                          FEATURES)]
    if spec["mode"] == "unbounded":
        whole = retrieval.asof_sql
        retrieval.asof_sql = lambda plan, ts, span=None: whole(plan, ts)   # type: ignore[assignment]
    t = time.perf_counter()
    got = retrieval.historical_features_asof(plan, rows)
    wall = time.perf_counter() - t
    got[list(FEATURES)].to_parquet(spec["out"])
    return {"wall_s": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "found": float(got[FEATURES[0]].notna().mean())}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {spec['mode']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, nargs="+", default=[5, 35, 70])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--active", type=int, default=300_000)
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="flywheel-pit-"))
    results = []
    try:
        for days in args.days:
            view = tmp / f"view-{days}"
            t = time.perf_counter()
            write_history(view, days, args.entities, args.active)
            rows = tmp / f"rows-{days}.parquet"
            rows_of_last_day(days, args.rows, args.entities).to_parquet(rows)
            print(f"{days} days: {days * args.active:,} snapshots written in {time.perf_counter() - t:.1f}s",
                  flush=True)
            got = {}
            for mode in ("bounded", "unbounded"):
                spec = {"mode": mode, "view": str(view), "rows": str(rows), "out": str(tmp / f"{mode}-{days}.parquet")}
                got[mode] = run_child(spec)
                print(f"  {mode:<9} {got[mode]['wall_s']:6.2f}s  peak {got[mode]['peak_mb']:7.0f} MB", flush=True)
            a, b = (pd.read_parquet(tmp / f"{m}-{days}.parquet") for m in ("bounded", "unbounded"))
            pd.testing.assert_frame_equal(a, b, check_exact=True)
            results.append((days, got))
            shutil.rmtree(view)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\none day of {args.rows:,} rows joined onto {args.active:,} snapshots a day (TTL {TTL.days} days); "
          "frames identical in every run")
    print("| history | bounded s | bounded peak MB | unbounded s | unbounded peak MB | found |")
    print("|---|---|---|---|---|---|")
    for days, got in results:
        b, u = got["bounded"], got["unbounded"]
        print(f"| {days} days | {b['wall_s']:.2f} | {b['peak_mb']:.0f} | {u['wall_s']:.2f} | {u['peak_mb']:.0f} | "
              f"{b['found']:.0%} |")


if __name__ == "__main__":
    main()
