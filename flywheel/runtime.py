"""The embedded runtime: Airflow (SQLite + LocalExecutor), MLflow, Feast and an SMTP server on one host.

`init` prepares FLYWHEEL_HOME (secrets generated once per install, Airflow DB, Feast registry);
`up` starts every service in the background and waits until each answers; `down` stops them.
Every setting is an environment variable (see .env.example): values already set win over the
defaults computed here, which is how the same code runs in the scale-out deployment.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.spec import REPO_ROOT

if TYPE_CHECKING:
    from pipelines.layout import Layout

log = logging.getLogger(__name__)

VENV_BIN = Path(sys.executable).parent
SERVICES = ("smtp", "mlflow", "api-server", "scheduler", "dag-processor", "triggerer")

# Modules the scheduler imports at start: LocalExecutor tasks are forked from it and inherit them,
# which removes the per-task import tax (see ../shared/RUNTIME-FACTS.md).
PRELOAD = ("numpy", "pandas", "pyarrow.parquet", "sklearn.metrics", "xgboost", "mlflow", "mlflow.xgboost",
           "mlflow.tracking", "great_expectations", "evidently", "evidently.presets", "feast")

LOCAL_SETTINGS = '''\
# Written by flywheel.runtime: preload heavy libraries in the scheduler only; every task forked
# from it starts with them imported. Other Airflow processes stay lean.
import os
import sys

if len(sys.argv) > 1 and sys.argv[1] == "scheduler" and os.environ.get("FLYWHEEL_PRELOAD", "1") == "1":
    import importlib
    import logging
    import time

    _t = time.monotonic()
    for _name in {modules!r}:
        try:
            importlib.import_module(_name)
        except Exception:  # a missing optional library must not stop the scheduler
            logging.getLogger("flywheel").exception("preload of %s failed", _name)
    sys.stderr.write(f"flywheel: preloaded {{len({modules!r})}} modules in {{time.monotonic() - _t:.1f}}s\\n")
'''


@dataclass(frozen=True)
class Ports:
    airflow: int = 8080
    mlflow: int = 5000
    smtp: int = 8025
    worker_logs: int = 8793
    trigger_logs: int = 8794

    @classmethod
    def from_env(cls) -> Ports:
        e = os.environ
        return cls(int(e.get("FLYWHEEL_AIRFLOW_PORT", 8080)), int(e.get("FLYWHEEL_MLFLOW_PORT", 5000)),
                   int(e.get("FLYWHEEL_SMTP_PORT", 8025)), int(e.get("FLYWHEEL_WORKER_LOG_PORT", 8793)),
                   int(e.get("FLYWHEEL_TRIGGER_LOG_PORT", 8794)))

    @classmethod
    def free(cls) -> Ports:
        """Five free ports (tests run their own Airflow next to a running demo)."""
        socks = [socket.socket() for _ in range(5)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        return cls(*ports)


def _secret(lay: Layout, name: str, make: object, env_var: str | None = None) -> str:
    """A per-install secret: from the environment if set, else generated once into secrets/."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    path = lay.secrets() / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())  # type: ignore[operator]
    return path.read_text().strip()


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def admin_password(lay: Layout) -> str:
    return os.environ.get("FLYWHEEL_ADMIN_PASSWORD") or _secret(lay, "admin_password",
                                                                lambda: secrets.token_urlsafe(12))


def environment(lay: Layout, ports: Ports) -> dict[str, str]:
    """The full environment of every Flywheel process. Values already in os.environ win."""
    home, af = lay.home, lay.airflow_home()
    smtp_conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": ports.smtp,
                 "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "flywheel@localhost",
                           "timeout": 10, "retry_limit": 2}}
    defaults = {
        "FLYWHEEL_HOME": str(home),
        "AIRFLOW_HOME": str(af),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",   # SQLite: keep <= 8 (database is locked above)
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": _secret(lay, "fernet_key", _fernet_key, "AIRFLOW__CORE__FERNET_KEY"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(lay.secrets() / "airflow_passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports.airflow}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{af / 'airflow.db'}",
        "AIRFLOW__API__PORT": str(ports.airflow),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{ports.airflow}/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": _secret(lay, "api_secret_key", lambda: secrets.token_urlsafe(32),
                                             "AIRFLOW__API__SECRET_KEY"),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(lay, "jwt_secret", lambda: secrets.token_urlsafe(32),
                                                  "AIRFLOW__API_AUTH__JWT_SECRET"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports.worker_logs),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports.trigger_logs),
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW_CONN_FLYWHEEL_SMTP": json.dumps(smtp_conn),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports.mlflow}",
        "FLYWHEEL_MLFLOW_UI": f"http://127.0.0.1:{ports.mlflow}",
        "FLYWHEEL_MLFLOW_BACKEND_URI": f"sqlite:///{lay.mlflow_dir() / 'mlflow.db'}",
        "FLYWHEEL_MLFLOW_ARTIFACT_ROOT": (lay.mlflow_dir() / "artifacts").as_uri(),
        "FLYWHEEL_FEAST_REGISTRY": f"sqlite:///{lay.feast_dir() / 'registry.db'}",
        "FLYWHEEL_FEAST_ONLINE": str(lay.feast_dir() / "online.db"),
        "FLYWHEEL_AIRFLOW_PORT": str(ports.airflow),
        "FLYWHEEL_MLFLOW_PORT": str(ports.mlflow),
        "FLYWHEEL_SMTP_PORT": str(ports.smtp),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "FEAST_USAGE": "False",
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
    }
    env = dict(os.environ)
    for k, v in defaults.items():
        env.setdefault(k, v)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd: list[str], env: dict[str, str], lay: Layout, name: str) -> None:
    lay.logs().mkdir(parents=True, exist_ok=True)
    with open(lay.logs() / f"{name}.log", "ab") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    if proc.returncode != 0:
        tail = (lay.logs() / f"{name}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); log {lay.logs() / name}.log:\n{tail}")


