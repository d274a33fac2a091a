"""Point-in-time training sets at 100k and 1M label rows: Feast vs Flywheel's ASOF path vs the raw floor.

For each size: generated transactions (scenarios.cards, customers and merchants scaled with the rows)
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

--engine instead benchmarks pipelines.feature_engine.compute_view on one representative view (100k
customers, daily: count 1d/7d, sum 7d, mean 30d, max 7d, std 30d, count_distinct 7d of ~1k merchants,
last, share of one of 3 channels; and the same view hourly) against two hand-written floors computing
the same aggregations: numpy over dense (customer x bucket) grids, and DuckDB SQL. Each measurement runs
in its own subprocess; its peak is the child's own VmHWM. Usage:
.venv/bin/python bench/features.py --engine [--events N ...] [--hourly-events N ...] [--repeat K]
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
        select += [f"CASE WHEN {a}.feature_ts >= e.event_ts - INTERVAL {secs} SECOND THEN {a}.{f} END AS {f}"
                   for f in feats]
        joins.append(f"ASOF LEFT JOIN read_parquet('{features_root / view / '*.parquet'}') {a} "
                     f"ON e.{key} = {a}.{key} AND e.event_ts >= {a}.feature_ts")
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
            declared = features.load_repo(repo)
            views = [(p.name, declared.views[p.name].join_keys[0], [f.name for f in p.features],
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

    from pipelines import features, training
    from pipelines.spec import load_specs
    from scenarios import cards as datagen

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
    declared = features.load_repo(REPO_ROOT / "feature_repo")
    for start, end in intervals:
        for v in VIEWS:
            table = features.build_view_table(declared.views[v], validated, home / "features", start, end,
                                              f"{start:%Y-%m-%d}")
            snapshot_rows[v] += table.rows
    build_s = time.perf_counter() - t
    features.apply_feature_repo(REPO_ROOT / "feature_repo")
    spec = load_specs(REPO_ROOT / "models")["fraud"]
    rows = training.label_rows(spec, validated, intervals[1][0], intervals[-1][1],
                               views=training.ModelViews.of(spec, REPO_ROOT / "feature_repo")).iloc[:n]
    rows.to_parquet(home / "rows.parquet", index=False)
    entities = {v: int(pd.read_parquet(home / "features" / v, columns=[declared.views[v].join_keys[0]]).nunique()
                       .iloc[0]) for v in VIEWS}
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


# ------------------------------------------------------------------------------------------------
# --engine: pipelines.feature_engine.compute_view vs hand-written floors for one view


ENGINE_DAYS = 35                 # days of events; the daily view's lookback is 30 days
ENGINE_ENTITIES = 100_000
ENGINE_T0 = "2026-01-05"         # first day of events (UTC midnight)


def own_peak_mb() -> float:
    """This process's own peak RSS (VmHWM). Unlike ru_maxrss, which a child inherits from its parent at
    spawn (Linux carries the old address space's high-water mark across exec), so that a child of a
    2 GB parent reports >= 2 GB whatever it does."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def engine_view(granularity: str) -> Any:
    """The representative view: count 1/7, sum 7, mean 30, max 7, std 30, count_distinct 7 (merchant, ~1k
    values), last 30, share 7 (channel == wallet), in days for the daily view, in hours/days for the hourly."""
    from pipelines.feature_engine import AggregationSpec, ViewSpec

    g = timedelta(days=1) if granularity == "daily" else timedelta(hours=1)
    short, long_ = (7 * g, 30 * g) if granularity == "daily" else (24 * g, 7 * 24 * g)
    aggs = (AggregationSpec("txn_count_1", "amount", "count", g),
            AggregationSpec("txn_count_short", "amount", "count", short),
            AggregationSpec("amount_sum_short", "amount", "sum", short),
            AggregationSpec("amount_mean_long", "amount", "mean", long_),
            AggregationSpec("amount_max_short", "amount", "max", short),
            AggregationSpec("amount_std_long", "amount", "std", long_),
            AggregationSpec("merchants_short", "merchant", "count_distinct", short),
            AggregationSpec("amount_last", "amount", "last", long_),
            AggregationSpec("wallet_share_short", "channel", "share", short, match="wallet"))
    return ViewSpec(f"customer_activity_{granularity}", ("customer_id",), "event_ts", g, aggs)


def engine_events(n: int, days: int, path: Path, seed: int = 0) -> None:
    """`n` transactions over `days` days from ENGINE_T0: ENGINE_ENTITIES customers (int keys 100000..,
    lognormal activity), lognormal amounts, ~1k merchants (Zipf-like), 3 channels; no nulls."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)

    def draw(weights: Any, size: int) -> Any:
        cdf = np.cumsum(weights / weights.sum())
        return np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1)

    t0 = pd.Timestamp(ENGINE_T0, tz="UTC").value
    merchants = np.array([f"m{i:04d}" for i in range(1000)], dtype=object)
    frame = pd.DataFrame({
        "customer_id": draw(rng.lognormal(0, 1, ENGINE_ENTITIES), n) + 100_000,
        "event_ts": pd.to_datetime(t0 + rng.integers(0, days * 86_400 * 10**9, n), utc=True),
        "amount": np.round(rng.lognormal(3.5, 1.0, n), 2),
        "merchant": merchants[draw(1 / np.arange(1, 1001) ** 0.8, n)],
        "channel": np.array(["card", "wallet", "cash"], dtype=object)[draw(np.array([0.6, 0.25, 0.15]), n)],
    })
    frame.to_parquet(path, index=False)


def floor_numpy(events: Any, view: Any, start_ns: int, end_ns: int) -> Any:
    """Hand-written numpy for this one view: dense (customer x bucket) grids, rolling sums by cumsum
    along each customer's row, sliding max, exact distinct counts by a +1/-1 sweep. Int keys and no
    nulls assumed (the generated data has none)."""
    import numpy as np
    import pandas as pd
    from numpy.lib.stride_tricks import sliding_window_view

    g = int(view.granularity.total_seconds()) * 10**9
    w = {a.name: int(a.window / view.granularity) for a in view.aggregations}
    look = max(w.values())
    lo = start_ns + g - look * g
    nb = (end_ns - lo) // g
    j0, k = look - 1, nb - look + 1               # first snapshot bucket, number of snapshots
    ts = events["event_ts"].array.asi8
    keep = (ts >= lo) & (ts < end_ns)
    ts = ts[keep]
    e, ids = pd.factorize(events["customer_id"].to_numpy()[keep], sort=True)
    amount = events["amount"].to_numpy()[keep]
    ne = len(ids)
    cell = e * nb + (ts - lo) // g

    def grid(weights: Any = None) -> Any:
        return np.bincount(cell, weights, minlength=ne * nb).reshape(ne, nb)

    def roll(gr: Any, win: int) -> Any:            # (ne, k): sums over buckets [j - win + 1, j]
        c = np.zeros((ne, nb + 1), dtype=gr.dtype)
        np.cumsum(gr, axis=1, out=c[:, 1:])
        return c[:, j0 + 1:] - c[:, j0 + 1 - win:nb + 1 - win]

    n = grid()
    active = roll(n, look) > 0
    jj, ee = np.nonzero(active.T)                 # (snapshot, customer) order
    flat = ee * k + jj

    def at(a: Any) -> Any:                        # (ne, k) grid -> value per output row
        return np.ascontiguousarray(a).reshape(-1)[flat]
    out: dict[str, Any] = {"customer_id": ids[ee],
                           "feature_ts": pd.DatetimeIndex((lo + (j0 + jj + 1) * g).view("M8[ns]")).tz_localize("UTC")}
    s = grid(amount)
    cnt = {win: roll(n, win) for win in {w["txn_count_1"], w["txn_count_short"], w["amount_mean_long"]}}
    out["txn_count_1"] = at(cnt[w["txn_count_1"]])
    out["txn_count_short"] = at(cnt[w["txn_count_short"]])
    out["amount_sum_short"] = at(roll(s, w["amount_sum_short"]))
    nl = at(cnt[w["amount_mean_long"]])
    with np.errstate(invalid="ignore", divide="ignore"):
        out["amount_mean_long"] = at(roll(s, w["amount_mean_long"])) / nl
    mx = np.full(ne * nb, -np.inf)
    np.maximum.at(mx, cell, amount)
    ws = w["amount_max_short"]
    mx = at(sliding_window_view(mx.reshape(ne, nb)[:, j0 + 1 - ws:], ws, axis=1).max(axis=2))
    out["amount_max_short"] = np.where(np.isneginf(mx), np.nan, mx)
    emean = np.bincount(e, amount, minlength=ne) / np.bincount(e, minlength=ne)
    d = amount - emean[e]
    wl = w["amount_std_long"]
    a, q = at(roll(grid(d), wl)), at(roll(grid(d * d), wl))
    with np.errstate(invalid="ignore", divide="ignore"):
        out["amount_std_long"] = np.where(nl >= 2, np.sqrt(np.maximum(q - a * a / nl, 0) / (nl - 1)), np.nan)
    # distinct merchants: distinct (merchant, customer, bucket), +1 from the bucket to the next occurrence
    mcode, _ = pd.factorize(events["merchant"].to_numpy()[keep])
    trip = np.sort((mcode * ne + e) * nb + (ts - lo) // g)    # np.unique hashes (slower) in numpy 2.4
    trip = trip[np.append(True, trip[1:] != trip[:-1])]
    pair, b = trip // nb, trip % nb
    nxt = np.full(len(trip), np.iinfo(np.int64).max)
    same = pair[1:] == pair[:-1]
    nxt[:-1][same] = b[1:][same]
    wd = w["merchants_short"]
    stop = np.minimum(b + wd, nxt)
    ent = pair % ne
    delta = np.bincount(ent * (nb + 1) + b, minlength=ne * (nb + 1))
    delta -= np.bincount(ent * (nb + 1) + np.minimum(stop, nb), minlength=ne * (nb + 1))
    out["merchants_short"] = at(np.cumsum(delta.reshape(ne, nb + 1), axis=1)[:, j0:nb])
    # last amount: latest event of the latest bucket with events within the window (ties: largest)
    tmax = np.full(ne * nb, np.iinfo(np.int64).min)
    np.maximum.at(tmax, cell, ts)
    best = np.full(ne * nb, -np.inf)
    np.maximum.at(best, cell, np.where(ts == tmax[cell], amount, -np.inf))
    latest = at(np.maximum.accumulate(np.where(n > 0, np.arange(nb), -1), axis=1)[:, j0:])
    wlast = w["amount_last"]
    ok = latest > j0 + jj - wlast
    out["amount_last"] = np.where(ok, best[ee * nb + np.maximum(latest, 0)], np.nan)
    ccode, cuniq = pd.factorize(events["channel"].to_numpy()[keep])
    wallet = grid((ccode == list(cuniq).index("wallet")).astype(np.float64))
    wsh = w["wallet_share_short"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["wallet_share_short"] = at(roll(wallet, wsh)) / at(cnt.get(wsh, roll(n, wsh)))
    out["created_ts"] = pd.DatetimeIndex(np.full(len(ee), end_ns).view("M8[ns]")).tz_localize("UTC")
    return pd.DataFrame(out, copy=False)


def floor_duckdb(events: Any, view: Any, start_ns: int, end_ns: int) -> Any:
    """Hand-written DuckDB SQL for this one view: per (customer, bucket) partials, a dense grid of
    buckets per customer, window frames over it; distinct merchants by the same +1/-1 sweep."""
    import duckdb
    import numpy as np
    import pandas as pd

    g = int(view.granularity.total_seconds()) * 10**9
    w = {a.name: int(a.window / view.granularity) for a in view.aggregations}
    look = max(w.values())
    lo = start_ns + g - look * g
    nb = (end_ns - lo) // g
    con = duckdb.connect()
    con.register("events", events)

    def frame(win: int) -> str:
        return f"(PARTITION BY k ORDER BY b ROWS BETWEEN {win - 1} PRECEDING AND CURRENT ROW)"

    sql = f"""
    WITH ev AS (
      SELECT customer_id AS k, (epoch_ns(event_ts) - {lo}) // {g} AS b, epoch_ns(event_ts) AS t,
             amount, merchant, channel
      FROM events WHERE epoch_ns(event_ts) >= {lo} AND epoch_ns(event_ts) < {end_ns}),
    ent AS (SELECT k, avg(amount) AS m FROM ev GROUP BY k),
    cells AS (
      SELECT k, b, count(*) AS r, count(amount) AS n, sum(amount) AS s, max(amount) AS mx,
             sum(amount - m) AS a, sum((amount - m) * (amount - m)) AS q,
             max({{'t': t, 'v': amount}}) AS lastv, count(*) FILTER (WHERE channel = 'wallet') AS wal
      FROM ev JOIN ent USING (k) GROUP BY k, b),
    occ AS (SELECT k, b, lead(b) OVER (PARTITION BY k, merchant ORDER BY b) AS nxt
            FROM (SELECT DISTINCT k, merchant, b FROM ev)),
    deltas AS (SELECT k, b AS x, 1 AS d FROM occ
               UNION ALL
               SELECT k, least(b + {w['merchants_short']}, coalesce(nxt, {nb})) AS x, -1 AS d FROM occ),
    dsum AS (SELECT k, x AS b, sum(d) AS d FROM deltas WHERE x < {nb} GROUP BY k, x),
    grid AS (SELECT k, r.range AS b FROM (SELECT DISTINCT k FROM cells), range(0, {nb}) r),
    dense AS (SELECT grid.k, grid.b, c.r, c.n, c.s, c.mx, c.a, c.q, c.lastv, c.wal, dsum.d
              FROM grid LEFT JOIN cells c ON c.k = grid.k AND c.b = grid.b
                        LEFT JOIN dsum ON dsum.k = grid.k AND dsum.b = grid.b),
    win AS (
      SELECT k, b,
        sum(r) OVER {frame(look)} AS active,
        coalesce(sum(n) OVER {frame(w['txn_count_1'])}, 0) AS txn_count_1,
        coalesce(sum(n) OVER {frame(w['txn_count_short'])}, 0) AS txn_count_short,
        coalesce(sum(s) OVER {frame(w['amount_sum_short'])}, 0) AS amount_sum_short,
        sum(s) OVER {frame(w['amount_mean_long'])} AS s_long,
        sum(n) OVER {frame(w['amount_mean_long'])} AS n_long,
        max(mx) OVER {frame(w['amount_max_short'])} AS amount_max_short,
        sum(a) OVER {frame(w['amount_std_long'])} AS a_long,
        sum(q) OVER {frame(w['amount_std_long'])} AS q_long,
        coalesce(sum(d) OVER (PARTITION BY k ORDER BY b ROWS UNBOUNDED PRECEDING), 0) AS merchants_short,
        last_value(lastv IGNORE NULLS) OVER {frame(w['amount_last'])} AS lastv,
        sum(wal) OVER {frame(w['wallet_share_short'])} AS wal_short,
        sum(n) OVER {frame(w['wallet_share_short'])} AS n_share
      FROM dense)
    SELECT k AS customer_id, b, txn_count_1::BIGINT AS txn_count_1, txn_count_short::BIGINT AS txn_count_short,
           amount_sum_short::DOUBLE AS amount_sum_short, s_long / n_long AS amount_mean_long,
           amount_max_short,
           CASE WHEN n_long >= 2 THEN sqrt(greatest(q_long - a_long * a_long / n_long, 0) / (n_long - 1))
           END AS amount_std_long,
           merchants_short::BIGINT AS merchants_short, lastv.v AS amount_last,
           wal_short / n_share AS wallet_share_short
    FROM win WHERE b >= {look - 1} AND active > 0 ORDER BY b, k
    """
    out = con.execute(sql).df()
    con.close()
    feature_ts = pd.DatetimeIndex((lo + (out.pop("b").to_numpy() + 1) * g).view("M8[ns]")).tz_localize("UTC")
    out.insert(1, "feature_ts", feature_ts)
    out["created_ts"] = pd.DatetimeIndex(np.full(len(out), end_ns).view("M8[ns]")).tz_localize("UTC")
    return out


def engine_interval(granularity: str, mode: str) -> tuple[int, int, int]:
    """(start_ns, end_ns, event days) of a measurement: `interval` = just the snapshots the events fully
    cover (the caller passed exactly [start + g - lookback, end)), `backfill` = a snapshot every bucket."""
    import pandas as pd

    t0 = pd.Timestamp(ENGINE_T0, tz="UTC")
    if granularity == "daily":
        end = t0 + pd.Timedelta(days=ENGINE_DAYS)
        start = t0 + pd.Timedelta(days=29) if mode == "interval" else t0
        return start.value, end.value, ENGINE_DAYS
    end = t0 + pd.Timedelta(days=8)     # hourly: 8 days of events, the last day's 24 snapshots
    return (end - pd.Timedelta(days=1)).value, end.value, 8


def engine_child(spec: dict[str, Any]) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines import feature_engine

    # column by column, freeing Arrow's copy as it goes: a lower peak before the measurement (every path)
    events = pq.read_table(spec["events"]).to_pandas(split_blocks=True, self_destruct=True)
    pa.default_memory_pool().release_unused()
    view = engine_view(spec["granularity"])
    start_ns, end_ns, _ = engine_interval(spec["granularity"], spec["mode"])
    result: dict[str, Any] = {"kind": spec["kind"], "rss_before_mb": rss_mb()}
    if spec["kind"] == "duckdb":
        import duckdb  # noqa: F401  (imported before the clock)
    t, cpu = time.perf_counter(), time.process_time()
    if spec["kind"] == "engine_sorted":   # the path of (entity x bucket) grids too large for a lookup table
        feature_engine._DENSE_CELLS_MAX = 0
    if spec["kind"] in ("engine", "engine_sorted"):
        out = feature_engine.compute_view(events, view, pd.Timestamp(start_ns, tz="UTC").to_pydatetime(),
                                          pd.Timestamp(end_ns, tz="UTC").to_pydatetime())
    elif spec["kind"] == "numpy":
        out = floor_numpy(events, view, start_ns, end_ns)
    else:
        out = floor_duckdb(events, view, start_ns, end_ns)
    result["seconds"] = time.perf_counter() - t
    result["cpu_seconds"] = time.process_time() - cpu     # all threads (DuckDB uses both cores)
    result["rows"] = len(out)
    result["peak_mb"] = own_peak_mb()
    out.to_parquet(spec["out"], index=False)
    Path(spec["result"]).write_text(json.dumps(result))


def engine_run_child(spec: dict[str, Any], home: Path) -> dict[str, Any]:
    log = home / f"child-{spec['tag']}.log"
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, __file__, "--engine-child", json.dumps(spec)], cwd=home,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['tag']} failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return json.loads(Path(spec["result"]).read_text())


def engine_compare(frames: dict[str, Any], view: Any) -> dict[str, Any]:
    """Per floor: same (customer, feature_ts) rows in the same order, and the largest relative difference
    of any numeric feature against the engine (counts must be equal)."""
    import numpy as np

    eng = frames["engine"]
    out: dict[str, Any] = {}
    for kind, other in frames.items():
        if kind == "engine":
            continue
        same_rows = (len(eng) == len(other) and (eng["customer_id"].to_numpy() == other["customer_id"].to_numpy()).all()
                     and (eng["feature_ts"] == other["feature_ts"]).all())
        worst, worst_name = 0.0, ""
        if same_rows:
            for a in view.aggregations:
                x, y = eng[a.name].to_numpy(dtype=float), other[a.name].to_numpy(dtype=float)
                if not (np.isnan(x) == np.isnan(y)).all():
                    worst, worst_name = float("inf"), a.name + " (NaN pattern)"
                    break
                both = ~np.isnan(x)
                with np.errstate(invalid="ignore", divide="ignore"):
                    rel = np.abs(x[both] - y[both]) / np.maximum(np.abs(x[both]), np.abs(y[both]))
                rel = rel[np.isfinite(rel)]
                m = float(rel.max()) if len(rel) else 0.0
                if m > worst:
                    worst, worst_name = m, a.name
        out[kind] = {"same_rows": bool(same_rows), "max_rel_diff": worst, "worst_feature": worst_name}
    return out


def engine_spot_check(events_path: Path, out: Any, view: Any, sample: int = 500, seed: int = 1) -> dict[str, Any]:
    """Brute force on `sample` random snapshot rows of the engine's output: per row and aggregation, the
    customer's events in [t - W, t) filtered with plain pandas and the function applied (std two-pass).
    Returns the largest relative difference of a float feature and the number of unequal counts."""
    import numpy as np
    import pandas as pd

    ev = pd.read_parquet(events_path).sort_values(["customer_id", "event_ts"], kind="stable", ignore_index=True)
    ids = ev["customer_id"].to_numpy()
    rows = out.sample(min(sample, len(out)), random_state=seed)
    worst, int_mismatch = 0.0, 0
    for _, row in rows.iterrows():
        lo, hi = np.searchsorted(ids, row["customer_id"]), np.searchsorted(ids, row["customer_id"], side="right")
        mine = ev.iloc[lo:hi]
        t = row["feature_ts"]
        for a in view.aggregations:
            win = mine[(mine["event_ts"] >= t - a.window) & (mine["event_ts"] < t)]
            v = win[a.column].dropna()
            f = a.function
            if f in ("count", "count_distinct"):
                want = len(v) if f == "count" else v.nunique()
                int_mismatch += int(want != row[a.name])
                continue
            if f == "share":
                want = (v == a.match).sum() / len(v) if len(v) else np.nan
            elif f == "last":
                want = v[win.loc[v.index, "event_ts"] == win.loc[v.index, "event_ts"].max()].max() if len(v) else np.nan
            elif f == "std":
                want = float(np.std(v.to_numpy(), ddof=1)) if len(v) >= 2 else np.nan
            else:
                want = float(getattr(np, f)(v.to_numpy())) if len(v) else (0.0 if f == "sum" else np.nan)
            got = row[a.name]
            if np.isnan(want) != np.isnan(got):
                worst = float("inf")
            elif not np.isnan(want) and want != got:
                worst = max(worst, abs(got - want) / max(abs(got), abs(want)))
    return {"rows": len(rows), "max_rel_diff": worst, "count_mismatches": int_mismatch}


def engine_measure(n: int, granularity: str, mode: str, root: Path, repeat: int) -> dict[str, Any]:
    import pandas as pd

    _, _, days = engine_interval(granularity, mode)
    events = root / f"events-{granularity}-{n}.parquet"
    if not events.exists():
        t = time.perf_counter()
        engine_events(n, days, events)
        print(f"  generated {n:,} events over {days} days in {time.perf_counter() - t:.1f} s", flush=True)
    view = engine_view(granularity)
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(repeat):
        # the two closest paths `repeat` times (best kept), the others once
        for kind in ("engine", "engine_sorted", "numpy", "duckdb") if r == 0 else ("engine", "numpy"):
            tag = f"{granularity}-{mode}-{n}-{kind}-{r}"
            spec = {"tag": tag, "kind": kind, "granularity": granularity, "mode": mode, "events": str(events),
                    "out": str(root / f"out-{kind}.parquet"), "result": str(root / f"result-{tag}.json")}
            m = engine_run_child(spec, root)
            runs.setdefault(kind, []).append(m)
            print(f"  {granularity:<6} {mode:<8} {n:>11,} {kind:<13} {m['seconds']:7.2f} s  "
                  f"cpu {m['cpu_seconds']:6.2f} s  {m['rows']:>10,} rows  peak {m['peak_mb']:7,.0f} MB  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
        if r == 0:
            frames = {k: pd.read_parquet(root / f"out-{k}.parquet")
                      for k in ("engine", "engine_sorted", "numpy", "duckdb")}
            agreement = engine_compare(frames, view)
            agreement["oracle"] = engine_spot_check(events, frames["engine"], view)
            del frames
    best = {k: min(v, key=lambda m: m["seconds"]) for k, v in runs.items()}
    return {"n": n, "granularity": granularity, "mode": mode, "runs": best, "all": runs, "agreement": agreement}


def engine_report(results: list[dict[str, Any]]) -> None:
    print()
    print(f"{'view':<7} {'interval':<9} {'events':>11} {'snapshot rows':>14} {'path':<13} {'seconds':>8} "
          f"{'x floor':>8} {'cpu s':>7} {'rows/s':>11} {'peak MB':>8}  agreement with the engine")
    for r in results:
        floor = min(r["runs"][k]["seconds"] for k in ("numpy", "duckdb"))
        for kind in ("engine", "engine_sorted", "numpy", "duckdb"):
            m = r["runs"][kind]
            agree = r["agreement"].get(kind)
            spot = r["agreement"]["oracle"]
            note = (f"brute force on {spot['rows']} sampled rows: max rel diff {spot['max_rel_diff']:.1e}, "
                    f"{spot['count_mismatches']} unequal counts") if kind == "engine" else (
                f"same rows, max rel diff {agree['max_rel_diff']:.1e} ({agree['worst_feature'] or '-'})"
                if agree["same_rows"] else "ROWS DIFFER")
            print(f"{r['granularity']:<7} {r['mode']:<9} {r['n']:>11,} {m['rows']:>14,} {kind:<13} "
                  f"{m['seconds']:>8.2f} {m['seconds'] / floor:>8.2f} {m['cpu_seconds']:>7.2f} "
                  f"{m['rows'] / m['seconds']:>11,.0f} "
                  f"{m['peak_mb']:>8,.0f}  {note}")


def engine_main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="flywheel-bench-engine-"))
    print(f"bench/features.py --engine: {os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.2f}; "
          f"state in {root}", flush=True)
    results = []
    try:
        for n in args.events:
            for mode in ("interval", "backfill"):
                results.append(engine_measure(n, "daily", mode, root, args.repeat))
        for n in args.hourly_events:
            results.append(engine_measure(n, "hourly", "interval", root, args.repeat))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    engine_report(results)
    print(f"\n1-min load at the end {os.getloadavg()[0]:.2f} (2-core machine shared: treat times as +-30%)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="label rows per run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this path")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--engine", action="store_true",
                        help="benchmark pipelines.feature_engine.compute_view against hand-written floors instead")
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="--engine: events of the daily view per run")
    parser.add_argument("--hourly-events", type=int, nargs="*", default=[1_000_000],
                        help="--engine: events of the hourly view per run")
    parser.add_argument("--repeat", type=int, default=1, help="--engine: measurements per path (best kept)")
    parser.add_argument("--engine-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.engine_child:
        engine_child(json.loads(args.engine_child))
        return 0
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if args.engine:
        return engine_main(args)
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
