"""MLflow's logins: the tracking server runs its basic-auth app (`mlflow server --app-name basic-auth`), in both
topologies, and every client authenticates.

| MLflow user           | kind                         | may                                                          |
|-----------------------|------------------------------|--------------------------------------------------------------|
| `admin`               | MLflow admin                 | everything: users, permissions, any experiment or model      |
| `flywheel` (service)  | normal user; MANAGE on what  | what the loop does: create its experiments and registered    |
|                       | it creates                   | models, log runs, register versions, tag them, move aliases  |
|                       |                              | (gate, rollback, override, guardrail, sentinel), read        |
| anyone else           | normal user, READ by default | read experiments, runs, models and aliases; change nothing   |
|                       | (`default_permission`)       | (an admin grants more per experiment or model)               |

Every Flywheel process (Airflow tasks, the Flywheel page, `flywheel serve`) gets the service account through
MLflow's own client variables MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (flywheel.runtime.environment),
so no call site does anything special. The service account is a normal user, not an admin (least privilege):
MLflow gives the creator of an experiment or a registered model MANAGE on it, and the loop creates all of its own,
so it can do everything the loop does but cannot manage users, change permissions it was not given, or write to
what a person created. `sync` (run by `flywheel up` once the server answers, and by compose's `mlflow-init`)
creates it, resets its password when it changed, takes away an admin flag someone gave it, and gives it MANAGE on
the models' experiments and registered models that exist without it (an install from before MLflow had logins).

Passwords: the admin's and the service account's are generated once per install into $FLYWHEEL_HOME/secrets/
(`mlflow_admin_password`, `mlflow_service_password`, 0600) or come from FLYWHEEL_MLFLOW_ADMIN_PASSWORD /
FLYWHEEL_MLFLOW_SERVICE_PASSWORD. Only the tracking server (to create `admin` in an empty user store; MLflow ignores
it afterwards) and `sync` read the admin's. The server is started through `python -m flywheel.mlflow_auth server
<mlflow server options>`, which writes the auth config (`basic_auth.ini`: user store, READ default, credential
cache) into a private file and execs `mlflow server --app-name basic-auth` with the admin password in its
environment: never on a command line, never printed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"
SERVICE_USERNAME = "flywheel"
ADMIN_SECRET, ADMIN_ENV = "mlflow_admin_password", "FLYWHEEL_MLFLOW_ADMIN_PASSWORD"
SERVICE_SECRET, SERVICE_ENV = "mlflow_service_password", "FLYWHEEL_MLFLOW_SERVICE_PASSWORD"
AUTH_DB_ENV = "FLYWHEEL_MLFLOW_AUTH_DB_URI"        # the user store: SQLite next to mlflow.db, or PostgreSQL
CACHE_ENV = "FLYWHEEL_MLFLOW_AUTH_CACHE_SECONDS"    # MLflow's credential cache (bench/mlflow_auth.py)
DEFAULT_PERMISSION = "READ"                         # people: read-only unless an admin grants more
CACHE_SECONDS = 60
# MLflow's own client variables: every MlflowClient, mlflow.* call and model load sends them
USERNAME_VAR, PASSWORD_VAR = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


@dataclass(frozen=True)
class Login:
    username: str
    password: str

    def __repr__(self) -> str:   # never a password in a log line or a traceback
        return f"Login({self.username!r}, password=***)"

    def env(self) -> dict[str, str]:
        """MLflow's client variables for this login."""
        return {USERNAME_VAR: self.username, PASSWORD_VAR: self.password}


def config_text(database_uri: str, cache_seconds: int = CACHE_SECONDS) -> str:
    """MLflow's auth config (see mlflow/server/auth/basic_auth.ini): no password in it."""
    return "\n".join([
        "[mlflow]",
        f"default_permission = {DEFAULT_PERMISSION}",
        f"database_uri = {database_uri}",
        f"admin_username = {ADMIN_USERNAME}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        # a verified (user, password) is remembered for this long in the server process instead of paying a
        # password-hash check (werkzeug's scrypt, ~0.3 s of CPU) on every request: 25x slower without (bench/README.md)
        f"auth_cache_ttl_seconds = {int(cache_seconds)}",
        "",
    ])


