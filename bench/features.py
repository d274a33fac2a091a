"""Point-in-time training sets at 100k and 1M label rows: Feast vs Flywheel's ASOF path vs the raw floor.

For each size: generated transactions (pipelines.datagen, customers and merchants scaled with the rows)
are written as validated weekly batches, pipelines.features builds the feature tables and applies the
Feast repo in a temporary FLYWHEEL_HOME; the label rows are the fraud model's rows of weeks 1..7. Then,
each in its own subprocess (so the peak RSS is that measurement's alone, imports included):

  floor   a raw DuckDB ASOF JOIN of the same rows and parquet tables, TTL applied (hand-written SQL)
  asof    pipelines.features.historical_features(engine="asof"): the views read from the Feast registry,
          one ASOF JOIN per view (the default path of with_features)
  feast   pipelines.features.historical_features(engine="feast"): FeatureStore.get_historical_features
  mat     pipelines.features.materialize, week by week, into the SQLite online store

The three joins are compared value by value afterwards. Times are wall seconds of the call alone:
every child imports its libraries first (as the scheduler preload does for tasks), the asof and feast
calls include building the FeatureStore and reading the registry. No assertion on them (bench/ prints
figures). Usage: .venv/bin/python bench/features.py [--rows N ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
VIEWS = ["customer_stats", "merchant_stats"]
SERVICE = "fraud_features"
WEEKS = 8          # week 0 warms the rolling windows up; label rows come from weeks 1..7


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------
# measurements (run in a child process)


def floor_join(rows: Any, features_root: Path, views: list[tuple[str, str, list[str], timedelta]]) -> Any:
    """rows ASOF LEFT JOIN each view's parquet files (entity equal, snapshot ts <= row ts), TTL applied."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("entity_rows", rows)
    select, joins = ["e.*"], []
    for i, (view, key, feats, ttl) in enumerate(views):
        a = f"v{i}"
        secs = int(ttl.total_seconds())
        select += [f"CASE WHEN {a}.event_ts >= e.event_ts - INTERVAL {secs} SECOND THEN {a}.{f} END AS {f}"
                   for f in feats]
        joins.append(f"ASOF LEFT JOIN read_parquet('{features_root / view / '*.parquet'}') {a} "
                     f"ON e.{key} = {a}.{key} AND e.event_ts >= {a}.event_ts")
    out = con.execute(f"SELECT {', '.join(select)} FROM entity_rows e {' '.join(joins)}").df()
    con.close()
    return out


def child(spec: dict[str, Any]) -> None:
    import pandas as pd

    from pipelines import features

    repo = REPO_ROOT / "feature_repo"
    home = Path(spec["home"])
    result: dict[str, Any] = {"kind": spec["kind"]}
    if spec["kind"] == "mat":
        store = features.feature_store(repo)   # imports and registry, outside the timing
        store.list_feature_views()
        result["rss_before_mb"] = rss_mb()
        seconds = []
        for start, end in spec["intervals"]:
            t = time.perf_counter()
            features.materialize(repo, VIEWS, pd.Timestamp(start).to_pydatetime(), pd.Timestamp(end).to_pydatetime())
            seconds.append(time.perf_counter() - t)
        result["seconds"] = sum(seconds)
        result["per_interval"] = seconds
    else:
        rows = pd.read_parquet(spec["rows"])
        if spec["kind"] == "floor":
            store = features.feature_store(repo)
            fs = store.get_feature_service(SERVICE)
            views = [(p.name, features.VIEW_ENTITY[p.name], [f.name for f in p.features],
                      store.get_feature_view(p.name).ttl) for p in fs.feature_view_projections]
            result["rss_before_mb"] = rss_mb()
            t = time.perf_counter()
            out = floor_join(rows, home / "features", views)
        else:
            features.repo_config(repo)   # imports feast, its DuckDB offline store and ibis before the clock
            result["rss_before_mb"] = rss_mb()
            t = time.perf_counter()
            out = features.historical_features(repo, SERVICE, rows, engine=spec["kind"])
        result["seconds"] = time.perf_counter() - t
        result["rows"] = len(out)
        out.to_parquet(spec["out"], index=False)
    result["peak_mb"] = peak_mb()
    Path(spec["result"]).write_text(json.dumps(result))


def run_child(kind: str, home: Path, env: dict[str, str], **extra: Any) -> dict[str, Any]:
    spec = {"kind": kind, "home": str(home), "rows": str(home / "rows.parquet"),
            "out": str(home / f"out-{kind}.parquet"), "result": str(home / f"result-{kind}.json"), **extra}
    log = home / f"child-{kind}.log"
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, cwd=home,
                              stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return json.loads(Path(spec["result"]).read_text())


# ------------------------------------------------------------------------------------------------
# setup and comparison (parent)


