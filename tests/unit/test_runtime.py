"""The embedded runtime's environment: secrets generated once per home, env wins, nothing secret committed."""

from __future__ import annotations

import json
import socket
import stat
import subprocess

import pytest

from flywheel.runtime import Ports, admin_password, environment
from pipelines.layout import Layout
from pipelines.spec import REPO_ROOT

pytestmark = pytest.mark.unit

SECRET_FILES = {
    "fernet_key": "AIRFLOW__CORE__FERNET_KEY",
    "jwt_secret": "AIRFLOW__API_AUTH__JWT_SECRET",
    "api_secret_key": "AIRFLOW__API__SECRET_KEY",
    "mlflow_service_password": "MLFLOW_TRACKING_PASSWORD",   # MLflow's service account (flywheel/mlflow_auth.py)
}
PORTS = Ports(airflow=18181, mlflow=15151, smtp=18025, worker_logs=18793, trigger_logs=18794)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The variables under test come from this test alone, not from the shell that runs pytest."""
    for var in [*SECRET_FILES.values(), "FLYWHEEL_ADMIN_PASSWORD", "AIRFLOW_CONN_FLYWHEEL_SMTP",
                "FLYWHEEL_MLFLOW_SERVICE_PASSWORD"]:
        monkeypatch.delenv(var, raising=False)


def secrets_of(lay: Layout) -> dict[str, str]:
    env = environment(lay, PORTS)
    out = {f: env[v] for f, v in SECRET_FILES.items()}
    out["admin_password"] = admin_password(lay)
    return out


def test_secrets_are_generated_once_with_private_permissions(tmp_path):
    lay = Layout(tmp_path / "home")
    first = secrets_of(lay)
    sdir = lay.secrets()
    assert sorted(p.name for p in sdir.iterdir()) == sorted([*SECRET_FILES, "admin_password"])
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
    for name, value in first.items():
        path = sdir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert path.read_text().strip() == value
        assert len(value) >= 16, name
    assert len(set(first.values())) == len(first)  # four independent values
    from cryptography.fernet import Fernet

    token = Fernet(first["fernet_key"].encode()).encrypt(b"conn password")  # a usable Fernet key
    assert Fernet(first["fernet_key"].encode()).decrypt(token) == b"conn password"
    mtimes = {p.name: p.stat().st_mtime_ns for p in sdir.iterdir()}
    # a second start reuses them: Airflow can still decrypt its connections, sessions stay valid
    assert secrets_of(lay) == first
    assert {p.name: p.stat().st_mtime_ns for p in sdir.iterdir()} == mtimes


def test_two_homes_get_different_secrets(tmp_path):
    a, b = secrets_of(Layout(tmp_path / "a")), secrets_of(Layout(tmp_path / "b"))
    for name in a:
        assert a[name] != b[name], name


def test_values_already_in_the_environment_win(tmp_path, monkeypatch):
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", key)
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "jwt-from-the-vault")
    monkeypatch.setenv("FLYWHEEL_ADMIN_PASSWORD", "pw-from-the-vault")
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "2")
    lay = Layout(tmp_path / "home")
    env = environment(lay, PORTS)
    assert env["AIRFLOW__CORE__FERNET_KEY"] == key
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "jwt-from-the-vault"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert admin_password(lay) == "pw-from-the-vault"
    assert not (lay.secrets() / "admin_password").exists()


def test_secrets_supplied_by_the_environment_are_not_also_generated_on_disk(tmp_path, monkeypatch):
    """_secret's contract: "from the environment if set, else generated once into secrets/". An operator who
    injects the Fernet key and JWT secret (scale-out, a vault) should not find a second, unused key written
    next to the state folder."""
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "injected-fernet")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "injected-jwt")
    lay = Layout(tmp_path / "home")
    environment(lay, PORTS)
    assert not (lay.secrets() / "fernet_key").exists()
    assert not (lay.secrets() / "jwt_secret").exists()


def test_environment_points_every_service_at_the_configured_ports_and_home(tmp_path, monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "FLYWHEEL_SMTP_PORT", "AIRFLOW__API__PORT"):
        monkeypatch.delenv(var, raising=False)
    lay = Layout(tmp_path / "home")
    env = environment(lay, PORTS)
    assert env["AIRFLOW__API__PORT"] == "18181"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18181/execution/"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15151"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"
    assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "18794"
    assert env["FLYWHEEL_SMTP_PORT"] == "18025"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(lay.secrets() / "airflow_passwords.json")
    assert env["FLYWHEEL_MLFLOW_BACKEND_URI"].startswith(f"sqlite:///{tmp_path / 'home'}")


def test_smtp_connection_uses_the_configured_port_without_ssl_or_tls(tmp_path):
    env = environment(Layout(tmp_path / "home"), PORTS)
    conn = json.loads(env["AIRFLOW_CONN_FLYWHEEL_SMTP"])
    assert conn["conn_type"] == "smtp"
    assert (conn["host"], conn["port"]) == ("127.0.0.1", 18025)
    assert conn["extra"]["disable_ssl"] is True and conn["extra"]["disable_tls"] is True
    assert conn["extra"]["from_email"]


def test_free_ports_are_five_distinct_bindable_ports():
    ports = Ports.free()
    values = [ports.airflow, ports.mlflow, ports.smtp, ports.worker_logs, ports.trigger_logs]
    assert len(set(values)) == 5
    socks = []
    try:
        for p in values:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
            socks.append(s)
    finally:
        for s in socks:
            s.close()


def test_ports_from_env(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_AIRFLOW_PORT", "18080")
    monkeypatch.setenv("FLYWHEEL_SMTP_PORT", "12525")
    monkeypatch.delenv("FLYWHEEL_MLFLOW_PORT", raising=False)
    p = Ports.from_env()
    assert (p.airflow, p.smtp, p.mlflow) == (18080, 12525, 5000)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f]


def test_no_generated_secret_appears_in_a_tracked_file(tmp_path):
    generated = secrets_of(Layout(tmp_path / "home"))
    files = tracked_files()
    assert len(files) > 50
    assert not [f for f in files if "/secrets/" in f or f.startswith(("secrets/", ".flywheel/")) or f == ".env"]
    for f in files:
        path = REPO_ROOT / f
        if not path.is_file():
            continue
        content = path.read_bytes()
        for name, value in generated.items():
            assert value.encode() not in content, f"{name} found in tracked file {f}"


def test_the_default_secrets_folder_is_ignored_by_git():
    """`flywheel init` without FLYWHEEL_HOME writes secrets under <repo>/.flywheel/secrets; git must ignore them."""
    # redis_password: put there by the user when the local Redis has one (never generated)
    for name in [*SECRET_FILES, "admin_password", "airflow_passwords.json", "redis_password"]:
        rel = f".flywheel/secrets/{name}"
        r = subprocess.run(["git", "check-ignore", "-q", rel], cwd=REPO_ROOT)
        assert r.returncode == 0, f"{rel} is not ignored by git"
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT).returncode == 0


# ---- the native scale-out topology: same code, other environment variables


@pytest.fixture
def services_env(monkeypatch, tmp_path):
    for var in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "FLYWHEEL_DATA_URI",
                "FLYWHEEL_FEAST_REGISTRY", "FLYWHEEL_MLFLOW_BACKEND_URI", "AWS_SECRET_ACCESS_KEY",
                "AWS_ENDPOINT_URL", "FLYWHEEL_REDIS", "FLYWHEEL_REDIS_DB", "FLYWHEEL_REDIS_PASSWORD",
                "AIRFLOW__CELERY__BROKER_URL", "FLYWHEEL_FEAST_REDIS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FLYWHEEL_TOPOLOGY", "services")
    monkeypatch.setenv("FLYWHEEL_DB_PREFIX", "team_a")
    monkeypatch.setenv("FLYWHEEL_REDIS_DB", "4")
    return environment(Layout(tmp_path / "home"), PORTS)


def test_services_topology_moves_every_store_off_local_files(services_env):
    env = services_env
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@127.0.0.1:5432/team_a_airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/4"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["FLYWHEEL_MLFLOW_BACKEND_URI"].endswith("/team_a_mlflow")
    assert env["FLYWHEEL_MLFLOW_ARTIFACT_ROOT"] == "s3://team-a-mlflow/"   # bucket names take no underscore
    assert env["FLYWHEEL_DATA_URI"] == "s3://team-a-data/"
    assert env["FLYWHEEL_FEAST_REGISTRY"].endswith("/team_a_feast")
    assert (env["FLYWHEEL_FEAST_ONLINE_STORE"], env["FLYWHEEL_FEAST_REDIS"]) == ("redis", "127.0.0.1:6379,db=4")
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{PORTS.s3}"


def test_services_topology_generates_the_s3_secret_per_install(services_env, tmp_path):
    path = tmp_path / "home" / "secrets" / "s3_secret_key"
    assert services_env["AWS_SECRET_ACCESS_KEY"] == path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(services_env["AWS_SECRET_ACCESS_KEY"]) >= 24


def test_a_value_set_in_the_environment_wins_over_the_topology(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_TOPOLOGY", "services")
    monkeypatch.setenv("FLYWHEEL_DATA_URI", "s3://elsewhere/flywheel")
    assert environment(Layout(tmp_path), PORTS)["FLYWHEEL_DATA_URI"] == "s3://elsewhere/flywheel"


def test_an_unknown_topology_is_refused_with_the_choices(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_TOPOLOGY", "kubernetes")
    with pytest.raises(ValueError, match="embedded, services"):
        environment(Layout(tmp_path), PORTS)


@pytest.mark.parametrize(("argv", "executor", "preloads"), [
    (["airflow", "scheduler"], "LocalExecutor", True),        # embedded: tasks fork from the scheduler
    (["airflow", "scheduler"], "CeleryExecutor", False),      # scale-out: the scheduler runs no task
    (["airflow", "celery", "worker"], "CeleryExecutor", True),  # scale-out: tasks fork from the worker
    (["airflow", "api-server"], "LocalExecutor", False),
    (["airflow", "dag-processor"], "CeleryExecutor", False),
])
def test_heavy_libraries_are_preloaded_where_tasks_are_forked(monkeypatch, capsys, argv, executor, preloads):
    from flywheel.runtime import LOCAL_SETTINGS

    monkeypatch.setattr("sys.argv", argv)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    monkeypatch.delenv("FLYWHEEL_PRELOAD", raising=False)
    exec(LOCAL_SETTINGS.format(modules=("json",)), {})
    assert ("flywheel: preloaded 1 modules" in capsys.readouterr().err) is preloads


def test_a_crashed_service_leaves_no_orphan_behind_up_and_down_reap_them(tmp_path):
    """A SIGKILLed leader (the scheduler) leaves its children (LocalExecutor workers that ignore SIGTERM)
    re-parented to init in its process group: `leftovers` finds them, `reap` stops them and forgets the
    dead service, so `up` can start it again on its ports and `down` leaves nothing."""
    import os
    import signal
    import sys
    import time

    from flywheel import runtime

    lay = Layout(tmp_path / "home")
    lay.run().mkdir(parents=True)
    lay.logs().mkdir(parents=True)
    child = ("import signal, socket, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); time.sleep(600)")
    leader = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(600)"
    env = {**os.environ, "FLYWHEEL_HOME": str(lay.home)}
    pid = runtime.start(lay, "scheduler", [sys.executable, "-c", leader], env)
    deadline = time.monotonic() + 20
    # the child exists (processes_of) before its interpreter reaches listen(): wait for the socket itself
    while not runtime.listening_sockets(lay.home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(runtime.processes_of(lay.home)) == 2
    assert runtime.running(lay) == {"scheduler": pid}
    assert runtime.leftovers(lay) == {}                      # a live service owns its children
    os.kill(pid, signal.SIGKILL)                             # the crash
    deadline = time.monotonic() + 10
    while runtime.running(lay) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runtime.running(lay) == {}
    orphans = runtime.leftovers(lay)
    assert len(orphans) == 1 and "SIG_IGN" in next(iter(orphans.values()))
    assert [a for a, _, _ in runtime.listening_sockets(lay.home)] == ["127.0.0.1"]   # still holding its port
    assert runtime.reap(lay, timeout=2) == orphans           # SIGTERM ignored: SIGKILL after the timeout
    deadline = time.monotonic() + 10
    while runtime.processes_of(lay.home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runtime.processes_of(lay.home) == []
    assert not (lay.run() / "scheduler.pid").exists()        # `up` will start it again
    assert runtime.down(lay) == []


def test_embedded_services_start_no_log_server_on_every_interface(tmp_path):
    """Airflow's serve-logs binds every interface (uvicorn host ""): the embedded topology does not start it
    (the API server reads task logs from the local disk); every service binds 127.0.0.1 explicitly."""
    from flywheel import runtime

    lay = Layout(tmp_path / "home")
    cmds = runtime._commands(environment(lay, PORTS), lay, PORTS)
    assert "--skip-serve-logs" in cmds["scheduler"] and "--skip-serve-logs" in cmds["triggerer"]
    for name in ("api-server", "mlflow"):
        assert cmds[name][cmds[name].index("--host") + 1] == "127.0.0.1", name


def test_a_demo_whose_services_went_away_stops_with_one_clear_line(tmp_path, monkeypatch, capsys):
    """Airflow not answering (stopped mid-demo) is one line saying what to do, not a URLError traceback."""
    from flywheel import cli, demo
    from flywheel.airflow_api import AirflowAPI, AirflowUnreachable

    with socket.socket() as s:           # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = AirflowAPI(f"http://127.0.0.1:{port}", "admin", "x")
    with pytest.raises(AirflowUnreachable, match=f"127.0.0.1:{port} does not answer"):
        api.dags()

    def services_gone(*args, **kwargs):
        return api.dags()

    monkeypatch.setattr(demo, "run_demo", services_gone)
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    assert cli.main(["demo", "--short"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not answer" in err[0] and "flywheel demo --resume" in err[0]
    assert "Traceback" not in err[0]