def write_private(path: Path, text: str) -> Path:
    """`text` into `path`, 0600, in a folder only the owner may enter (0700)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def server_environment(env: dict[str, str], admin_password: str, config_path: Path) -> dict[str, str]:
    """The tracking server's environment: its auth config and the admin's password (MLflow creates `admin` with it
    in an empty user store), and no service login of its own."""
    out = {k: v for k, v in env.items() if k not in (ADMIN_ENV, USERNAME_VAR, PASSWORD_VAR)}
    out.update({"MLFLOW_AUTH_CONFIG_PATH": str(config_path), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USERNAME,
                "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password})
    # the auth app's forms (sign-up, UI) need a CSRF key shared by the server's workers: theirs when a deployment
    # sets one, else a new one per start (every worker inherits it; a restart only invalidates open forms)
    out.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_urlsafe(32))
    return out


PLACEHOLDER = "change-me"   # .env.example's values: never a password (compose starts mlflow before airflow-init)


def _secret_from(env: dict[str, str], env_var: str, secret: str) -> str:
    """A password from its variable, else from $FLYWHEEL_HOME/secrets/<secret> (written by `flywheel init`)."""
    if env.get(env_var):
        if env[env_var].startswith(PLACEHOLDER):
            raise RuntimeError(f"{env_var} still has its placeholder value from .env.example: generate a real one "
                               "with the command above it there, put it in .env and start again.")
        return env[env_var]
    home = env.get("FLYWHEEL_HOME")
    path = Path(home) / "secrets" / secret if home else None
    if path is None or not path.is_file():
        raise RuntimeError(f"no MLflow password: set {env_var}, or run `flywheel init` to generate "
                           f"{path or '$FLYWHEEL_HOME/secrets/' + secret}.")
    return path.read_text().strip()


def admin_login(env: dict[str, str]) -> Login:
    return Login(ADMIN_USERNAME, _secret_from(env, ADMIN_ENV, ADMIN_SECRET))


def service_login(env: dict[str, str]) -> Login:
    return Login(SERVICE_USERNAME, _secret_from(env, SERVICE_ENV, SERVICE_SECRET))


def serve(argv: list[str], env: dict[str, str] | None = None) -> None:
    """`python -m flywheel.mlflow_auth server <mlflow server options>`: write the auth config, then become
    `mlflow server --app-name basic-auth <options>` (same pid, so `flywheel down` and compose stop it as before)."""
    env = dict(os.environ if env is None else env)
    database_uri = env.get(AUTH_DB_ENV)
    if not database_uri:
        raise SystemExit(f"flywheel.mlflow_auth: set {AUTH_DB_ENV} (the MLflow user store, e.g. "
                         "sqlite:///.../basic_auth.db or a PostgreSQL URL)")
    where = env.get("MLFLOW_AUTH_CONFIG_PATH")
    config = Path(where) if where else Path(tempfile.mkdtemp(prefix="flywheel-mlflow-auth-")) / "basic_auth.ini"
    write_private(config, config_text(database_uri, int(env.get(CACHE_ENV) or CACHE_SECONDS)))
    try:
        password = admin_login(env).password
    except RuntimeError as exc:
        raise SystemExit(f"flywheel.mlflow_auth: {exc}") from None
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "server", "--app-name", "basic-auth", *argv]
    os.execvpe(cmd[0], cmd, server_environment(env, password, config))


# ---- the service account, through the server's user API (explicit credentials: nothing read from the environment)

class MlflowAuthError(RuntimeError):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def request(base: str, login: Login | None, method: str, path: str, body: dict[str, Any] | None = None,
            params: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """One call of the tracking server's REST API as `login` (None: no credentials): (status, JSON body)."""
    url = base.rstrip("/") + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
    headers = {"Content-Type": "application/json"}
    if login is not None:
        token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, _body(r.read())
    except urllib.error.HTTPError as e:
        return e.code, _body(e.read())


def _body(raw: bytes) -> dict[str, Any]:
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:   # /health's "OK", an HTML error page
        return {"message": raw[:300].decode(errors="replace")}


def _ok(status: int, payload: dict[str, Any], what: str) -> dict[str, Any]:
    if status != 200:
        hint = " (the admin password does not match the one MLflow's user store was created with)" \
            if status == 401 else ""
        raise MlflowAuthError(f"MLflow refused to {what}: HTTP {status} {payload.get('message', '')}{hint}", status)
    return payload


