"""Materialization into the online store at scale (issue 16): Feast's `materialize`, Flywheel's bulk path, raw floors.

One daily interval of one view (`customer_stats` of the shipped repo: one INT64 join key, 2 INT64 + 3 FLOAT64
features) at 300k and 1M entities, into SQLite and into Redis. The view's table gets three daily snapshot files
(the day before the interval, the interval's end, the day after), each with every entity, values drawn per
declared type; the interval [end - 1 day, end] reads one snapshot per entity out of the three.

Every measurement runs in its own subprocess (peak RSS = ru_maxrss of that child, imports included), on a fresh
registry and online store (a copy of feature_repo/ under a project name of this run, so Redis keys are this run's):

  feast   pipelines.features.materialize(engine="feast"): FeatureStore.materialize, split into the offline read
          (the source read node), the conversion to protos (_convert_arrow_to_proto) and online_write_batch
  bulk    pipelines.features.materialize (default engine): pipelines.features.online, split into the read
          (DuckDB, latest row per entity), encoding (keys, values, timestamps, Encoded.render) and the rest (the
          store's statements or round trips, rows assembled, registry); then, in the same child, the next day's
          interval (every entity newer: SQLite updates each row, Redis compares then writes each)
  floor   the bytes the bulk path wrote on the first day (SQLite: a copy of its store before the next day), read
          back and written again into an empty store of its page size: SQLite: sqlite3 executemany in one
          transaction, one row per statement (the plain floor), and SQLITE_GROUP entities per statement (the statement
          shape the bulk path uses), and SQLite alone copying them from the bulk store (ATTACH + INSERT .. SELECT in
          key order: no Python per row, the engine's own ceiling on this machine for the table as apply_feature_repo
          creates it, one B-tree WITHOUT ROWID, which no client can beat), and the same copy into Feast's own layout
          (a rowid table, its primary key and a full entity_key index: three B-trees per row, the table before
          pipelines.features.online.create_sqlite_tables), and the bulk path's next-day rows copied the same way onto
          that full table (every row upserted with its new value: the next day's ceiling; upserting the same rows
          again is no ceiling, SQLite skips rewriting an identical cell and its page); Redis: the same HSETs through a
          redis-py pipeline in batches of 10,000 (the plain floor), and pre-packed on one connection (the bulk path's
          way)

`x floor` = seconds / the faster floor's seconds, measured in the same run (the next day: / the update's
ceiling). Feast's path runs up to --feast-max entities (default 300,000: it takes ~30 s there and ~2 min at 1M).
After each size the bulk and Feast stores are compared through get_online_features on a sample of entities (every
feature and event timestamp).

Redis: 127.0.0.1:6379 by default (--redis), database --redis-db (default 11), keys ending with this run's project
names, all deleted at the end. Usage:
.venv/bin/python bench/materialize.py [--sizes 300000 1000000] [--stores sqlite redis] [--feast-max N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
VIEW = "customer_stats"
SERVICE = "spend_features"        # the service of that view alone: what the read-back compares
END = datetime(2026, 3, 3, tzinfo=UTC)
START = END - timedelta(days=1)
SAMPLE = 2_000                    # entities read back and compared


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------
# setup (parent)


def make_repo(root: Path, project: str) -> Path:
    """feature_repo/ copied under `project` (the Redis key suffix and SQLite table prefix of this run)."""
    repo = root / f"repo_{project}"
    repo.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "feature_repo" / "definitions.py", repo / "definitions.py")
    text, n = re.subn(r"(?m)^project: *flywheel\b", f"project: {project}",
                      (REPO_ROOT / "feature_repo" / "feature_store.yaml").read_text())
    assert n == 1
    (repo / "feature_store.yaml").write_text(text)
    return repo


def write_tables(home: Path, entities: int) -> None:
    """Three daily snapshots of every entity for VIEW, columns and types as declared in feature_repo/."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(REPO_ROOT))
    from feast import BatchFeatureView

    from pipelines.features import load_repo

    fv = next(o for o in load_repo(REPO_ROOT / "feature_repo").objects
              if isinstance(o, BatchFeatureView) and o.name == VIEW)
    src = fv.batch_source
    out = home / "features" / VIEW
    out.mkdir(parents=True)
    rng = np.random.default_rng(16)
    keys = rng.permutation(entities).astype("int64") * 7 + 3   # SAMPLE below reads some of these back
    features = {f.name for f in fv.features}
    for day in (START - timedelta(days=1), END, END + timedelta(days=1)):
        stamp = pd.Series(pd.Timestamp(day), index=range(entities), dtype="datetime64[ns, UTC]")
        cols: dict[str, Any] = {}
        for f in fv.schema:
            kind = f.dtype.to_value_type().name
            if f.name not in features:          # the join key
                cols[f.name] = keys
            elif kind == "INT64":
                cols[f.name] = rng.poisson(6.0, entities).astype("int64")
            elif kind == "DOUBLE":
                cols[f.name] = rng.gamma(2.0, 40.0, entities).round(2)
            else:
                raise SystemExit(f"{VIEW}.{f.name}: no generator for {kind}")
        cols[src.timestamp_field] = stamp
        cols[src.created_timestamp_column] = stamp + pd.Timedelta(hours=1)
        pd.DataFrame(cols).to_parquet(out / f"{day:%Y-%m-%d}.parquet", index=False)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          cwd=REPO_ROOT)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child {spec['method']} {spec['store']} {spec['entities']} failed ({proc.returncode})")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------------
