"""Test-wide environment: a private Airflow/Flywheel home, no telemetry, never the demo's state; and a
loopback S3-API server (moto) for the tests that need object storage."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="flywheel-tests-"))
os.environ.setdefault("AIRFLOW_HOME", str(_TMP / "airflow"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parent.parent / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_TMP / 'airflow.db'}"
os.environ["FLYWHEEL_HOME"] = str(_TMP / "flywheel")
for k, v in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false",
             "FEAST_USAGE": "False", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
    os.environ[k] = v


# ---- a real S3-API server on loopback (moto's standalone server), shared by the S3 tests

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto_server for the session: its http://127.0.0.1:<port> endpoint (stopped at the end)."""
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, f"moto_server exited with {proc.returncode}"
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_server(moto_endpoint, monkeypatch):
    """The loopback S3 endpoint, with the standard AWS_* variables (and MLflow's) pointing at it."""
    from pipelines import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "flywheel")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret-test-only")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage.clear_cache()
    yield moto_endpoint
    storage.clear_cache()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the loopback server (name from the test), and a boto3 client to look inside."""
    import re

    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + f"-{os.getpid()}"
    client.create_bucket(Bucket=name)
    return name, client


# ---- `make test` runs two sessions side by side (FLYWHEEL_TEST_SHARD): the tail of one suite waits on schedulers

SHARD_ENV = "FLYWHEEL_TEST_SHARD"


def shard_of(item) -> str:
    """`demo`: the unit and DAG tests and every test of the embedded demo run (they run in name order, readers before
    the tests that change what the demo left); `rest`: the other integration and services tests (their own stacks,
    the scale-out demo run). Every collected test is in exactly one."""
    top = item.path.relative_to(Path(__file__).resolve().parent).parts[0]
    return "demo" if top in ("unit", "dags") or "demo" in getattr(item, "fixturenames", ()) else "rest"


def pytest_configure(config):
    """In a shard, SIGTERM stops the session as Ctrl-C does (its demo runs are stopped by their fixtures): `make test`
    sends it to the background session when the foreground one is interrupted (a background job ignores SIGINT)."""
    if os.environ.get(SHARD_ENV):
        import signal

        def interrupted(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, interrupted)


def pytest_collection_modifyitems(session, config, items):
    """With FLYWHEEL_TEST_SHARD=demo|rest, keep that shard's tests (the others are deselected and counted as such);
    in `rest`, the tests that need no scale-out run go first, while that run plays."""
    shard = os.environ.get(SHARD_ENV)
    if not shard:
        return
    if shard not in ("demo", "rest"):
        raise pytest.UsageError(f"{SHARD_ENV}={shard!r}: use demo or rest (or leave it unset for every test)")
    keep, other = [], []
    for i in items:
        (keep if shard_of(i) == shard else other).append(i)
    config.hook.pytest_deselected(items=other)
    if shard == "rest":
        keep.sort(key=lambda i: "cluster" in getattr(i, "fixturenames", ()))   # stable: file order otherwise
    items[:] = keep


# ---- the demo runs the integration and services tests look at: started as soon as collection ends

def pytest_collection_finish(session):
    """Start the demo runs the collected tests need in the background (tests/demo_runs.py): they play while the
    unit tests run. A run that cannot start here is retried, and reported, by the fixture that needs it."""
    if session.config.option.collectonly or not session.items:
        return
    fixtures = {f for item in session.items for f in getattr(item, "fixturenames", ())}
    try:
        from demo_runs import start_early

        start_early(session.config._tmp_path_factory.getbasetemp(), fixtures)
    except Exception as e:  # noqa: BLE001 - the fixture raises it again where a test can report it
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(f"demo runs not started early: {e}")
