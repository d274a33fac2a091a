"""The demo runs the integration and services tests look at, started as early as the session allows.

A short-scenario demo takes minutes of mostly waiting (the scheduler, the landing watcher, asset
events), so `tests/conftest.py` starts each one the collected tests need in the background as soon as
collection ends (`start_early`); the unit tests run meanwhile, and the fixture that needs a run waits for
it (`DemoRun.result`). Each run has its own FLYWHEEL_HOME and free ports, so they play side by side and
next to a running `make demo`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

from flywheel.runtime import processes_of

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

REPO = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("FLYWHEEL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("FLYWHEEL_TEST_REDIS", "127.0.0.1:6379")
# its password when it has one (the run gets it as FLYWHEEL_REDIS_PASSWORD: FLYWHEEL_* are not inherited)
REDIS_PASSWORD = os.environ.get("FLYWHEEL_TEST_REDIS_PASSWORD") or None
# a task killed with its worker is noticed in 30 s instead of Airflow's 300 s (the crash tests wait for it)
FAST_HEARTBEAT = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                  "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5"}


# what one runtime's environment says about its own stores: never inherited by another runtime (a demo's
# FLYWHEEL_MLFLOW_BACKEND_URI left in os.environ once sent a later test's MLflow server to the demo's database)
RUNTIME_PREFIXES = ("AIRFLOW", "MLFLOW_TRACKING", "MLFLOW_S3", "FLYWHEEL_", "AWS_")


def without_runtime_settings(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without any runtime's settings (Airflow's, MLflow's stores, Flywheel's, the S3 endpoint's)."""
    return {k: v for k, v in env.items() if not k.startswith(RUNTIME_PREFIXES)}


class DemoRun:
    """`flywheel demo --short` (every story, or `stories`) in its own FLYWHEEL_HOME on free ports."""

    def __init__(self, home: Path, extra_env: dict[str, str], stories: tuple[str, ...] = ()) -> None:
        from flywheel.runtime import Ports

        self.home, self.extra, self.ports = home, dict(extra_env), Ports.free()
        env = without_runtime_settings(os.environ)
        env.update({"FLYWHEEL_HOME": str(home), **self.ports.env(), **self.extra})
        self.env = env
        self.cmd = [sys.executable, "-m", "flywheel.cli", "demo", "--short", *(f"--story={x}" for x in stories)]
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = home.parent / f"{home.name}.demo.log"
        self._t0 = 0.0
        self._result: dict[str, Any] | None = None

    def start(self) -> DemoRun:
        if self.proc is None:
            self.home.mkdir(parents=True, exist_ok=True)
            self._t0 = time.monotonic()
            with self._out.open("wb") as out:
                self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        return self

    def result(self, timeout: float = 2700) -> dict[str, Any]:
        """Wait for the demo to finish; what the tests read: home, ports, summary, log, env, wall, runtime_env,
        layout (AWS_*/FLYWHEEL_* of the runtime are put in os.environ, the way the tasks saw them)."""
        if self._result is not None:
            return self._result
        from flywheel.runtime import environment
        from pipelines.layout import Layout

        self.start()
        assert self.proc is not None
        try:
            self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self._t0)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        log = self._out.read_text(errors="replace")
        assert self.proc.returncode == 0, f"demo failed:\n{log[-6000:]}"
        wall = time.monotonic() - self._t0
        summary = json.loads((self.home / "demo-summary.json").read_text())
        # every process's environment as the runtime completed it (S3 endpoint, data URI, ...)
        with mock.patch.dict(os.environ, self.env, clear=True):
            full = environment(Layout(self.home), self.ports)
        os.environ.update({k: v for k, v in full.items() if k.startswith(("AWS_", "FLYWHEEL_"))})
        from pipelines import storage

        storage.clear_cache()
        self._result = {"home": self.home, "ports": self.ports, "summary": summary, "log": log, "env": self.env,
                        "wall": wall, "runtime_env": full, "layout": Layout.from_env()}
        return self._result

    def stop(self) -> None:
        """`flywheel down`, and nothing of this home left running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        subprocess.run([sys.executable, "-m", "flywheel.cli", "down"], env=self.env, cwd=REPO, timeout=120)
        deadline = time.monotonic() + 30   # children that were SIGKILLed may take a moment to vanish
        while (left := processes_of(self.home)) and time.monotonic() < deadline:
            time.sleep(1)
        assert not left, f"processes left running after `flywheel down`: {left}"


@contextlib.contextmanager
def played(run: DemoRun) -> Iterator[dict[str, Any]]:
    """The finished run's facts for the duration of the block; the services stopped and os.environ restored after."""
    saved = dict(os.environ)
    try:
        yield run.result()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        run.stop()