# children


def child_env(spec: dict[str, Any]) -> None:
    state = Path(spec["state"])
    state.mkdir(parents=True, exist_ok=True)
    os.environ.update({"FLYWHEEL_HOME": spec["home"], "FEAST_USAGE": "False",
                       "FLYWHEEL_FEAST_REGISTRY": f"sqlite:///{state / 'registry.db'}",
                       "FLYWHEEL_FEAST_ONLINE": str(state / "online.db")})
    if spec["store"] == "redis":
        os.environ.update({"FLYWHEEL_FEAST_ONLINE_STORE": "redis",
                           "FLYWHEEL_FEAST_REDIS": f"{spec['redis']},db={spec['redis_db']}"})
    else:
        os.environ.pop("FLYWHEEL_FEAST_ONLINE_STORE", None)


def timed(owner: Any, name: str, label: str, split: dict[str, float]) -> None:
    """Add the wall time of every call of owner.name to split[label]."""
    fn = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            split[label] = split.get(label, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


def run_materialize(spec: dict[str, Any]) -> dict[str, Any]:
    """feast or bulk: apply the repo (not timed), then one materialize call, split; a sample read back."""
    import logging

    sys.path.insert(0, str(REPO_ROOT))
    child_env(spec)
    logging.disable(logging.WARNING)
    from pipelines import features
    from pipelines.features import online

    repo = Path(spec["repo"])
    features.apply_feature_repo(repo)
    split: dict[str, float] = {}
    if spec["method"] == "feast":
        import feast.infra.compute_engines.local.nodes as nodes
        from feast.infra.online_stores.redis import RedisOnlineStore
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        timed(nodes.LocalSourceReadNode, "execute", "offline read", split)
        timed(nodes, "_convert_arrow_to_proto", "to protos", split)
        timed(SqliteOnlineStore, "online_write_batch", "online_write_batch", split)
        timed(RedisOnlineStore, "online_write_batch", "online_write_batch", split)
    else:
        timed(online, "latest_rows", "read", split)
        for name in ("encode_keys", "encode_values", "timestamp_codes"):
            timed(online, name, "encode", split)
        timed(online.Encoded, "render", "encode", split)
    t = time.perf_counter()
    cpu = time.process_time()
    features.materialize(repo, [VIEW], START, END, engine=spec["method"])
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    split["other" if spec["method"] == "feast" else "store"] = seconds - sum(split.values())
    result = {"seconds": seconds, "cpu": cpu, "split": dict(split), "peak_mb": peak_mb()}
    # read back a sample (after the measurement) for the comparison of the two paths
    import numpy as np

    store = features.feature_store(repo)
    key = store.get_feature_view(VIEW).entity_columns[0].name
    ids = (np.random.default_rng(3).permutation(spec["entities"])[:SAMPLE] * 7 + 3).tolist() + [-1]
    got = store.get_online_features(features=store.get_feature_service(SERVICE),
                                    entity_rows=[{key: int(i)} for i in ids]).to_dict(include_event_timestamps=True)
    Path(spec["readback"]).write_text(json.dumps(got, default=str))
    if spec["method"] == "bulk":   # the next day: every entity has a newer snapshot (SQLite updates, Redis compares)
        if spec["store"] == "sqlite":   # the first day's store, kept for the floors (not timed)
            shutil.copy(Path(spec["state"]) / "online.db", Path(spec["state"]) / "first_day.db")
        split.clear()   # the same split as the first day's (the wrappers add to this dict)
        t, cpu = time.perf_counter(), time.process_time()
        features.materialize(repo, [VIEW], END, END + timedelta(days=1))
        seconds = time.perf_counter() - t
        split["store"] = seconds - sum(split.values())
        result["next"] = {"seconds": seconds, "cpu": time.process_time() - cpu, "split": split, "peak_mb": peak_mb()}
    if spec["store"] == "redis" and spec["method"] == "feast":
        result["deleted"] = delete_keys(spec)
    return result


def redis_client(spec: dict[str, Any]) -> Any:
    import redis

    host, _, port = spec["redis"].partition(":")
    return redis.Redis(host=host, port=int(port or 6379), db=spec["redis_db"])


def delete_keys(spec: dict[str, Any]) -> int:
    client = redis_client(spec)
    keys = list(client.scan_iter(match=b"*" + spec["project"].encode(), count=10_000))
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i:i + 10_000])
    return len(keys)


