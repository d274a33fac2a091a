"""Flywheel's runtime on one host, in one of two topologies chosen by FLYWHEEL_TOPOLOGY.

- `embedded` (default): Airflow on SQLite with the LocalExecutor, MLflow on SQLite with local
  artifacts, Feast with a SQLite registry and online store, data under FLYWHEEL_HOME, an SMTP server.
- `services`: the scale-out topology of docker-compose.yaml, natively, against a PostgreSQL and a
  Redis that already run: Airflow metadata on PostgreSQL with the CeleryExecutor over Redis and a
  real `airflow celery worker`, MLflow on PostgreSQL with artifacts in S3, Feast with a PostgreSQL
  registry and the Redis online store, landing/quarantine/scores/reports in S3, served by an S3-API
  server on loopback (moto's standalone server stands in for MinIO), and the SMTP server.

`init` prepares FLYWHEEL_HOME (secrets generated once per install, databases, Airflow DB, Feast
registry); `up` starts every service in the background and waits until each answers; `down` stops
them. Every setting is an environment variable (see .env.example): values already set win over the
defaults computed here, so the topologies differ only in environment variables, and the compose
deployment sets the same variables explicitly.
"""

from __future__ import annotations

import contextlib
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
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel import mlflow_auth
from flywheel.access import ACCOUNTS, FAB_AUTH_MANAGER, SIMPLE_AUTH_MANAGER, account, uses_fab
from pipelines.spec import REPO_ROOT

if TYPE_CHECKING:
    from pipelines.layout import Layout

log = logging.getLogger(__name__)

VENV_BIN = Path(sys.executable).parent
SERVICES = ("smtp", "s3", "mlflow", "api-server", "scheduler", "dag-processor", "triggerer", "worker", "serving")
TOPOLOGIES = ("embedded", "services")
# docker-compose.yaml's services and what stands for each in the native `services` topology
# (tests/dags/test_compose.py holds the two lists together).
COMPOSE_NATIVE = {
    "postgres": "PostgreSQL already running (FLYWHEEL_POSTGRES)",
    "redis": "Redis already running (FLYWHEEL_REDIS)",
    "minio": "s3",
    "minio-init": "init (buckets)",
    "mailpit": "smtp",
    "mlflow": "mlflow",
    "mlflow-init": "up (MLflow service account)",
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "worker",
    "airflow-triggerer": "triggerer",
    "airflow-init": "init",
    "airflow-cli": "flywheel.cli / airflow CLI",
    "flywheel-serving": "serving",
}

# Modules the scheduler imports at start: LocalExecutor tasks are forked from it and inherit them,
# which removes the per-task import tax (see ../shared/RUNTIME-FACTS.md).
PRELOAD = ("numpy", "pandas", "pyarrow.parquet", "sklearn.metrics", "xgboost", "mlflow", "mlflow.xgboost",
           "mlflow.tracking", "great_expectations", "evidently", "evidently.presets", "feast")