# ---- the runs of a session, started early by tests/conftest.py, taken by the fixtures that need them

_RUNS: dict[str, DemoRun] = {}


def embedded_run(base: Path) -> DemoRun:
    """Both stories on the embedded default (SQLite, local files)."""
    if "embedded" not in _RUNS:
        _RUNS["embedded"] = DemoRun(base / "flywheel-home", {"FLYWHEEL_TOPOLOGY": "embedded", **FAST_HEARTBEAT})
    return _RUNS["embedded"]


def redis_client(db: int = 0, **options: Any) -> Any:
    """A client of the services runs' Redis (REDIS, with REDIS_PASSWORD when set), database `db`."""
    import redis

    host, port = REDIS.split(":")
    return redis.Redis(host=host, port=int(port), db=db, password=REDIS_PASSWORD, **options)


def services_unreachable() -> str | None:
    """Why the scale-out topology cannot run here (PostgreSQL or Redis on loopback not answering), else None."""
    import psycopg
    import redis

    try:
        psycopg.connect(POSTGRES + "/postgres", connect_timeout=3).close()
    except psycopg.OperationalError as e:
        return f"PostgreSQL at {POSTGRES} does not answer ({str(e).strip()[:200]})"
    try:
        redis_client(socket_connect_timeout=3).ping()
    except redis.RedisError as e:
        return f"Redis at {REDIS} does not answer ({e})"
    return None


def services_run(base: Path) -> DemoRun:
    """The cards story on the native scale-out topology: PostgreSQL databases with a per-session prefix, an empty
    Redis database of its own, S3 (moto) and Celery. `run.extra` carries the prefix and the Redis database."""
    if "services" in _RUNS:
        return _RUNS["services"]
    import secrets

    # a Redis database of its own (the demo's RESET flushes it): the first empty one from 15 down
    redis_db = next((str(n) for n in range(15, 7, -1) if redis_client(n).dbsize() == 0), None)
    assert redis_db, f"Redis at {REDIS} has no empty database among 8-15 for this test"
    extra = {"FLYWHEEL_TOPOLOGY": "services", "FLYWHEEL_POSTGRES": POSTGRES,
             "FLYWHEEL_DB_PREFIX": f"flywheel_test_{os.getpid()}", "FLYWHEEL_REDIS": REDIS,
             "FLYWHEEL_REDIS_DB": redis_db, "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(16), **FAST_HEARTBEAT}
    if REDIS_PASSWORD:
        extra["FLYWHEEL_REDIS_PASSWORD"] = REDIS_PASSWORD
    _RUNS["services"] = DemoRun(base / "flywheel-services", extra, stories=("cards",))  # ratings: embedded only
    return _RUNS["services"]


def start_early(base: Path, fixtures: set[str]) -> list[str]:
    """Start, in the background, the runs the collected tests' fixtures need; returns which."""
    started = []
    if "demo" in fixtures:
        embedded_run(base).start()
        started.append("embedded")
    if "cluster" in fixtures and services_unreachable() is None:
        services_run(base).start()
        started.append("services")
    return started
