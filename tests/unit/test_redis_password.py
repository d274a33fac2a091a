"""A Redis with a password: the native services topology's broker URL and Feast connection string authenticate
against a real `redis-server --requirepass` (Celery's client, redis-py, Feast's Redis online store), are refused
with a readable error without it, survive URL-special characters, and never show the password.
Compose's side (REDIS_PASSWORD from .env) is checked by tests/dags/test_compose.py; its health check runs here."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
import redis
import yaml

from flywheel.runtime import Ports, check_redis, environment
from pipelines.layout import Layout
from pipelines.spec import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.unit

PORTS = Ports(airflow=18181, mlflow=15151, smtp=18025, worker_logs=18793, trigger_logs=18794)
DB = 3
BROKER, FEAST = "AIRFLOW__CELERY__BROKER_URL", "FLYWHEEL_FEAST_REDIS"
SERVER = "<the test server's password>"   # Services' default
# URL-special characters, Feast's separators (`,` `=`), JSON's (`"` `\`), a `$VAR` Airflow would expand, and
# passwords Feast's parser would read as JSON (a number, null, a quoted string)
AWKWARD = ["p@ss:w/o#r%d", 'a,b=c"d\\e $HOME %41 ~x', "12345", "null", '"quoted"', " spaced "]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real redis-server on loopback that requires a random password (nothing saved); stopped afterwards."""
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        if os.environ.get("FLYWHEEL_REQUIRE_SERVICES") == "1":   # CI has them: a missing one is a failure
            pytest.fail("redis-server/redis-cli are not on PATH")
        pytest.skip("needs the redis-server and redis-cli binaries")
    port, password = _free_port(), secrets.token_urlsafe(24)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, f"redis-server exited with {proc.returncode}"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        admin = redis.Redis(host="127.0.0.1", port=port, password=password)
        yield {"port": port, "password": password, "admin": admin}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Services:
    """services(password): the services topology's environment against the test's Redis, as `flywheel up` computes
    it, with FLYWHEEL_REDIS_PASSWORD=password (None: unset); `lay` is its FLYWHEEL_HOME."""

    def __init__(self, lay: Layout, monkeypatch: pytest.MonkeyPatch, password: str) -> None:
        self.lay, self.monkeypatch, self.password = lay, monkeypatch, password

    def __call__(self, password: str | None = SERVER) -> dict[str, str]:
        password = self.password if password is SERVER else password
        if password is None:
            self.monkeypatch.delenv("FLYWHEEL_REDIS_PASSWORD", raising=False)
        else:
            self.monkeypatch.setenv("FLYWHEEL_REDIS_PASSWORD", password)
        return environment(self.lay, PORTS)


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: dict[str, Any]) -> Services:
    for var in (BROKER, FEAST, "FLYWHEEL_REDIS_PASSWORD", "FLYWHEEL_FEAST_ONLINE_STORE", "FLYWHEEL_FEAST_REGISTRY",
                "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FLYWHEEL_TOPOLOGY", "services")
    monkeypatch.setenv("FLYWHEEL_REDIS", f"127.0.0.1:{redis_server['port']}")
    monkeypatch.setenv("FLYWHEEL_REDIS_DB", str(DB))
    return Services(Layout(tmp_path / "home"), monkeypatch, redis_server["password"])


def celery_round_trip(broker_url: str) -> dict[str, Any]:
    """One message through Celery's broker client (kombu's Redis transport), as the executor and workers use it."""
    from celery import Celery

    app = Celery("flywheel-password-check", broker=broker_url)
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        queue = conn.SimpleQueue(f"flywheel-password-check-{secrets.token_hex(4)}")
        try:
            queue.put({"ping": 1})
            message = queue.get(timeout=5)
            message.ack()
            return message.payload
        finally:
            queue.clear()
            queue.close()


def feast_round_trip(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Write one entity's feature into Feast's Redis online store and read it back, with the store configured the way
    every Flywheel code path configures it (pipelines.features.repo_config from these variables)."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.types import Float64

    from pipelines import features

    with monkeypatch.context() as m:   # only for building the config: later environments are not affected
        for var in (FEAST, "FLYWHEEL_FEAST_ONLINE_STORE", "FLYWHEEL_FEAST_REGISTRY"):
            m.setenv(var, env[var])
        config = features.repo_config(REPO_ROOT / "feature_repo")
    assert isinstance(config.online_store, RedisOnlineStoreConfig)
    assert config.online_store.connection_string == env[FEAST]
    view = FeatureView(name="password_check", entities=[Entity(name="customer", join_keys=["customer_id"],
                                                                value_type=ValueType.INT64)],
                       schema=[Field(name="amount", dtype=Float64)],
                       source=FileSource(path="unused.parquet", timestamp_field="ts"))
    key = EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=7)])
    store = RedisOnlineStore()
    store.online_write_batch(config, view, [(key, {"amount": Value(double_val=1.5)}, datetime.now(UTC), None)], None)
    [(_, values)] = store.online_read(config, view, [key], ["amount"])
    return {name: value.double_val for name, value in (values or {}).items()}


# ---- (a), (b): the generated URL and connection string authenticate


def test_the_broker_url_authenticates_celery_and_redis_py(services, redis_server):
    env = services()
    assert env[BROKER].startswith("redis://:") and env[BROKER].endswith(f"@127.0.0.1:{redis_server['port']}/{DB}")
    assert redis.Redis.from_url(env[BROKER], socket_connect_timeout=5).ping() is True
    assert celery_round_trip(env[BROKER]) == {"ping": 1}
    check_redis(services.lay, env)   # what `flywheel init` checks first: no error