LOCAL_SETTINGS = '''\
# Written by flywheel.runtime: preload heavy libraries in the process tasks are forked from (the
# scheduler with the LocalExecutor, the Celery worker with the CeleryExecutor); every task starts
# with them imported. Other Airflow processes stay lean.
import os
import sys

_local = "Celery" not in os.environ.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
_worker = (sys.argv[1:2] == ["scheduler"] and _local) or sys.argv[1:3] == ["celery", "worker"]
if _worker and os.environ.get("FLYWHEEL_PRELOAD", "1") == "1":
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
    s3: int = 9000   # the S3-API server of the `services` topology
    serving: int = 8000   # `flywheel serve`: online predictions from the champions

    @classmethod
    def from_env(cls) -> Ports:
        e = os.environ
        return cls(int(e.get("FLYWHEEL_AIRFLOW_PORT", 8080)), int(e.get("FLYWHEEL_MLFLOW_PORT", 5000)),
                   int(e.get("FLYWHEEL_SMTP_PORT", 8025)), int(e.get("FLYWHEEL_WORKER_LOG_PORT", 8793)),
                   int(e.get("FLYWHEEL_TRIGGER_LOG_PORT", 8794)), int(e.get("FLYWHEEL_S3_PORT", 9000)),
                   int(e.get("FLYWHEEL_SERVING_PORT", 8000)))

    @classmethod
    def free(cls) -> Ports:
        """Seven free ports (tests run their own Airflow next to a running demo)."""
        socks = [socket.socket() for _ in range(7)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        return cls(*ports)

    def env(self) -> dict[str, str]:
        """The variables that carry these ports to every process (and to `flywheel` commands)."""
        return {"FLYWHEEL_AIRFLOW_PORT": str(self.airflow), "FLYWHEEL_MLFLOW_PORT": str(self.mlflow),
                "FLYWHEEL_SMTP_PORT": str(self.smtp), "FLYWHEEL_WORKER_LOG_PORT": str(self.worker_logs),
                "FLYWHEEL_TRIGGER_LOG_PORT": str(self.trigger_logs), "FLYWHEEL_S3_PORT": str(self.s3),
                "FLYWHEEL_SERVING_PORT": str(self.serving)}


def topology() -> str:
    value = (os.environ.get("FLYWHEEL_TOPOLOGY") or "embedded").strip().lower()
    if value not in TOPOLOGIES:
        raise ValueError(f"FLYWHEEL_TOPOLOGY={value!r} is not a topology: use one of {', '.join(TOPOLOGIES)} "
                         "(see .env.example).")
    return value


def _bucket(prefix: str, what: str) -> str:
    return f"{prefix}-{what}".replace("_", "-").lower()


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


def serving_api_key(lay: Layout) -> str:
    """The online endpoint's API key (`flywheel serve`): FLYWHEEL_SERVING_API_KEY, else generated once per install
    into secrets/serving_api_key (0600)."""
    return _secret(lay, "serving_api_key", lambda: secrets.token_urlsafe(32), "FLYWHEEL_SERVING_API_KEY")


def account_password(lay: Layout, username: str) -> str:
    """The Airflow password of one of flywheel.access's accounts (admin, oncall, viewer): from its environment
    variable (FLYWHEEL_ADMIN_PASSWORD, ...), else generated once per install into secrets/<username>_password."""
    acc = account(username)
    return os.environ.get(acc.env_var) or _secret(lay, acc.secret, lambda: secrets.token_urlsafe(12))


def mlflow_admin_password(lay: Layout) -> str:
    """The MLflow admin's password (flywheel/mlflow_auth.py): FLYWHEEL_MLFLOW_ADMIN_PASSWORD, else generated once per
    install into secrets/mlflow_admin_password. Only the tracking server and the service-account step read it."""
    return _secret(lay, mlflow_auth.ADMIN_SECRET, lambda: secrets.token_urlsafe(24), mlflow_auth.ADMIN_ENV)


def mlflow_service_password(lay: Layout) -> str:
    """The password of MLflow's `flywheel` service account, which every Flywheel process logs in as:
    FLYWHEEL_MLFLOW_SERVICE_PASSWORD, else generated once per install into secrets/mlflow_service_password."""
    return _secret(lay, mlflow_auth.SERVICE_SECRET, lambda: secrets.token_urlsafe(24), mlflow_auth.SERVICE_ENV)


def mlflow_login_hint(lay: Layout) -> str:
    """Where the MLflow admin's password is, for a person (never the password): the UI asks for a login."""
    if os.environ.get(mlflow_auth.ADMIN_ENV):
        return f"login {mlflow_auth.ADMIN_USERNAME}, password in ${mlflow_auth.ADMIN_ENV}"
    mlflow_admin_password(lay)                        # generated now if it was not yet
    return f"login {mlflow_auth.ADMIN_USERNAME}, password: cat {lay.secrets() / mlflow_auth.ADMIN_SECRET}"


def admin_password(lay: Layout) -> str:
    return account_password(lay, "admin")


def accounts() -> tuple[str, ...]:
    """The Airflow accounts of this topology: one per role with the FAB auth manager, else `admin` alone."""
    manager = os.environ.get("AIRFLOW__CORE__AUTH_MANAGER") or (
        FAB_AUTH_MANAGER if topology() == "services" else SIMPLE_AUTH_MANAGER)   # environment()'s defaults
    return tuple(a.username for a in ACCOUNTS) if uses_fab(manager) else ("admin",)


def admin_login_hint(lay: Layout) -> str:
    """Where the Airflow passwords are, for a message a person reads (never a password: terminals are logged)."""
    hints = []
    for username in accounts():
        acc = account(username)
        if os.environ.get(acc.env_var):
            hints.append(f"login {username}, password in ${acc.env_var}")
        else:
            account_password(lay, username)           # generated now if it was not yet
            hints.append(f"login {username}, password: cat {lay.secrets() / acc.secret}")
    return "; ".join(hints)


REDIS_PASSWORD_ENV = "FLYWHEEL_REDIS_PASSWORD"


def _redis_password(lay: Layout) -> tuple[str | None, str]:
    """The local Redis's password in the `services` topology and where it came from: FLYWHEEL_REDIS_PASSWORD, else
    secrets/redis_password when the user put one there, else none (a Redis without a password, the default).

    Never generated: the Redis is a server that already runs, and whoever set its `requirepass` knows it."""
    if os.environ.get(REDIS_PASSWORD_ENV):
        return os.environ[REDIS_PASSWORD_ENV], REDIS_PASSWORD_ENV
    path = lay.secrets() / "redis_password"
    if path.is_file() and (value := path.read_text().strip()):
        return value, str(path)
    return None, "none"


def redis_password(lay: Layout) -> str | None:
    """The password of the `services` topology's Redis, or None when it has none (see `_redis_password`)."""
    return _redis_password(lay)[0]


def _feast_redis_password(password: str) -> str:
    """`password` as a value of Feast's Redis connection string (`host:port,key=value,...`). Feast splits the string
    on commas and JSON-decodes each value when it can: a password with a comma or one that reads as JSON (`123`,
    `true`, `"x"`, surrounding spaces that a strip would lose) goes in as a JSON string, its commas escaped as
    \\u002c, which Feast decodes back to the same characters. Any other password goes in as it is."""
    try:
        json.loads(password)
    except ValueError:
        if "," not in password and password == password.strip():
            return password
    return json.dumps(password).replace(",", "\\u002c")


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
        # one laptop, one person: Airflow's SimpleAuthManager with the `admin` account (README, Security); the
        # `services` topology runs the FAB auth manager with roles (flywheel/access.py)
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
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
        # Airflow's default. The loop does not sleep after a loop that queued or finished a task; a task that ends
        # during the sleep waits for the next loop. A shorter sleep mostly spins (bench/README.md, "The scheduler's
        # idle sleep"): the embedded demo alone used 614 CPU-s in 388 s at 0.2 s, 487 in 361 s at 1 s; a landed
        # 1M-row day took 0.7-3 s longer from landing to its drift verdict
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW_CONN_FLYWHEEL_SMTP": json.dumps(smtp_conn),
        # the landing watcher lists a local folder: every second costs nothing (S3, scaled out: every 5 s)
        "FLYWHEEL_LANDING_POLL_SECONDS": "1",
        # a task that fails after its retries emails the DAG's owners through the same server (Airflow's own
        # failure email looks for `smtp_default` otherwise, and only logged "SMTP connection is not found")
        "AIRFLOW__EMAIL__EMAIL_CONN_ID": "flywheel_smtp",
        "AIRFLOW__EMAIL__FROM_EMAIL": "flywheel@localhost",
        # ... and its body links the failed-task runbook (flywheel/templates/task_failure_email.html)
        "AIRFLOW__EMAIL__HTML_CONTENT_TEMPLATE": str(Path(__file__).resolve().parent / "templates"
                                                     / "task_failure_email.html"),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports.mlflow}",
        "FLYWHEEL_MLFLOW_UI": f"http://127.0.0.1:{ports.mlflow}",
        "FLYWHEEL_MLFLOW_BACKEND_URI": f"sqlite:///{lay.mlflow_dir() / 'mlflow.db'}",
        # MLflow's logins (flywheel/mlflow_auth.py): the server's user store and auth config, and the service account
        # every process logs in as (MLflow's own client variables; people get READ unless an admin grants more)
        mlflow_auth.AUTH_DB_ENV: f"sqlite:///{lay.mlflow_dir() / 'basic_auth.db'}",
        "MLFLOW_AUTH_CONFIG_PATH": str(lay.secrets() / "mlflow_auth.ini"),
        mlflow_auth.USERNAME_VAR: mlflow_auth.SERVICE_USERNAME,
        mlflow_auth.PASSWORD_VAR: mlflow_service_password(lay),
        "FLYWHEEL_MLFLOW_ARTIFACT_ROOT": (lay.mlflow_dir() / "artifacts").as_uri(),
        "FLYWHEEL_FEAST_REGISTRY": f"sqlite:///{lay.feast_dir() / 'registry.db'}",
        "FLYWHEEL_FEAST_ONLINE": str(lay.feast_dir() / "online.db"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # the tracking server's job runner (GenAI scorers, trace roll-ups) starts 8 processes (~2 GB, ~80 s of CPU
        # at start on 2 cores) that Flywheel never uses
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "FEAST_USAGE": "False",
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
        "FLYWHEEL_TOPOLOGY": topology(),
        **ports.env(),
    }
    if topology() == "services":
        defaults.update(_services_defaults(lay, ports))
    env = dict(os.environ)
    for k, v in defaults.items():
        env.setdefault(k, v)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _services_defaults(lay: Layout, ports: Ports) -> dict[str, str]:
    """What the `services` topology changes: only these variables (docker-compose.yaml sets the same)."""
    e = os.environ
    poll = {"FLYWHEEL_LANDING_POLL_SECONDS": "5"}   # a LIST request on the object store each time
    pg = (e.get("FLYWHEEL_POSTGRES") or "postgresql://postgres@127.0.0.1:5432").rstrip("/")
    prefix = e.get("FLYWHEEL_DB_PREFIX") or "flywheel"
    redis_host = e.get("FLYWHEEL_REDIS") or "127.0.0.1:6379"
    redis_db = e.get("FLYWHEEL_REDIS_DB") or "0"
    # the local Redis's password, when it has one: percent-encoded in the broker URL (redis-py and kombu decode it;
    # Airflow expands `$VAR`s in the value, which the encoding also keeps out), a value of Feast's connection string
    redis_pw = redis_password(lay)
    broker_auth = f":{urllib.parse.quote(redis_pw, safe='')}@" if redis_pw else ""
    feast_auth = f",password={_feast_redis_password(redis_pw)}" if redis_pw else ""
    driverless = pg.split("://", 1)[1]
    s3 = f"http://127.0.0.1:{ports.s3}"
    return {
        **poll,
        "FLYWHEEL_POSTGRES": pg,
        "FLYWHEEL_DB_PREFIX": prefix,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        # logins with roles: viewer, on-call, admin (flywheel/access.py; init creates the accounts)
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{driverless}/{prefix}_airflow",
        "FLYWHEEL_REDIS": redis_host,
        "FLYWHEEL_REDIS_DB": redis_db,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{broker_auth}{redis_host}/{redis_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{driverless}/{prefix}_airflow",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
        "FLYWHEEL_MLFLOW_BACKEND_URI": f"postgresql+psycopg2://{driverless}/{prefix}_mlflow",
        mlflow_auth.AUTH_DB_ENV: f"postgresql+psycopg2://{driverless}/{prefix}_mlflow_auth",   # MLflow's users
        "FLYWHEEL_MLFLOW_ARTIFACT_ROOT": f"s3://{_bucket(prefix, 'mlflow')}/",
        "FLYWHEEL_DATA_URI": f"s3://{_bucket(prefix, 'data')}/",
        "FLYWHEEL_FEAST_REGISTRY": f"postgresql+psycopg://{driverless}/{prefix}_feast",
        "FLYWHEEL_FEAST_ONLINE_STORE": "redis",
        "FLYWHEEL_FEAST_REDIS": f"{redis_host},db={redis_db}{feast_auth}",
        "AWS_ENDPOINT_URL": s3,
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": "flywheel",
        "AWS_SECRET_ACCESS_KEY": _secret(lay, "s3_secret_key", lambda: secrets.token_urlsafe(24),
                                         "AWS_SECRET_ACCESS_KEY"),
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def databases(env: dict[str, str]) -> list[str]:
    """The PostgreSQL databases the `services` topology needs."""
    prefix = env["FLYWHEEL_DB_PREFIX"]
    return [f"{prefix}_airflow", f"{prefix}_mlflow", f"{prefix}_mlflow_auth", f"{prefix}_feast"]


def _pg_admin(env: dict[str, str]):  # type: ignore[no-untyped-def]
    import psycopg

    url = env["FLYWHEEL_POSTGRES"] + "/postgres"
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        raise RuntimeError(f"PostgreSQL at {env['FLYWHEEL_POSTGRES']} does not answer ({e}). Start it, or point "
                           "FLYWHEEL_POSTGRES at one (a role that may create databases).") from e


def create_databases(env: dict[str, str]) -> list[str]:
    """Create the topology's databases that do not exist yet; returns the ones created."""
    from psycopg import sql

    made = []
    with _pg_admin(env) as conn:
        have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for name in databases(env):
            if name not in have:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                made.append(name)
    return made


def drop_databases(env: dict[str, str]) -> None:
    """Drop the topology's databases (tests clean up with this; nothing else calls it)."""
    from psycopg import sql

    with _pg_admin(env) as conn:
        for name in databases(env):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def check_redis(lay: Layout, env: dict[str, str]) -> None:
    """Ping the `services` topology's Redis through the broker URL, as Celery will: a RuntimeError that says what to
    do when it does not answer, wants a password or refuses the one given (never the password itself)."""
    import redis

    url = env["AIRFLOW__CELERY__BROKER_URL"]
    at = f"Redis at {env['FLYWHEEL_REDIS']} (database {env['FLYWHEEL_REDIS_DB']})"
    sent = urllib.parse.urlsplit(url).password is not None
    source = _redis_password(lay)[1] if sent else "none"
    if sent and source == "none":
        source = "AIRFLOW__CELERY__BROKER_URL"   # set in the environment as a whole: it wins over FLYWHEEL_REDIS*
    where = f"set {REDIS_PASSWORD_ENV}, or put it in {lay.secrets() / 'redis_password'}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except redis.AuthenticationError as e:
        if not sent:
            raise RuntimeError(f"{at} requires a password ({e}): {where}.") from None
        raise RuntimeError(f"{at} refused the password from {source} ({e}): {where} (the one its requirepass "
                           "sets), or unset it when this Redis has none.") from None
    except redis.ConnectionError as e:
        raise RuntimeError(f"{at} does not answer ({e}). Start it, or point FLYWHEEL_REDIS at one.") from None
    log.info("%s answers (password: %s)", at, source)


def reset_services(env: dict[str, str]) -> None:
    """Forget the `services` topology's state: its databases and its Redis database (the demo's RESET).

    S3 needs nothing: the S3-API server on loopback keeps its objects in memory until it stops.
    """
    import redis

    drop_databases(env)
    redis.Redis.from_url(env["AIRFLOW__CELERY__BROKER_URL"], socket_connect_timeout=5).flushdb()


def create_buckets(env: dict[str, str]) -> list[str]:
    """Create the S3 buckets for MLflow artifacts and Flywheel data (what minio-init does in compose)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    made = []
    for uri in (env["FLYWHEEL_MLFLOW_ARTIFACT_ROOT"], env["FLYWHEEL_DATA_URI"]):
        name = uri.removeprefix("s3://").split("/", 1)[0]
        if name not in have:
            s3.create_bucket(Bucket=name)
            made.append(name)
    return made


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
    if not uses_fab(env.get("AIRFLOW__CORE__AUTH_MANAGER")):   # the SimpleAuthManager reads its passwords here
        pw_file = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        pw_file.write_text(json.dumps({"admin": admin_password(lay)}))
        os.chmod(pw_file, 0o600)
    serving_api_key(lay)   # the online endpoint's key, generated once per install (or from the environment)
    mlflow_admin_password(lay)   # the MLflow server creates its `admin` with it (flywheel/mlflow_auth.py)
    (lay.airflow_home() / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS.format(modules=PRELOAD))
    if env["FLYWHEEL_TOPOLOGY"] == "services":
        check_redis(lay, env)   # Celery's broker and Feast's online store: a clear line now, not a worker's traceback
        made = create_databases(env)
        log.info("PostgreSQL databases: %s (created: %s)", ", ".join(databases(env)), ", ".join(made) or "none")
    t = time.monotonic()
    _run([str(VENV_BIN / "airflow"), "db", "migrate"], env, lay, "init")
    if uses_fab(env.get("AIRFLOW__CORE__AUTH_MANAGER")):
        # the roles and one account per role, before the DAG processor grants the on-call role its DAGs
        passwords = {acc.env_var: account_password(lay, acc.username) for acc in ACCOUNTS}
        _run([str(VENV_BIN / "python"), "-m", "flywheel.access"], {**env, **passwords}, lay, "init")
    _run([str(VENV_BIN / "airflow"), "pools", "set", "feast_online_store", "1",
          "one writer at a time into the embedded Feast online store"], env, lay, "init")
    log.info("airflow db ready in %.1fs", time.monotonic() - t)
    _run([str(VENV_BIN / "python"), "-m", "flywheel.cli", "feast-apply"], env, lay, "init")
    return env


def _commands(env: dict[str, str], lay: Layout, ports: Ports) -> dict[str, list[str]]:
    af = str(VENV_BIN / "airflow")
    services = env["FLYWHEEL_TOPOLOGY"] == "services"
    return {
        "smtp": [str(VENV_BIN / "python"), "-m", "flywheel.smtpd", "--port", str(ports.smtp), "--dir", str(lay.mail())],
        **({"s3": [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(ports.s3)]} if services else {}),
        # `mlflow server --app-name basic-auth` once flywheel.mlflow_auth wrote its auth config (no password on the
        # command line: the server reads the admin's from its environment)
        "mlflow": [str(VENV_BIN / "python"), "-m", "flywheel.mlflow_auth", "server", "--host", "127.0.0.1",
                   "--port", str(ports.mlflow),
                   "--backend-store-uri", env["FLYWHEEL_MLFLOW_BACKEND_URI"],
                   "--default-artifact-root", env["FLYWHEEL_MLFLOW_ARTIFACT_ROOT"], "--no-serve-artifacts",
                   "--workers", "1"],
        "api-server": [af, "api-server", "--port", str(ports.airflow), "--host", "127.0.0.1"],
        # no log servers: they bind every interface (uvicorn host "" in airflow.utils.serve_logs) and the API
        # server reads the task and trigger logs from the local disk anyway; the Celery worker keeps its own
        "scheduler": [af, "scheduler", "--skip-serve-logs"],
        "dag-processor": [af, "dag-processor"],
        "triggerer": [af, "triggerer", "--skip-serve-logs"],
        **({"worker": [af, "celery", "worker", "--concurrency", env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]]}
           if services else {}),
        # online predictions from every model's champion (waits for champions; reloads when the alias moves)
        "serving": [str(VENV_BIN / "python"), "-m", "flywheel.cli", "serve", "--host", "127.0.0.1", "--port",
                    str(ports.serving)],
    }


def _pid_file(lay: Layout, name: str) -> Path:
    return lay.run() / f"{name}.pid"


def _recorded(lay: Layout) -> dict[str, int]:
    """Every service with a pid file: its leader's pid, which is also its process group (own session)."""
    out = {}
    for name in SERVICES:
        pf = _pid_file(lay, name)
        try:
            out[name] = int(pf.read_text())
        except (OSError, ValueError):
            continue
    return out


def running(lay: Layout) -> dict[str, int]:
    """The services whose leader process is alive (pid files of dead leaders are kept: see `reap`)."""
    return {name: pid for name, pid in _recorded(lay).items() if _alive(pid)}


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a live, non-zombie process; None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[2]))


def leftovers(lay: Layout) -> dict[int, str]:
    """Processes of this install that no running service owns: members of the group of a service whose
    leader died (a SIGKILLed scheduler leaves its LocalExecutor workers behind, re-parented to init), and
    orphans whose environment points at this FLYWHEEL_HOME. pid -> command line."""
    live_groups = set(running(lay).values())
    dead_groups = {pid for pid in _recorded(lay).values() if pid not in live_groups}
    marker = f"FLYWHEEL_HOME={lay.home}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        pid = int(proc.name)
        stat = _proc_stat(pid)
        if stat is None or stat[1] in live_groups:
            continue
        ppid, pgid = stat
        try:
            ours = pgid in dead_groups or (ppid == 1 and marker in (proc / "environ").read_bytes().split(b"\0"))
            if ours:
                found[pid] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
    return found


def reap(lay: Layout, timeout: float = 10) -> dict[int, str]:
    """Stop what a crashed run left behind (see `leftovers`): SIGTERM, then SIGKILL (idle LocalExecutor
    workers ignore SIGTERM). Pid files of dead leaders are removed. Returns what was stopped."""
    found = leftovers(lay)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in found):
        time.sleep(0.2)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    alive = running(lay)
    for name in _recorded(lay):
        if name not in alive:
            _pid_file(lay, name).unlink(missing_ok=True)
    if found:
        log.warning("stopped %d process(es) left by an earlier run: %s", len(found),
                    "; ".join(f"{p} {c}" for p, c in found.items()))
    return found


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
    services = env["FLYWHEEL_TOPOLOGY"] == "services"
    reap(lay)   # a crashed run's children (e.g. the workers of a SIGKILLed scheduler) hold ports and the DB
    already = running(lay)
    wanted = {"smtp": ports.smtp, "mlflow": ports.mlflow, "api-server": ports.airflow, "serving": ports.serving}
    if services:
        wanted.update({"s3": ports.s3, "worker": ports.worker_logs})
    busy = [f"{port} ({name})" for name, port in wanted.items() if name not in already and _in_use(port)]
    if busy:
        raise RuntimeError(f"port(s) already in use: {', '.join(busy)}. Stop what uses them (`make down` if it is "
                           "an earlier Flywheel) or choose other ports with FLYWHEEL_AIRFLOW_PORT, "
                           "FLYWHEEL_MLFLOW_PORT, FLYWHEEL_SMTP_PORT, FLYWHEEL_WORKER_LOG_PORT, "
                           "FLYWHEEL_TRIGGER_LOG_PORT, FLYWHEEL_S3_PORT, FLYWHEEL_SERVING_PORT.")
    mlflow_admin = mlflow_auth.Login(mlflow_auth.ADMIN_USERNAME, mlflow_admin_password(lay))   # made now if not yet
    for name, cmd in _commands(env, lay, ports).items():
        if name not in already:
            start(lay, name, cmd, env)
    try:
        wait_port(ports.smtp, 30, "SMTP server")
        if services:
            wait_port(ports.s3, 60, "S3-API server")
            made = create_buckets(env)
            log.info("S3 buckets created: %s", ", ".join(made) or "none (they exist)")
        wait_http(f"http://127.0.0.1:{ports.mlflow}/health", 240, "MLflow")  # ~10 s idle, minutes on a busy host
        # the service account every process logs in as (created, or its password reset), before anything uses it
        log.info("%s", mlflow_auth.sync(env["MLFLOW_TRACKING_URI"], mlflow_admin,
                                        mlflow_auth.Login(env[mlflow_auth.USERNAME_VAR],
                                                          env[mlflow_auth.PASSWORD_VAR]),
                                        *mlflow_auth.flywheel_resources()))
        wait_http(f"http://127.0.0.1:{ports.airflow}/api/v2/monitor/health", 240, "Airflow API server")
        wait_http(f"http://127.0.0.1:{ports.serving}/healthz", 120, "online endpoint (flywheel serve)")
        if services:
            wait_port(ports.worker_logs, 120, "Celery worker (log server)")
    except TimeoutError as e:
        raise TimeoutError(f"{e}{_died(lay)}") from None
    return running(lay)


def _died(lay: Layout) -> str:
    """Which started services have exited, with the end of their logs (for a timeout's message)."""
    alive = running(lay)
    dead = [name for name in SERVICES if name not in alive and (lay.logs() / f"{name}.log").exists()]
    out = []
    for name in dead:
        tail = (lay.logs() / f"{name}.log").read_text(errors="replace")[-1500:]
        out.append(f"\n--- {name} exited; end of {lay.logs() / name}.log:\n{tail}")
    return "".join(out)


def start(lay: Layout, name: str, cmd: list[str], env: dict[str, str]) -> int:
    """Start one service in its own process group, logging to logs/<name>.log; returns its pid."""
    out = open(lay.logs() / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                            start_new_session=True)
    _pid_file(lay, name).write_text(str(proc.pid))
    log.info("started %s (pid %d)", name, proc.pid)
    return proc.pid


def restart_worker(lay: Layout, ports: Ports, env: dict[str, str]) -> int:
    """Start the Celery worker again (after it died); returns its pid."""
    pid = start(lay, "worker", _commands(env, lay, ports)["worker"], env)
    wait_port(ports.worker_logs, 120, "Celery worker (log server)")
    return pid


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


def listening_sockets(home: Path) -> list[tuple[str, int, str]]:
    """(address, port, command) of every TCP socket in LISTEN state held by a process of this install
    (`processes_of`), read from /proc: what `ss -ltnp` would show for them."""
    import ipaddress

    marker = f"FLYWHEEL_HOME={home}".encode()
    # members of the services' process groups too: setproctitle (the API server's "airflow api_server ...")
    # overwrites the memory /proc/<pid>/environ is read from
    groups = set()
    for pf in (home / "run").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            groups.add(int(pf.read_text()))
    owners: dict[str, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = _proc_stat(int(proc.name))
            in_group = stat is not None and stat[1] in groups
            if not in_group and marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[target[8:-1]] = cmd
        except OSError:
            continue
    out = []
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in owners:   # 0A: LISTEN
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc/net/tcp* print each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addr = str(ipaddress.ip_address(raw)) if family == 6 else str(ipaddress.IPv4Address(raw))
            out.append((addr, int(hexport, 16), owners[fields[9]]))
    return sorted(set(out))


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
    """Stop everything `up` started (whole process groups), politely then firmly, and whatever an earlier
    crashed run left behind (`reap`)."""
    reap(lay)
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