def init(lay: Layout, ports: Ports) -> dict[str, str]:
    """Prepare FLYWHEEL_HOME: folders, secrets, Airflow DB + pool, preload settings, Feast registry."""
    for d in (lay.home, lay.airflow_home() / "config", lay.mlflow_dir() / "artifacts", lay.feast_dir(),
              lay.logs(), lay.run(), lay.mail()):
        d.mkdir(parents=True, exist_ok=True)
    env = environment(lay, ports)
    pw_file = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    pw_file.write_text(json.dumps({"admin": admin_password(lay)}))
    os.chmod(pw_file, 0o600)
    (lay.airflow_home() / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS.format(modules=PRELOAD))
    t = time.monotonic()
    _run([str(VENV_BIN / "airflow"), "db", "migrate"], env, lay, "init")
    _run([str(VENV_BIN / "airflow"), "pools", "set", "feast_online_store", "1",
          "one writer at a time into the embedded Feast online store"], env, lay, "init")
    log.info("airflow db ready in %.1fs", time.monotonic() - t)
    _run([str(VENV_BIN / "python"), "-m", "flywheel.cli", "feast-apply"], env, lay, "init")
    return env


def _commands(env: dict[str, str], lay: Layout, ports: Ports) -> dict[str, list[str]]:
    af = str(VENV_BIN / "airflow")
    return {
        "smtp": [str(VENV_BIN / "python"), "-m", "flywheel.smtpd", "--port", str(ports.smtp), "--dir", str(lay.mail())],
        "mlflow": [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(ports.mlflow),
                   "--backend-store-uri", env["FLYWHEEL_MLFLOW_BACKEND_URI"],
                   "--default-artifact-root", env["FLYWHEEL_MLFLOW_ARTIFACT_ROOT"], "--no-serve-artifacts",
                   "--workers", "1"],
        "api-server": [af, "api-server", "--port", str(ports.airflow), "--host", "127.0.0.1"],
        "scheduler": [af, "scheduler"],
        "dag-processor": [af, "dag-processor"],
        "triggerer": [af, "triggerer"],
    }


def _pid_file(lay: Layout, name: str) -> Path:
    return lay.run() / f"{name}.pid"


def running(lay: Layout) -> dict[str, int]:
    out = {}
    for name in SERVICES:
        pf = _pid_file(lay, name)
        if pf.exists():
            pid = int(pf.read_text())
            try:
                os.kill(pid, 0)
                out[name] = pid
            except ProcessLookupError:
                pf.unlink(missing_ok=True)
    return out


def wait_http(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = e
        except (OSError, urllib.error.URLError) as e:
            last = e
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f}s ({last})")


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def up(lay: Layout, ports: Ports, env: dict[str, str] | None = None) -> dict[str, int]:
    """Start every service that is not running yet; wait until each answers."""
    env = env or environment(lay, ports)
    already = running(lay)
    wanted = {"smtp": ports.smtp, "mlflow": ports.mlflow, "api-server": ports.airflow,
              "scheduler": ports.worker_logs, "triggerer": ports.trigger_logs}
    busy = [f"{port} ({name})" for name, port in wanted.items() if name not in already and _in_use(port)]
    if busy:
        raise RuntimeError(f"port(s) already in use: {', '.join(busy)}. Stop what uses them (`make down` if it is "
                           "an earlier Flywheel) or choose other ports with FLYWHEEL_AIRFLOW_PORT, "
                           "FLYWHEEL_MLFLOW_PORT, FLYWHEEL_SMTP_PORT, FLYWHEEL_WORKER_LOG_PORT, "
                           "FLYWHEEL_TRIGGER_LOG_PORT.")
    for name, cmd in _commands(env, lay, ports).items():
        if name in already:
            continue
        out = open(lay.logs() / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                start_new_session=True)
        _pid_file(lay, name).write_text(str(proc.pid))
        log.info("started %s (pid %d)", name, proc.pid)
    wait_port(ports.smtp, 30, "SMTP server")
    wait_http(f"http://127.0.0.1:{ports.mlflow}/health", 90, "MLflow")
    wait_http(f"http://127.0.0.1:{ports.airflow}/api/v2/monitor/health", 120, "Airflow API server")
    return running(lay)


def processes_of(home: Path) -> list[str]:
    """Every live process whose environment points at this FLYWHEEL_HOME (children included)."""
    marker = f"FLYWHEEL_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: `make demo` started it from another process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def down(lay: Layout, timeout: float = 20) -> list[str]:
    """Stop everything `up` started (whole process groups), politely then firmly."""
    procs = running(lay)
    for pid in procs.values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for name, pid in procs.items():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _pid_file(lay, name).unlink(missing_ok=True)
    return list(procs)
