"""What MLflow's logins cost: the same client workload against tracking servers on loopback without auth, with
the basic-auth app (a PBKDF2 check per request), and with basic-auth and its credential cache (Flywheel's setting,
flywheel/mlflow_auth.py).

    .venv/bin/python bench/mlflow_auth.py [--rounds 40] [--keep]

Each server is `mlflow server --workers 1` on SQLite in a temporary folder, started the way flywheel.runtime starts
it (`python -m flywheel.mlflow_auth server ...` for the two with logins). One round is what a training run and a
gate decision send: create a run, log 3 params and 3 metrics, end the run, register a version, set an alias, read
it back (10 requests). The servers are measured one after the other, in turns (A B C, A B C, ...) so that a busy
moment on the host does not fall on one of them only. Prints per-request times (median, p95), per-round totals,
and the ratio to the server without auth. Timed in the client: what a task waits.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OPS = ("create_run", "log_param", "log_metric", "end_run", "model_version", "set_alias", "get_alias")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(name: str, root: Path, auth: bool, cache_seconds: int) -> tuple[subprocess.Popen[bytes], str]:
    home = root / name
    (home / "secrets").mkdir(parents=True)
    os.chmod(home / "secrets", 0o700)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FLYWHEEL_"))}
    env |= {"FLYWHEEL_HOME": str(home), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true", "FLYWHEEL_MLFLOW_AUTH_DB_URI": f"sqlite:///{home / 'basic_auth.db'}",
            "MLFLOW_AUTH_CONFIG_PATH": str(home / "secrets" / "mlflow_auth.ini"),
            "FLYWHEEL_MLFLOW_AUTH_CACHE_SECONDS": str(cache_seconds),
            "FLYWHEEL_MLFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(24)}
    opts = ["--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
            "--default-artifact-root", (home / "artifacts").as_uri(), "--no-serve-artifacts", "--workers", "1"]
    bin_dir = Path(sys.executable).parent
    cmd = ([sys.executable, "-m", "flywheel.mlflow_auth", "server", *opts] if auth
           else [str(bin_dir / "mlflow"), "server", *opts])
    out = (home / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (home / "admin").write_text(env["FLYWHEEL_MLFLOW_ADMIN_PASSWORD"])
    return proc, f"http://127.0.0.1:{port}"


def _wait(base: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server at {base} exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(base + "/health", timeout=3):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no answer from {base}/health in {timeout:.0f}s")


def _round(c: MlflowClient, model: str, experiment_id: str, times: dict[str, list[float]]) -> None:
    def timed(op: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        times[op].append(time.perf_counter() - t)
        return out

    run = timed("create_run", c.create_run, experiment_id)
    rid = run.info.run_id
    for i in range(3):
        timed("log_param", c.log_param, rid, f"p{i}", i)
        timed("log_metric", c.log_metric, rid, f"m{i}", 0.1 * i)
    timed("end_run", c.set_terminated, rid)
    # no polling for READY (the client sleeps between polls): the request alone, as the other lines
    mv = timed("model_version", c.create_model_version, model, f"runs:/{rid}/model", run_id=rid,
               await_creation_for=0)
    timed("set_alias", c.set_registered_model_alias, model, "champion", mv.version)
    timed("get_alias", c.get_model_version_by_alias, model, "champion")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (servers' logs)")
    args = ap.parse_args()
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow import MlflowClient

    from flywheel import mlflow_auth

    root = Path(tempfile.mkdtemp(prefix="flywheel-bench-mlflow-auth-"))
    setups = {"no auth": (False, 0), "basic-auth, no cache": (True, 0),
              f"basic-auth, cache {mlflow_auth.CACHE_SECONDS} s": (True, mlflow_auth.CACHE_SECONDS)}
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for i, (name, (auth, cache)) in enumerate(setups.items()):
            procs[name] = _start(f"s{i}", root, auth, cache)
        t0 = time.monotonic()
        for proc, base in procs.values():
            _wait(base, proc)
        print(f"servers up in {time.monotonic() - t0:.0f}s; {args.rounds} rounds of 10 requests each", file=sys.stderr)
        clients, logins = {}, {}
        for i, (name, (_proc, base)) in enumerate(procs.items()):
            login = None
            if setups[name][0]:
                admin = mlflow_auth.Login("admin", (root / f"s{i}" / "admin").read_text())
                login = mlflow_auth.Login("flywheel", secrets.token_urlsafe(24))
                mlflow_auth.sync(base, admin, login)
            logins[name] = login
            os.environ.pop(mlflow_auth.USERNAME_VAR, None)
            os.environ.pop(mlflow_auth.PASSWORD_VAR, None)
            if login:
                os.environ.update(login.env())
            c = MlflowClient(tracking_uri=base)
            exp = c.create_experiment("bench")
            c.create_registered_model("bench-model")
            clients[name] = (c, exp)
            _round(c, "bench-model", exp, {op: [] for op in OPS})   # warm-up: connections, first-call paths
        times: dict[str, dict[str, list[float]]] = {name: {op: [] for op in OPS} for name in procs}
        totals: dict[str, list[float]] = {name: [] for name in procs}
        for _ in range(args.rounds):
            for name, (c, exp) in clients.items():
                os.environ.pop(mlflow_auth.USERNAME_VAR, None)
                os.environ.pop(mlflow_auth.PASSWORD_VAR, None)
                if (login := logins[name]) is not None:
                    os.environ.update(login.env())   # MLflow reads them on every request
                t = time.perf_counter()
                _round(c, "bench-model", exp, times[name])
                totals[name].append(time.perf_counter() - t)
    finally:
        for proc, _ in procs.values():
            try:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, 9)
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    def ms(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{statistics.median(xs) * 1000:6.1f} / {xs[int(0.95 * (len(xs) - 1))] * 1000:6.1f}"

    base_name = next(iter(procs))
    base_round = statistics.median(totals[base_name])
    print(f"{'request (ms: median / p95)':<28}" + "".join(f"{n:>26}" for n in procs))
    for op in OPS:
        print(f"{op:<28}" + "".join(f"{ms(times[n][op]):>26}" for n in procs))
    all_req = {n: [x for op in OPS for x in times[n][op]] for n in procs}
    print(f"{'every request':<28}" + "".join(f"{ms(all_req[n]):>26}" for n in procs))
    print(f"{'round of 10 (ms, median)':<28}" + "".join(f"{statistics.median(totals[n]) * 1000:>26.1f}"
                                                       for n in procs))
    print(f"{'ratio to no auth':<28}" + "".join(f"{statistics.median(totals[n]) / base_round:>26.2f}"
                                               for n in procs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
