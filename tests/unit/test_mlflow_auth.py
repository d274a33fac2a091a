"""MLflow's logins (flywheel/mlflow_auth.py) against a REAL tracking server on a free loopback port, started the way
flywheel.runtime starts it (`python -m flywheel.mlflow_auth server ...`, the basic-auth app on SQLite): nobody gets
in without credentials, the service account does what the loop does and nothing an admin does, a person is
read-only, passwords stay off command lines and out of the config file."""

from __future__ import annotations

import os
import secrets
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flywheel import mlflow_auth as ma
from flywheel.runtime import REPO_ROOT

pytestmark = pytest.mark.unit

ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One basic-auth tracking server for the module: base URL, admin login, home, pid."""
    home = tmp_path_factory.mktemp("mlflow-auth")
    admin = ma.Login(ma.ADMIN_USERNAME, secrets.token_urlsafe(24))
    ma.write_private(home / "secrets" / ma.ADMIN_SECRET, admin.password)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "FLYWHEEL_MLFLOW"))}
    env |= {"FLYWHEEL_HOME": str(home), ma.AUTH_DB_ENV: f"sqlite:///{home / 'basic_auth.db'}",
            "MLFLOW_AUTH_CONFIG_PATH": str(home / "secrets" / "mlflow_auth.ini"),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "flywheel.mlflow_auth", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--default-artifact-root",
           (home / "artifacts").as_uri(), "--no-serve-artifacts", "--workers", "1"]
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow server did not answer /health"
            try:
                with urllib.request.urlopen(base + "/health", timeout=3):
                    break
            except OSError:
                time.sleep(0.5)
        yield {"base": base, "admin": admin, "home": home, "pid": proc.pid}
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def as_login(monkeypatch):
    """Point MLflow's client (tracking URI and credentials, read on every request) at a login."""
    import mlflow

    def use(base: str, login: ma.Login) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
        for k, v in login.env().items():
            monkeypatch.setenv(k, v)
        mlflow.set_tracking_uri(base)

    yield use
    mlflow.set_tracking_uri(None)


def test_the_server_refuses_a_request_without_credentials_or_with_wrong_ones(server):
    base = server["base"]
    assert ma.request(base, None, "GET", "/health")[0] == 200   # the health check stays open (up() waits on it)
    for login in (None, ma.Login("admin", "not-the-password"), ma.Login("nobody", "whatever-password")):
        status, _ = ma.request(base, login, "GET", "/api/2.0/mlflow/experiments/search", params={"max_results": "1"})
        assert status == 401, login
        assert ma.request(base, login, "POST", ALIAS_PATH,
                          {"name": "m", "alias": "champion", "version": "1"})[0] == 401


def test_no_password_on_the_command_line_nor_in_the_config_file(server):
    cmdline = Path(f"/proc/{server['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "--app-name basic-auth" in cmdline   # the wrapper became `mlflow server` (same pid)
    assert server["admin"].password not in cmdline
    config = server["home"] / "secrets" / "mlflow_auth.ini"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    text = config.read_text()
    assert "default_permission = READ" in text and "auth_cache_ttl_seconds = 60" in text
    assert server["admin"].password not in text and "password" not in text
    assert server["admin"].password not in (server["home"] / "server.log").read_text()


def test_the_service_account_runs_the_loop_and_owns_what_it_creates(server, as_login):
    import mlflow
    from mlflow import MlflowClient

    base, admin = server["base"], server["admin"]
    svc = ma.Login(ma.SERVICE_USERNAME, secrets.token_urlsafe(24))
    assert ma.sync(base, admin, svc).endswith(": created")
    assert ma.sync(base, admin, svc).endswith(": unchanged")
    as_login(base, svc)
    mlflow.set_experiment("flywheel/loop")
    with mlflow.start_run() as run:
        mlflow.log_params({"max_depth": 3})
        mlflow.log_metric("pr_auc", 0.42)
    client = MlflowClient()
    client.create_registered_model("flywheel-loop")
    versions = [client.create_model_version("flywheel-loop", f"runs:/{run.info.run_id}/model",
                                            run_id=run.info.run_id).version for _ in range(2)]
    client.set_model_version_tag("flywheel-loop", versions[1], "flywheel.gate.decision", "promoted")
    client.set_registered_model_alias("flywheel-loop", "champion", versions[1])   # the gate promotes
    client.set_registered_model_alias("flywheel-loop", "champion", versions[0])   # a rollback
    assert client.get_model_version_by_alias("flywheel-loop", "champion").version == versions[0]
    # ... and nothing an admin does: no user management
    assert ma.request(base, svc, "GET", "/api/2.0/mlflow/users/get", params={"username": "admin"})[0] == 403
    assert ma.request(base, svc, "POST", "/api/2.0/mlflow/users/create",
                      {"username": "mallory", "password": secrets.token_urlsafe(16)})[0] == 403
    assert ma.request(base, svc, "PATCH", "/api/2.0/mlflow/users/update-admin",
                      {"username": svc.username, "is_admin": True})[0] == 403


def test_a_person_is_read_only_by_default(server):
    base, admin = server["base"], server["admin"]
    owner = ma.Login("owner", secrets.token_urlsafe(16))
    ma.sync(base, admin, owner)
    created = ma.request(base, owner, "POST", "/api/2.0/mlflow/registered-models/create", {"name": "flywheel-ro"})
    assert created[0] == 200
    reader = ma.Login("reader", secrets.token_urlsafe(16))
    assert ma.request(base, admin, "POST", "/api/2.0/mlflow/users/create",
                      {"username": reader.username, "password": reader.password})[0] == 200
    assert ma.request(base, reader, "GET", "/api/2.0/mlflow/registered-models/get",
                      params={"name": "flywheel-ro"})[0] == 200
    for method, path, body in (("POST", ALIAS_PATH, {"name": "flywheel-ro", "alias": "champion", "version": "1"}),
                               ("POST", "/api/2.0/mlflow/registered-models/set-tag",
                                {"name": "flywheel-ro", "key": "k", "value": "v"}),
                               ("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": "flywheel-ro"})):
        assert ma.request(base, reader, method, path, body)[0] == 403, path