def run_floor_sqlite(spec: dict[str, Any]) -> dict[str, Any]:
    """The bulk store's rows (pre-serialized bytes, key order) written again into empty copies of its table, in one
    transaction: one row per statement (plain executemany), and SQLITE_GROUP entities per statement with each
    entity's key and timestamps bound once (the bulk path's statement shape, its floor)."""
    import sqlite3
    from itertools import chain, groupby

    source = sqlite3.connect(spec["source_db"])
    (page_size,) = source.execute("PRAGMA page_size").fetchone()   # the floors' stores: the bulk store's page size
    table = spec["table"]
    ddl = [s for (s,) in source.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL",
                                        (table,))]
    rows = source.execute(f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM "{table}" '
                          "ORDER BY entity_key, feature_name").fetchall()
    source.close()
    names = sorted({r[1] for r in rows})
    f = len(names)
    upsert = (" ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, value_text = "
              "excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts")
    cols = f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES '

    def grouped_sql(entities: int) -> str:
        per, out = 2 * f + 3, []
        for e in range(entities):
            b = f + e * per
            out += [f"(?{b + 1},?{j + 1},?{b + 2 + 2 * j},?{b + 3 + 2 * j},?{b + 2 * f + 2},?{b + 2 * f + 3})"
                    for j in range(f)]
        return cols + ",".join(out) + upsert

    entities = []   # key, (value, value_text) per feature in `names` order, event_ts, created_ts
    for key, group in groupby(rows, key=lambda r: r[0]):
        g = list(group)
        assert [r[1] for r in g] == names
        entities.append((key, *chain.from_iterable((r[2], r[3]) for r in g), g[0][4], g[0][5]))
    sys.path.insert(0, str(REPO_ROOT))
    from pipelines.features.online import SQLITE_GROUP as size  # the bulk path's statement shape

    whole = len(entities) - len(entities) % size
    params = [tuple(names) + tuple(chain.from_iterable(entities[i:i + size])) for i in range(0, whole, size)]
    rest = tuple(names) + tuple(chain.from_iterable(entities[whole:]))
    engine = "SQLite alone (INSERT .. SELECT)"
    feast_layout = "SQLite alone, into Feast's own table layout"
    again = "SQLite alone, upserting the next day's rows"
    # the bulk store's rows copied by SQLite itself, in key order (the engine floors)
    copy_sql = (cols.replace(" VALUES ", " ") + "SELECT entity_key, feature_name, value, value_text, event_ts, "
                f'created_ts FROM bulk."{table}" WHERE 1 ORDER BY entity_key, feature_name' + upsert)
    floors = {"executemany, one row per statement": None, f"executemany, {size} entities per statement": None,
              engine: None, feast_layout: None}
    if not spec["per_row"]:
        del floors["executemany, one row per statement"]
    out, cpu = {}, {}
    Path(spec["state"]).mkdir(parents=True, exist_ok=True)
    for label in floors:
        conn = sqlite3.connect(Path(spec["state"]) / f"floor_{len(out)}.db")
        conn.execute(f"PRAGMA page_size = {int(page_size)}")
        for s in ddl:   # Feast's own: a rowid table, its primary key and a full index on entity_key
            conn.execute(s.replace(" WITHOUT ROWID", "").removesuffix(" WHERE 0") if label == feast_layout else s)
        conn.commit()
        t, c = time.perf_counter(), time.process_time()
        with conn:
            if label in (engine, feast_layout):   # the rows copied by SQLite itself from the bulk store: the ceiling
                conn.execute("ATTACH DATABASE ? AS bulk", (spec["source_db"],))
                conn.execute(copy_sql)
            elif label.endswith("one row per statement"):
                conn.executemany(cols + "(?,?,?,?,?,?)" + upsert, rows)
            else:
                conn.executemany(grouped_sql(size), params)
                if whole < len(entities):
                    conn.execute(grouped_sql(len(entities) - whole), rest)
        out[label], cpu[label] = time.perf_counter() - t, time.process_time() - c
        if label == engine:   # the next day's rows upserted onto the full table by SQLite alone: the update's ceiling
            conn.execute("ATTACH DATABASE ? AS next", (spec["next_db"],))
            t, c = time.perf_counter(), time.process_time()
            with conn:
                conn.execute(copy_sql.replace(' FROM bulk."', ' FROM next."'))
            out[again], cpu[again] = time.perf_counter() - t, time.process_time() - c
            changed = conn.execute(f'SELECT count(*) FROM main."{table}" AS m JOIN bulk."{table}" AS b USING '
                                   "(entity_key, feature_name) WHERE m.value IS NOT b.value").fetchone()[0]
            assert changed > len(rows) // 2, f"the next day changed only {changed:,} of {len(rows):,} values"
        assert conn.execute(f'SELECT count(*) FROM main."{table}"').fetchone()[0] == len(rows)
        conn.close()
    return {"floors": out, "cpu": cpu, "rows": len(rows), "peak_mb": peak_mb(), "ceiling": again}