def test_feasts_online_store_writes_and_reads_with_the_connection_string(services, redis_server, monkeypatch):
    env = services()
    assert env[FEAST] == f"127.0.0.1:{redis_server['port']},db={DB},password={redis_server['password']}"
    assert feast_round_trip(env, monkeypatch) == {"amount": 1.5}
    redis_server["admin"].select(DB)   # the store wrote into the database the connection string names
    assert redis_server["admin"].dbsize() == 1


def test_without_a_password_the_environment_is_as_before_and_nothing_is_generated(services, redis_server):
    env = services(None)
    assert env[BROKER] == f"redis://127.0.0.1:{redis_server['port']}/{DB}"
    assert env[FEAST] == f"127.0.0.1:{redis_server['port']},db={DB}"
    assert not (services.lay.secrets() / "redis_password").exists()


def test_the_password_can_come_from_the_secrets_folder(services, redis_server, monkeypatch):
    path = services.lay.secrets() / "redis_password"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redis_server["password"] + "\n")   # as `echo ... > file` leaves it
    env = services(None)
    assert redis.Redis.from_url(env[BROKER]).ping() is True
    assert feast_round_trip(env, monkeypatch) == {"amount": 1.5}
    monkeypatch.setenv("FLYWHEEL_REDIS_PASSWORD", "from-the-environment")   # the environment wins over the file
    assert "from-the-environment" in environment(services.lay, PORTS)[FEAST]


# ---- (c): refused, with an error a user can act on


def test_without_the_password_both_clients_are_refused_with_a_readable_error(services, monkeypatch):
    env = services(None)
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):
        redis.Redis.from_url(env[BROKER]).ping()
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):
        feast_round_trip(env, monkeypatch)
    with pytest.raises(RuntimeError) as refused:
        check_redis(services.lay, env)
    message = str(refused.value)
    assert "requires a password" in message and "FLYWHEEL_REDIS_PASSWORD" in message
    assert str(services.lay.secrets() / "redis_password") in message


def test_a_wrong_password_is_refused_with_a_readable_error(services, monkeypatch):
    env = services("not-the-password")
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        redis.Redis.from_url(env[BROKER]).ping()
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        feast_round_trip(env, monkeypatch)
    with pytest.raises(RuntimeError, match="refused the password from FLYWHEEL_REDIS_PASSWORD"):
        check_redis(services.lay, env)


def test_a_redis_that_does_not_answer_says_so(services, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_REDIS", f"127.0.0.1:{_free_port()}")
    env = services()
    with pytest.raises(RuntimeError, match="does not answer .* point FLYWHEEL_REDIS at one"):
        check_redis(services.lay, env)


# ---- (d): passwords with URL-special characters


@pytest.mark.parametrize("password", AWKWARD)
def test_a_password_with_special_characters_still_works(services, redis_server, monkeypatch, password):
    redis_server["admin"].config_set("requirepass", password)
    env = services(password)
    assert redis.Redis.from_url(env[BROKER]).ping() is True
    assert celery_round_trip(env[BROKER]) == {"ping": 1}
    assert feast_round_trip(env, monkeypatch) == {"amount": 1.5}
    check_redis(services.lay, env)
    if "$" in password:   # Airflow expands $VARs and ~ in every AIRFLOW__* value it reads: the URL comes through as is
        from airflow.configuration import expand_env_var

        assert expand_env_var(env[BROKER]) == env[BROKER]


# ---- (e): the password is never shown


def test_the_password_never_appears_in_logs_output_errors_or_files(services, redis_server, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    password = 'p@ss:w/o#r%d,"x"'
    redis_server["admin"].config_set("requirepass", password)
    env = services(password)
    check_redis(services.lay, env)
    errors = []
    for wrong in ("wrong-" + password, None):
        with pytest.raises(RuntimeError) as refused:
            check_redis(services.lay, services(wrong))
        errors.append(str(refused.value))
    assert any("answers (password: FLYWHEEL_REDIS_PASSWORD)" in r.getMessage() for r in caplog.records)
    out, err = capsys.readouterr()
    shown = "\n".join([caplog.text, out, err, *errors])
    written = "\n".join(p.read_text(errors="replace") for p in services.lay.home.rglob("*") if p.is_file())
    # as given, percent-encoded (broker URL) and as a JSON string (Feast's connection string)
    for form in (password, env[BROKER].split("@")[0].removeprefix("redis://:"), env[FEAST].split("password=")[1]):
        assert form not in shown
        assert form not in written


# ---- compose's redis health check, run against a real server


@pytest.mark.parametrize(("given", "healthy"), [("right", True), ("wrong", False), ("none", False)])
def test_the_compose_health_check_authenticates(redis_server, tmp_path, given, healthy):
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    kind, command = compose["services"]["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    shim = tmp_path / "bin" / "redis-cli"   # the container's redis-cli talks to its own server on 6379
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {shutil.which("redis-cli")} -p {redis_server["port"]} "$@"\n')
    shim.chmod(0o755)
    password = {"right": redis_server["password"], "wrong": "wrong", "none": ""}[given]
    run = subprocess.run(["sh", "-c", command.replace("$$", "$")], capture_output=True, text=True, timeout=20,
                         env={"PATH": f"{shim.parent}:/usr/bin:/bin", "REDIS_PASSWORD": password})
    assert (run.returncode == 0) is healthy, run
    assert redis_server["password"] not in run.stdout + run.stderr