def test_sync_resets_a_changed_password_and_an_admin_flag(server):
    base, admin = server["base"], server["admin"]
    old = ma.Login("rotating", secrets.token_urlsafe(16))
    ma.sync(base, admin, old)
    assert ma.request(base, admin, "PATCH", "/api/2.0/mlflow/users/update-admin",
                      {"username": old.username, "is_admin": True})[0] == 200
    new = ma.Login(old.username, secrets.token_urlsafe(16))
    assert ma.sync(base, admin, new).endswith(": password updated, admin flag removed")
    assert ma.request(base, new, "GET", "/api/2.0/mlflow/users/current")[0] == 200
    assert ma.request(base, old, "GET", "/api/2.0/mlflow/users/current")[0] == 401   # cached or not: refused
    _, user = ma.request(base, admin, "GET", "/api/2.0/mlflow/users/get", params={"username": old.username})
    assert user["user"]["is_admin"] is False


def test_sync_adopts_what_was_made_before_the_logins(server):
    """An install from before MLflow had logins: its experiments and models belong to nobody, so the service account
    (READ by default) could not write to them; sync gives it MANAGE on the declared ones, once."""
    base, admin = server["base"], server["admin"]
    status, made = ma.request(base, admin, "POST", "/api/2.0/mlflow/experiments/create", {"name": "flywheel/old"})
    assert status == 200
    created = ma.request(base, admin, "POST", "/api/2.0/mlflow/registered-models/create", {"name": "flywheel-old"})
    assert created[0] == 200
    svc = ma.Login("adopter", secrets.token_urlsafe(16))
    ma.sync(base, admin, svc)
    alias_tag = {"name": "flywheel-old", "key": "k", "value": "v"}
    assert ma.request(base, svc, "POST", "/api/2.0/mlflow/registered-models/set-tag", alias_tag)[0] == 403
    line = ma.sync(base, admin, svc, ["flywheel/old", "flywheel/absent"], ["flywheel-old", "flywheel-absent"])
    assert line.endswith("MANAGE granted on experiment flywheel/old, registered_model flywheel-old"), line
    assert ma.request(base, svc, "POST", "/api/2.0/mlflow/registered-models/set-tag", alias_tag)[0] == 200
    assert ma.request(base, svc, "POST", "/api/2.0/mlflow/runs/create",
                      {"experiment_id": made["experiment_id"]})[0] == 200
    assert ma.sync(base, admin, svc, ["flywheel/old"], ["flywheel-old"]).endswith(": unchanged")


def test_a_wrong_admin_password_says_what_is_wrong(server):
    with pytest.raises(ma.MlflowAuthError, match="does not match") as err:
        ma.sync(server["base"], ma.Login("admin", "a-wrong-admin-password"), ma.Login("x", secrets.token_urlsafe(16)))
    assert err.value.code == 401 and "a-wrong-admin-password" not in str(err.value)