def run_floor_redis(spec: dict[str, Any]) -> dict[str, Any]:
    """The bulk run's hashes (read back, then deleted) written again: a redis-py pipeline, then pre-packed."""
    client = redis_client(spec)
    keys = sorted(client.scan_iter(match=b"*" + spec["project"].encode(), count=10_000))
    hashes = []
    for i in range(0, len(keys), 10_000):
        with client.pipeline(transaction=False) as pipe:
            for k in keys[i:i + 10_000]:
                pipe.hgetall(k)
            hashes += pipe.execute()
    mappings = list(zip(keys, hashes, strict=True))

    def bulk(b: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(b), b)

    out, cpu = {}, {}
    for label in ("redis-py pipeline, batches of 10,000", "pre-packed, one connection"):
        delete_keys(spec)
        packed = [b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(m)) + bulk(k)
                  + b"".join(bulk(f) + bulk(v) for f, v in m.items()) for k, m in mappings]
        t, c = time.perf_counter(), time.process_time()
        for i in range(0, len(mappings), 10_000):
            if label.startswith("redis-py pipeline"):
                with client.pipeline(transaction=False) as pipe:
                    for k, m in mappings[i:i + 10_000]:
                        pipe.hset(k, mapping=m)
                    pipe.execute()
            else:
                conn = client.connection_pool.get_connection()
                try:
                    conn.send_packed_command([b"".join(packed[i:i + 10_000])])
                    for _ in packed[i:i + 10_000]:
                        conn.read_response()
                finally:
                    client.connection_pool.release(conn)
        out[label], cpu[label] = time.perf_counter() - t, time.process_time() - c
    deleted = delete_keys(spec)
    assert deleted == len(mappings), (deleted, len(mappings))
    return {"floors": out, "cpu": cpu, "rows": len(mappings), "peak_mb": peak_mb()}


# ------------------------------------------------------------------------------------------------
# main


def fmt_split(split: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in split.items())