def setup(n: int, home: Path) -> dict[str, Any]:
    """Validated batches, feature tables and a Feast registry for about `n` label rows under `home`."""
    import pandas as pd

    from pipelines import datagen, features, training
    from pipelines.spec import load_specs

    scale = max(1.0, n / 100_000)
    sc = datagen.Scenario(customers=int(3000 * scale), merchants=int(400 * scale),
                          tx_per_week=math.ceil(n / (WEEKS - 1) * 1.01))
    validated = home / "validated"
    validated.mkdir(parents=True)
    intervals = []
    for w in range(WEEKS):
        start = sc.start + timedelta(weeks=w)
        datagen.generate_week(sc, w, "normal").to_parquet(validated / f"{start:%Y-%m-%d}.parquet", index=False)
        intervals.append((start, start + timedelta(weeks=1)))
    t = time.perf_counter()
    snapshot_rows = {v: 0 for v in VIEWS}
    for start, end in intervals:
        tables = features.build_feature_tables(validated, home / "features", VIEWS, start, end, f"{start:%Y-%m-%d}")
        for v, r in tables.rows.items():
            snapshot_rows[v] += r
    build_s = time.perf_counter() - t
    features.apply_feature_repo(REPO_ROOT / "feature_repo")
    spec = load_specs(REPO_ROOT / "models")["fraud"]
    rows = training.label_rows(spec, validated, intervals[1][0], intervals[-1][1]).iloc[:n]
    rows.to_parquet(home / "rows.parquet", index=False)
    entities = {v: int(pd.read_parquet(home / "features" / v, columns=[features.VIEW_ENTITY[v]]).nunique().iloc[0])
                for v in VIEWS}
    return {"customers": sc.customers, "merchants": sc.merchants, "label_rows": len(rows),
            "snapshot_rows": snapshot_rows, "entities": entities, "build_seconds": build_s,
            "intervals": [(s.isoformat(), e.isoformat()) for s, e in intervals]}


def agreement(a: Any, b: Any, names: list[str]) -> float:
    """Share of (row, feature) values equal in both frames, matched by transaction_id (NaN == NaN)."""
    import numpy as np

    a = a.set_index("transaction_id").sort_index()
    b = b.set_index("transaction_id").sort_index()
    if not a.index.equals(b.index):
        return float("nan")
    same = sum(int(np.sum(np.isclose(a[f].astype("float64"), b[f].astype("float64"), rtol=0, atol=0,
                                     equal_nan=True))) for f in names)
    return same / (len(a) * len(names))


def measure(n: int, root: Path) -> dict[str, Any]:
    import pandas as pd

    home = root / f"n{n}"
    (home / "feast").mkdir(parents=True)
    env = {**os.environ, "FLYWHEEL_HOME": str(home),
           "FLYWHEEL_FEAST_REGISTRY": f"sqlite:///{home / 'feast' / 'registry.db'}",
           "FLYWHEEL_FEAST_ONLINE": str(home / "feast" / "online.db"),
           "FEAST_USAGE": "False", "DO_NOT_TRACK": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("FLYWHEEL_FEAST_ONLINE_STORE", None)
    env.pop("FLYWHEEL_FEAST_RETRIEVAL", None)
    os.environ.update({k: env[k] for k in ("FLYWHEEL_HOME", "FLYWHEEL_FEAST_REGISTRY", "FLYWHEEL_FEAST_ONLINE")})
    info = setup(n, home)
    out = {"n": n, **info, "runs": {}}
    for kind in ("floor", "asof", "feast"):
        m = out["runs"][kind] = run_child(kind, home, env)
        print(f"  {n:>9,} {kind:<6} {m['seconds']:7.2f} s  peak {m['peak_mb']:7,.0f} MB", flush=True)
    out["runs"]["mat"] = run_child("mat", home, env, intervals=info["intervals"])
    frames = {k: pd.read_parquet(home / f"out-{k}.parquet") for k in ("floor", "asof", "feast")}
    names = [c for c in frames["feast"].columns if c not in pd.read_parquet(home / "rows.parquet").columns]
    out["agree_asof_feast"] = agreement(frames["asof"], frames["feast"], names)
    out["agree_floor_feast"] = agreement(frames["floor"], frames["feast"], names)
    return out


def report(results: list[dict[str, Any]]) -> None:
    print()
    print(f"{'label rows':>11} {'path':<7} {'seconds':>8} {'x floor':>8} {'peak MB':>8} {'RSS before':>11}"
          f" {'rows/s':>11}")
    for r in results:
        floor = r["runs"]["floor"]["seconds"]
        for kind in ("floor", "asof", "feast"):
            m = r["runs"][kind]
            print(f"{r['label_rows']:>11,} {kind:<7} {m['seconds']:>8.2f} {m['seconds'] / floor:>8.1f} "
                  f"{m['peak_mb']:>8,.0f} {m['rss_before_mb']:>11,.0f} {r['label_rows'] / m['seconds']:>11,.0f}")
        print(f"{'':>11} values equal: asof vs feast {100 * r['agree_asof_feast']:.3f}%, "
              f"floor vs feast {100 * r['agree_floor_feast']:.3f}%")
    print()
    print("feature tables and materialization (SQLite online store), per size:")
    for r in results:
        mat = r["runs"]["mat"]
        snaps = sum(r["snapshot_rows"].values())
        ents = sum(r["entities"].values())
        weeks = len(r["intervals"])
        print(f"  {r['label_rows']:>9,} label rows: {r['customers']:,} customers, {r['merchants']:,} merchants; "
              f"build_feature_tables x{weeks} {r['build_seconds']:.2f} s ({snaps / r['build_seconds']:,.0f} "
              f"snapshot rows/s); materialize x{weeks} {mat['seconds']:.2f} s = {snaps / mat['seconds']:,.0f} "
              f"snapshot rows/s scanned, ~{weeks * ents / mat['seconds']:,.0f} entity rows/s written "
              f"({ents:,} entities a week); peak {mat['peak_mb']:,.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="label rows per run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this path")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    root = Path(tempfile.mkdtemp(prefix="flywheel-bench-features-"))
    print(f"bench/features.py: {os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.2f}; state in {root}", flush=True)
    results = []
    try:
        for n in args.rows:
            results.append(measure(n, root))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(results)
    print(f"\n1-min load at the end {os.getloadavg()[0]:.2f} (2-core machine shared: treat times as +-30%)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