def ensure_user(base: str, admin: Login, account: Login) -> str:
    """Create `account` as a normal (non-admin) MLflow user, or reset its password when it changed and take away an
    admin flag; returns what was done."""
    status, payload = request(base, admin, "GET", "/api/2.0/mlflow/users/get", params={"username": account.username})
    if status == 404:
        made = request(base, admin, "POST", "/api/2.0/mlflow/users/create",
                       {"username": account.username, "password": account.password})
        if made[0] == 200:
            return "created"
        # another `sync` may have created it in between: then it exists now, else the refusal stands
        status, payload = request(base, admin, "GET", "/api/2.0/mlflow/users/get",
                                  params={"username": account.username})
        if status == 404:
            _ok(*made, f"create user {account.username}")
    found = next(iter(_ok(status, payload, f"read {account.username}").values()))   # the one object of the answer
    done = []
    if request(base, account, "GET", "/api/2.0/mlflow/users/current")[0] == 401:
        _ok(*request(base, admin, "PATCH", "/api/2.0/mlflow/users/update-password",
                     {"username": account.username, "password": account.password}),
            f"update {account.username}'s password")
        done.append("password updated")
    if found.get("is_admin"):
        _ok(*request(base, admin, "PATCH", "/api/2.0/mlflow/users/update-admin",
                     {"username": account.username, "is_admin": False}), f"make {account.username} a normal user")
        done.append("admin flag removed")
    return ", ".join(done) or "unchanged"


def wait_for_login(base: str, login: Login, timeout: float = 120) -> None:
    """Until the server accepts `login` (the service account exists once `sync` ran): a TimeoutError after that."""
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status = request(base, login, "GET", "/api/2.0/mlflow/users/current", timeout=5)[0]
            if status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"MLflow at {base} did not accept {login.username!r} within {timeout:.0f}s (last: {status})")


def adopt(base: str, admin: Login, username: str, experiments: list[str], models: list[str]) -> list[str]:
    """Give `username` MANAGE on those of these experiments (by name) and registered models that exist and on which
    it has less: what it created already has it; what was made before the server had logins has none."""
    adopted = []
    targets: list[tuple[str, str, str]] = []
    for name in experiments:
        status, payload = request(base, admin, "GET", "/api/2.0/mlflow/experiments/get-by-name",
                                  params={"experiment_name": name})
        if status == 200:
            targets.append(("experiment", payload["experiment"]["experiment_id"], name))
    for name in models:
        status, _ = request(base, admin, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": name})
        if status == 200:
            targets.append(("registered_model", name, name))
    for kind, resource_id, name in targets:
        status, payload = request(base, admin, "GET", "/api/3.0/mlflow/users/permissions/get",
                                  params={"username": username, "resource_type": kind, "resource_id": resource_id})
        if status == 200 and json.dumps(payload).find('"MANAGE"') >= 0:
            continue
        _ok(*request(base, admin, "POST", "/api/3.0/mlflow/users/permissions/grant",
                     {"username": username, "resource_type": kind, "resource_id": resource_id,
                      "permission": "MANAGE"}), f"grant {username} MANAGE on {kind} {name}")
        adopted.append(f"{kind} {name}")
    return adopted


def sync(base: str, admin: Login, service: Login, experiments: Sequence[str] = (), models: Sequence[str] = ()) -> str:
    """The service account as this module describes it; returns a line for the log (no password)."""
    done = ensure_user(base, admin, service)
    adopted = adopt(base, admin, service.username, list(experiments), list(models))
    line = f"MLflow service account {service.username}: {done}"
    return line + (f"; MANAGE granted on {', '.join(adopted)}" if adopted else "")


def registry_as(tracking_uri: str, login: Login) -> Any:
    """MLflow's own registry client (its REST store) logged in as `login`, whatever the environment says: for the one
    call site that must act as someone other than the service account (the demo's hand move, as the admin). Leaves
    MLflow's client variables alone, so other threads keep their login."""
    from mlflow.store.model_registry.rest_store import RestStore
    from mlflow.utils.rest_utils import MlflowHostCreds

    return RestStore(lambda: MlflowHostCreds(tracking_uri, username=login.username, password=login.password))


def flywheel_resources() -> tuple[list[str], list[str]]:
    """The experiments and registered models of the declared models (models/*.yaml)."""
    from pipelines.spec import load_specs

    specs = load_specs().values()
    return [f"flywheel/{s.name}" for s in specs], [s.registered_model_name for s in specs]


def main(argv: list[str] | None = None) -> int:
    """`python -m flywheel.mlflow_auth server ...` starts the tracking server; `python -m flywheel.mlflow_auth sync`
    creates or updates the service account against MLFLOW_TRACKING_URI (compose's mlflow-init)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["server"]:
        serve(args[1:])
        return 0   # not reached: serve execs
    if args[:1] != ["sync"]:
        print("usage: python -m flywheel.mlflow_auth server <mlflow server options> | sync",  # noqa: T201
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = dict(os.environ)
    try:
        line = sync(env["MLFLOW_TRACKING_URI"], admin_login(env), service_login(env), *flywheel_resources())
    except (RuntimeError, KeyError) as exc:
        print(f"flywheel.mlflow_auth: {exc}", file=sys.stderr)  # noqa: T201 - a command's message for people
        return 2
    print(line)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