def test_the_server_does_not_start_without_an_admin_password(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path), ma.AUTH_DB_ENV: f"sqlite:///{tmp_path / 'u.db'}",
           "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "secrets" / "mlflow_auth.ini")}
    with pytest.raises(SystemExit, match=ma.ADMIN_ENV):
        ma.serve(["--port", "1"], env)
    with pytest.raises(SystemExit, match=ma.AUTH_DB_ENV):
        ma.serve(["--port", "1"], {"FLYWHEEL_HOME": str(tmp_path)})
    with pytest.raises(SystemExit, match="placeholder"):   # compose starts mlflow before airflow-init checks .env
        ma.serve(["--port", "1"], {**env, ma.ADMIN_ENV: "change-me-mlflow-admin-password"})
    assert "***" in repr(ma.Login("a", "secret-value")) and "secret-value" not in repr(ma.Login("a", "secret-value"))


def test_every_process_logs_in_as_the_service_account_and_only_the_server_gets_the_admin(tmp_path, monkeypatch):
    from flywheel import runtime
    from pipelines.layout import Layout

    for var in (ma.ADMIN_ENV, ma.SERVICE_ENV, ma.USERNAME_VAR, ma.PASSWORD_VAR, "MLFLOW_AUTH_ADMIN_PASSWORD",
                "FLYWHEEL_TOPOLOGY"):
        monkeypatch.delenv(var, raising=False)
    lay, ports = Layout(tmp_path / "home"), runtime.Ports.free()
    env = runtime.environment(lay, ports)
    service = lay.secrets() / ma.SERVICE_SECRET
    assert env[ma.USERNAME_VAR] == ma.SERVICE_USERNAME and env[ma.PASSWORD_VAR] == service.read_text().strip()
    assert stat.S_IMODE(service.stat().st_mode) == 0o600
    admin = runtime.mlflow_admin_password(lay)
    assert len(admin) >= 24 and admin not in env.values()
    cmd = runtime._commands(env, lay, ports)["mlflow"]
    assert cmd[1:4] == ["-m", "flywheel.mlflow_auth", "server"] and admin not in " ".join(cmd)
    server_env = ma.server_environment(env, admin, Path(env["MLFLOW_AUTH_CONFIG_PATH"]))
    assert server_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == admin and ma.PASSWORD_VAR not in server_env
    monkeypatch.setenv(ma.SERVICE_ENV, "from-the-deployment-0123")
    assert runtime.environment(lay, ports)[ma.PASSWORD_VAR] == "from-the-deployment-0123"
    assert runtime.databases({"FLYWHEEL_DB_PREFIX": "fw"}) == ["fw_airflow", "fw_mlflow", "fw_mlflow_auth", "fw_feast"]


def test_an_alias_of_a_model_that_does_not_exist_is_none_and_a_refusal_stays_one(server, as_login):
    """MLflow's basic-auth app answers an alias lookup on a missing model with 403, not 404: the loop's helper
    (`pipelines.model.version_by_alias`, behind `champion()`, the gate, scoring, serving) still reads it as "no
    champion yet", and a real refusal (an explicit DENY) is still an error, never "no champion"."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines.model import version_by_alias

    base, admin = server["base"], server["admin"]
    svc = ma.Login("alias-reader", secrets.token_urlsafe(16))
    ma.sync(base, admin, svc)
    as_login(base, svc)
    client = MlflowClient()
    assert version_by_alias(client, "flywheel-never-trained", "champion") is None
    client.create_registered_model("flywheel-aliased")
    assert version_by_alias(client, "flywheel-aliased", "champion") is None
    run = client.create_run(client.create_experiment("flywheel/aliased"))
    mv = client.create_model_version("flywheel-aliased", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("flywheel-aliased", "champion", mv.version)
    assert version_by_alias(client, "flywheel-aliased", "champion").version == mv.version
    denied = ma.Login("denied", secrets.token_urlsafe(16))
    ma.sync(base, admin, denied)
    assert ma.request(base, admin, "POST", "/api/3.0/mlflow/users/permissions/grant",
                      {"username": denied.username, "resource_type": "registered_model",
                       "resource_id": "flywheel-aliased", "permission": "DENY"})[0] == 200
    as_login(base, denied)
    with pytest.raises(MlflowException, match="403"):
        version_by_alias(MlflowClient(), "flywheel-aliased", "champion")
