"""Online predictions over HTTP against the same work in-process, on the SQLite and the Redis online stores.

    .venv/bin/python bench/serving.py [--stores sqlite redis] [--requests 3000] [--seconds 10] [--clients 4]

For each store: a small real world (tests/serving_world.py: the shipped Feast repo on a fresh registry, feature
tables of 400 customers and 80 merchants materialized into the online store, the fraud model registered in an
MLflow store on SQLite) and `flywheel serve --model fraud` as its own process on a loopback port, as deployed
(uvicorn, one event loop; the online log on). Then, in this process:

- latency: `--requests` single-row requests one after the other on one keep-alive connection (the client's
  wall time per request: HTTP both ways, JSON, auth, the online read, predict, the answer), p50/p95/p99;
- throughput: `--clients` keep-alive connections (in 2 client processes) sending single-row requests without
  pause for `--seconds`: answered requests per second, and the server's own p50/p99 under that load (/metrics);
- the floor, measured here in the same run: the same online read (`OnlineFeatures.read`: Feast's
  get_online_features with event timestamps) + the same input matrix + the booster's inplace_predict, one row
  at a time in-process, no HTTP; and, for the choice of read path, the read alone through Feast's
  get_online_features and through the online store's own `online_read` (both views, entity keys serialized by
  hand), which skips Feast's response building.

Bounded: about 40 s per store (the world, the server start, the measurements) with the defaults. The goal of
issue 15: end-to-end p99 <= 10 ms at one row and >= 500 requests/s on this 2-core machine, on both stores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
KEY = "bench-key-0123456789abcdef0123456789abcdef"


def pct(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_rows(world: Any, n: int) -> list[dict[str, Any]]:
    rows = []
    for r in world.batch.head(n).to_dict("records"):
        rows.append({k: (v.isoformat() if hasattr(v, "isoformat") else v.item() if hasattr(v, "item") else v)
                     for k, v in r.items() if k != "is_fraud"})
    return rows


def post(conn: http.client.HTTPConnection, body: bytes) -> dict[str, Any]:
    conn.request("POST", "/v1/models/fraud/predict", body=body,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
    return json.loads(data)


def _client(port: int, bodies: list[bytes], seconds: float, threads: int, out: Any) -> None:
    """A client process: `threads` keep-alive connections sending without pause; puts (ok, failed)."""
    counts = [0, 0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i, ok, bad = offset, 0, 0
        while time.monotonic() < stop:
            try:
                post(conn, bodies[i % len(bodies)])
                ok += 1
            except Exception:  # noqa: BLE001 - counted
                bad += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            i += 1
        with lock:
            counts[0] += ok
            counts[1] += bad

    ts = [threading.Thread(target=run, args=(k * 97,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(tuple(counts))


def server_quantiles(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    text = conn.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("flywheel_serving_request_seconds{") and 'model="fraud"' in line:
            q = line.split('quantile="')[1].split('"')[0]
            out[q] = float(line.rsplit(" ", 1)[1]) * 1000
    return out


def start_server(world: Any, port: int, log: Path) -> subprocess.Popen[bytes]:
    from demo_runs import without_runtime_settings

    env = without_runtime_settings(os.environ)
    env.update({**world.env, "FLYWHEEL_SERVING_PORT": str(port), "FLYWHEEL_SERVING_API_KEY": KEY})
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flywheel.cli", "serve", "--model", "fraud", "--feature-repo",
                                 str(world.repo)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"flywheel serve did not become ready: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def floor(world: Any, rows: list[dict[str, Any]], n: int) -> dict[str, tuple[float, float, float]]:
    """The same work in-process: online read + matrix + predict, one row at a time; and the read paths alone."""
    import time as t

    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from pipelines.serving.champion import load_champion
    from pipelines.serving.features import OnlineFeatures
    from pipelines.serving.server import quiet_runtime

    online = OnlineFeatures(world.repo, world.spec.feature_service)
    champ = load_champion(world.spec, "1", set(world.spec.row_features) | set(online.names))
    quiet_runtime()      # as the server does before it answers
    now = t.time()
    whole, feast_read, store_read = [], [], []
    for i in range(n + 50):
        row = rows[i % len(rows)]
        t0 = t.perf_counter()
        got = online.read([row], [now])
        matrix, _ = champ.encoder.matrix([{**row, **{f: v[0] for f, v in got.values.items()}}])
        champ.predict(matrix)
        if i >= 50:
            whole.append((t.perf_counter() - t0) * 1000)
    store = online.store
    fs = online.fs
    provider, config = store._get_provider(), store.config
    views = [(store.get_feature_view(v.name), v.join_keys[0]) for v in online.views]
    for i in range(n + 50):
        row = rows[i % len(rows)]
        t0 = t.perf_counter()
        store.get_online_features(features=fs, entity_rows=[{k: row[k] for k in online.join_keys}]).to_dict(
            include_event_timestamps=True)
        t1 = t.perf_counter()
        for fv, key in views:
            provider.online_read(config, fv, [EntityKey(join_keys=[key], entity_values=[Value(int64_val=row[key])])],
                                 None)
        t2 = t.perf_counter()
        if i >= 50:
            feast_read.append((t1 - t0) * 1000)
            store_read.append((t2 - t1) * 1000)
    return {"floor": pct(whole), "feast_read": pct(feast_read), "store_read": pct(store_read)}


def bench_store(store: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import serving_world as sw

    saved = dict(os.environ)
    t0 = time.monotonic()
    world = sw.build(tmp / f"world-{store}", store, versions=1)
    sw.set_champion(world, "1")
    built = time.monotonic() - t0
    port = free_port()
    proc = start_server(world, port, tmp / f"serve-{store}.log")
    try:
        rows = request_rows(world, 200)
        bodies = [json.dumps({"rows": [r]}).encode() for r in rows]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for b in bodies[:100]:      # warm-up: connection, caches, the booster's first calls
            post(conn, b)
        lat = []
        version = None
        for i in range(args.requests):
            t1 = time.perf_counter()
            answer = post(conn, bodies[i % len(bodies)])
            lat.append((time.perf_counter() - t1) * 1000)
            version = answer["model_version"]
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        per = max(1, args.clients // 2)
        procs = [ctx.Process(target=_client, args=(port, bodies, args.seconds, per, queue)) for _ in range(2)]
        t2 = time.monotonic()
        for p in procs:
            p.start()
        results = [queue.get(timeout=args.seconds + 60) for _ in procs]
        elapsed = time.monotonic() - t2
        for p in procs:
            p.join()
        ok, failed = sum(r[0] for r in results), sum(r[1] for r in results)
        under_load = server_quantiles(port)
        fl = floor(world, rows, min(args.requests, 2000))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        sw.teardown(world)
        os.environ.clear()
        os.environ.update(saved)
    return {"store": store, "built_s": built, "latency": pct(lat), "version": version, "rps": ok / elapsed,
            "ok": ok, "failed": failed, "clients": per * 2, "server_under_load": under_load, **fl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "redis"], choices=["sqlite", "redis"])
    parser.add_argument("--requests", type=int, default=3000, help="sequential single-row requests (latency)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the throughput run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive connections (throughput)")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    import serving_world as sw

    out = []
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-serving-") as tmp:
        for store in args.stores:
            if store == "redis" and (why := sw.redis_unreachable()):
                print(f"redis: skipped ({why})")
                continue
            t0 = time.monotonic()
            r = bench_store(store, args, Path(tmp))
            r["total_s"] = time.monotonic() - t0
            out.append(r)
    print(f"\nonline predictions, one row per request, fraud model (v{out[0]['version'] if out else '?'}), "
          f"{os.cpu_count()} cores; times in ms")
    for r in out:
        p50, p95, p99 = r["latency"]
        f50, f95, f99 = r["floor"]
        print(f"\n[{r['store']}]  (world built in {r['built_s']:.0f}s, store measured in {r['total_s']:.0f}s)")
        print(f"  HTTP end to end, 1 client, {args.requests} requests: p50 {p50:.2f}  p95 {p95:.2f}  p99 {p99:.2f}")
        print(f"  floor in-process (online read + matrix + predict):  p50 {f50:.2f}  p95 {f95:.2f}  p99 {f99:.2f}")
        print(f"  ratio HTTP / floor:                                 p50 {p50 / f50:.1f}x  p95 {p95 / f95:.1f}x  "
              f"p99 {p99 / f99:.1f}x")
        q = r["server_under_load"]
        print(f"  throughput, {r['clients']} connections for {args.seconds:g}s: {r['rps']:.0f} requests/s "
              f"({r['ok']} answered, {r['failed']} failed); in the server under that load: p50 {q.get('0.5', 0):.2f}"
              f"  p99 {q.get('0.99', 0):.2f}")
        fr, sr = r["feast_read"], r["store_read"]
        print(f"  read path alone: Feast get_online_features p50 {fr[0]:.2f} p99 {fr[2]:.2f}; the store's "
              f"online_read (2 views) p50 {sr[0]:.2f} p99 {sr[2]:.2f}")
        print(f"  goal p99 <= 10 ms: {'met' if p99 <= 10 else 'NOT met'}; >= 500 requests/s: "
              f"{'met' if r['rps'] >= 500 else 'NOT met'}")


if __name__ == "__main__":
    main()