def same_reads(a: Path, b: Path) -> bool:
    import numpy as np

    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    if x.keys() != y.keys():
        return False
    for k in x:
        if x[k] != y[k]:
            vx, vy = (np.array(v, dtype=float) for v in (x[k], y[k]))
            if not np.array_equal(vx, vy, equal_nan=True):
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[300_000, 1_000_000])
    ap.add_argument("--stores", nargs="+", default=["sqlite", "redis"], choices=["sqlite", "redis"])
    ap.add_argument("--feast-max", type=int, default=300_000, help="largest size Feast's own path runs at")
    ap.add_argument("--redis", default="127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=11)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        run = {"feast": run_materialize, "bulk": run_materialize, "floor": None}[spec["method"]] or \
            (run_floor_sqlite if spec["store"] == "sqlite" else run_floor_redis)
        print(json.dumps(run(spec)))
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a stopped run still cleans up (the finally below)
    root = Path(tempfile.mkdtemp(prefix="flywheel-bench-materialize-"))
    tag = uuid.uuid4().hex[:8]
    began = time.perf_counter()
    load = os.getloadavg()[0]
    print(f"Materialization benchmark, {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}, {os.cpu_count()} CPUs, "
          f"1-min load {load:.2f} at start; view {VIEW}, interval {START:%Y-%m-%d} .. {END:%Y-%m-%d}")
    header = (f"{'store':7s} {'entities':>10s}  {'path':48s} {'seconds':>8s} {'cpu s':>6s} {'rows/s':>9s} "
              f"{'x floor':>7s} {'peak MB':>8s}  split (s)")
    print(header)
    print("-" * len(header))
    projects: list[str] = []
    try:
        for n in args.sizes:
            home = root / f"home_{n}"
            write_tables(home, n)
            for store in args.stores:
                base = {"home": str(home), "entities": n, "store": store, "redis": args.redis,
                        "redis_db": args.redis_db}
                results: dict[str, dict[str, Any]] = {}
                methods = ["feast", "bulk"] if n <= args.feast_max else ["bulk"]
                for method in methods:
                    project = f"bench_{store}_{method}_{tag}_{n}"
                    projects.append(project)
                    spec = {**base, "method": method, "project": project, "repo": str(make_repo(root, project)),
                            "state": str(root / f"state_{store}_{method}_{n}"),
                            "readback": str(root / f"read_{store}_{method}_{n}.json")}
                    results[method] = child(spec) | {"spec": spec}
                bulk_spec = results["bulk"]["spec"]
                floor_spec = {**bulk_spec, "method": "floor", "state": str(root / f"state_{store}_floor_{n}"),
                              "source_db": str(Path(bulk_spec["state"]) / "first_day.db"),
                              "next_db": str(Path(bulk_spec["state"]) / "online.db"),
                              "table": f"{bulk_spec['project']}_{VIEW}", "per_row": n <= args.feast_max}
                floor = child(floor_spec)
                update_floor = floor.get("ceiling")   # the update's ceiling, a floor of SQLite's only
                ceiling = floor["floors"].get(update_floor)
                best = min(s for label, s in floor["floors"].items() if label != update_floor)
                names = {"feast": "Feast materialize", "bulk": "Flywheel bulk (pipelines.features.online)"}
                for method, r in results.items():
                    print(f"{store:7s} {n:>10,}  {names[method]:48s} {r['seconds']:8.2f} {r['cpu']:6.2f} "
                          f"{n / r['seconds']:9,.0f} {r['seconds'] / best:7.2f} {r['peak_mb']:8,.0f}  "
                          f"{fmt_split(r['split'])}")
                nxt = results["bulk"]["next"]
                vs = f"{nxt['seconds'] / ceiling:7.2f}" if ceiling else f"{'':>7s}"
                print(f"{store:7s} {n:>10,}  {'Flywheel bulk, the next day (all updated)':48s} {nxt['seconds']:8.2f} "
                      f"{nxt['cpu']:6.2f} {n / nxt['seconds']:9,.0f} {vs} {nxt['peak_mb']:8,.0f}  "
                      f"{fmt_split(nxt['split'])} (same child, after the first)")
                for label, s in floor["floors"].items():
                    ratio = 1.0 if label == update_floor else s / best
                    print(f"{store:7s} {n:>10,}  {'floor: ' + label:48s} {s:8.2f} {floor['cpu'][label]:6.2f} "
                          f"{n / s:9,.0f} {ratio:7.2f} {floor['peak_mb']:8,.0f}  "
                          f"{floor['rows']:,} rows of the bulk run")
                if "feast" in results:
                    same = same_reads(Path(results["feast"]["spec"]["readback"]), Path(bulk_spec["readback"]))
                    print(f"{'':19s} get_online_features on {SAMPLE:,} entities + 1 unknown, Feast vs bulk: "
                          f"{'identical' if same else 'DIFFERENT'}")
    finally:
        if "redis" in args.stores:
            spec = {"redis": args.redis, "redis_db": args.redis_db}
            left = sum(delete_keys({**spec, "project": p}) for p in projects)
            if left:
                print(f"deleted {left:,} leftover Redis keys")
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"total {time.perf_counter() - began:.0f} s; 1-min load {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
