"""The scale-out deployment: docker-compose.yaml, .env.example and Dockerfile.

No Docker is needed: the compose file is interpolated with .env.example the way `docker compose
--env-file .env.example config` does, then validated against the Compose Specification schema
and checked for what the deployment promises (services, CeleryExecutor, no committed secrets,
pinned images, every variable documented).

tests/data/compose-spec.json is the Compose Specification's JSON schema, unmodified:
repository compose-spec/compose-spec, file schema/compose-spec.json, commit
00655e2222608fa6eaecdf12ac5195889ca2244a (74,133 characters).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
import yaml

if TYPE_CHECKING:
    from collections.abc import Collection

pytestmark = pytest.mark.dags

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "requirements.txt"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

REQUIRED_SERVICES = {
    "postgres": None,
    "redis": None,
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
    "airflow-init": None,
    "mlflow": None,
    "minio": None,
    "minio-init": None,
    "mailpit": None,
}
# Long-running services that others wait for or that a user would watch.
HEALTHCHECKED = {
    "postgres",
    "redis",
    "minio",
    "mailpit",
    "mlflow",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
PROJECT_MOUNTS = ("dags", "plugins", "pipelines", "flywheel", "models", "datasets", "feature_repo")
CODE_DIRS = ("flywheel", "pipelines", "dags", "plugins", "feature_repo")

# Variables Flywheel reads; .env.example documents each one (as KEY=value or # KEY=value), and
# so every FLYWHEEL_* name quoted in the code or substituted in feature_repo/*.yaml.
FLYWHEEL_VARIABLES = {
    "FLYWHEEL_HOME",
    "FLYWHEEL_AIRFLOW_PORT",
    "FLYWHEEL_MLFLOW_PORT",
    "FLYWHEEL_SMTP_PORT",
    "FLYWHEEL_ADMIN_PASSWORD",
    "FLYWHEEL_MODELS_DIR",
    "FLYWHEEL_DATASETS_DIR",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "MLFLOW_TRACKING_URI",
    "FLYWHEEL_MLFLOW_BACKEND_URI",
    "FLYWHEEL_MLFLOW_ARTIFACT_ROOT",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "FLYWHEEL_FEAST_REGISTRY",
    "FLYWHEEL_FEAST_ONLINE_STORE",
    "FLYWHEEL_FEAST_REDIS",
    "AIRFLOW_CONN_FLYWHEEL_SMTP",
    "MLFLOW_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
    "GX_ANALYTICS_ENABLED",
}
# Names of variables holding a secret (a *_PASSWORDS_FILE path is not one).
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|SECRET_ACCESS_KEY|FERNET_KEY|TOKEN)$")
PLACEHOLDER_PREFIX = "change-me"

# Compose interpolation: `$$` is a literal dollar; `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
# `${NAME:?error}`, `${NAME?error}`, `${NAME:+alt}`, `${NAME+alt}` and `$NAME` are substituted.
_TOKEN = re.compile(
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\$\{(?P<invalid>[^}]*)\}"
)
_CREDENTIALS_IN_URL = re.compile(r"://(?P<user>[^:/@\s]*):(?P<password>[^@\s]+)@")


class InterpolationError(ValueError):
    pass


def references(text: str) -> list[tuple[str, str | None, str]]:
    """(name, operator, argument) of every substitution in compose-file text."""
    found = []
    for match in _TOKEN.finditer(text):
        if match.group(0) == "$$":
            continue
        if match.group("invalid") is not None:
            raise InterpolationError(f"invalid interpolation {match.group(0)!r}")
        name = match.group("braced") or match.group("bare")
        found.append((name, match.group("op"), match.group("arg") or ""))
    return found


def interpolate(text: str, env: dict[str, str]) -> str:
    """Substitute variables as `docker compose` does; a missing `:?`/`?` variable raises."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$$":
            return "$"
        if match.group("invalid") is not None:
            raise InterpolationError(f"invalid interpolation {token!r}")
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        is_set, non_empty = value is not None, bool(value)
        if op in (":-", "-"):
            return value if (non_empty if op == ":-" else is_set) else arg  # type: ignore[return-value]
        if op in (":?", "?"):
            if not (non_empty if op == ":?" else is_set):
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value  # type: ignore[return-value]
        if op in (":+", "+"):
            return arg if (non_empty if op == ":+" else is_set) else ""
        return value or ""

    return _TOKEN.sub(substitute, text)


def parse_env_file(text: str) -> tuple[dict[str, str], set[str], list[str]]:
    """Active KEY=value pairs, names documented as `# KEY=value`, and lines that are neither."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    malformed: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            documented = re.match(r"#\s*([A-Z_][A-Z0-9_]*)=", line)
            if documented:
                commented.add(documented.group(1))
            continue
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
        if not match:
            malformed.append(raw)
            continue
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        active[key] = value
    return active, commented, malformed


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _map_strings(node: Any, function: Any) -> Any:
    if isinstance(node, dict):
        return {key: _map_strings(value, function) for key, value in node.items()}
    if isinstance(node, list):
        return [_map_strings(item, function) for item in node]
    return function(node) if isinstance(node, str) else node


def yaml_strings(text: str) -> list[str]:
    """Every string value of a YAML document: what Compose interpolates (never comments or keys)."""
    strings: list[str] = []

    def collect(value: str) -> str:
        strings.append(value)
        return value

    _map_strings(yaml.safe_load(text), collect)
    return strings


def compose_references(text: str) -> list[tuple[str, str | None, str]]:
    return [ref for value in yaml_strings(text) for ref in references(value)]


def load_compose(text: str, env: dict[str, str]) -> dict[str, Any]:
    return _map_strings(yaml.safe_load(text), lambda value: interpolate(value, env))


# ------------------------------------------------------------------------------------------------
# Checks: each returns a list of problems (empty when the deployment is right), so the tests can
# also prove that they catch a broken copy.
# ------------------------------------------------------------------------------------------------


def schema_problems(compose: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    ]


def service_problems(compose: dict[str, Any]) -> list[str]:
    services = compose.get("services", {})
    problems = [f"service {name} is missing" for name in REQUIRED_SERVICES if name not in services]
    for name, command in REQUIRED_SERVICES.items():
        if command and name in services and services[name].get("command") != command:
            problems.append(
                f"{name}: command is {services[name].get('command')!r}, not {command!r}"
            )
    return problems


def airflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if n.startswith("airflow-")}


def celery_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in airflow_services(compose).items():
        env = service_environment(service)
        if env.get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
            problems.append(
                f"{name}: AIRFLOW__CORE__EXECUTOR is {env.get('AIRFLOW__CORE__EXECUTOR')!r}"
            )
        if not env.get("AIRFLOW__CELERY__BROKER_URL", "").startswith("redis://"):
            problems.append(f"{name}: the Celery broker is not Redis")
        if not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").startswith("postgresql"):
            problems.append(f"{name}: the metadata database is not PostgreSQL")
        if not env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "").startswith(
            "http://airflow-apiserver:8080/"
        ):
            problems.append(f"{name}: the Execution API URL does not point at airflow-apiserver")
    return problems


def _is_required_reference(value: str) -> bool:
    refs = references(value)
    return len(refs) == 1 and refs[0][1] in (":?", "?") and _TOKEN.fullmatch(value) is not None


def literal_secret_problems(compose_text: str) -> list[str]:
    """Secrets must be `${NAME:?...}` references: no literal value and no default value."""
    raw = yaml.safe_load(compose_text)
    problems = []
    for name, op, arg in compose_references(compose_text):
        if SECRET_NAME.search(name) and op in (":-", "-") and arg:
            problems.append(f"${{{name}}} has a default value, i.e. a secret in the file")
    for service_name, service in raw.get("services", {}).items():
        for key, value in service_environment(service).items():
            if SECRET_NAME.search(key) and not _is_required_reference(value):
                problems.append(f"{service_name}: {key} is not a required ${{...:?}} reference")
            for match in _CREDENTIALS_IN_URL.finditer(value):
                if not _is_required_reference(match.group("password")):
                    problems.append(f"{service_name}: {key} has a literal password in its URL")
    return problems


def image_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        if "build" in service:
            continue  # pinned by the Dockerfile's FROM (see test_dockerfile_*)
        image = service.get("image")
        if not image:
            problems.append(f"{name}: neither image nor build")
            continue
        reference = image.split("@", 1)[0]
        last = reference.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        if not tag and "@sha256:" not in image:
            problems.append(f"{name}: image {image!r} has no tag")
        elif tag == "latest":
            problems.append(f"{name}: image {image!r} uses the `latest` tag")
    return problems


def variables_in_code(root: Path) -> set[str]:
    """FLYWHEEL_* names the code reads: quoted in Python, or `${...}` in YAML (Feast config)."""
    pattern = re.compile(r"(?:[\"']|\$\{)(FLYWHEEL_[A-Z0-9_]+)")
    found: set[str] = set()
    for folder in CODE_DIRS:
        for path in (root / folder).rglob("*"):
            if path.suffix in (".py", ".yaml", ".yml") and path.is_file():
                found.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return found


def documentation_problems(
    compose_text: str, env_text: str, code_variables: Collection[str] = ()
) -> list[str]:
    active, commented, malformed = parse_env_file(env_text)
    problems = [f".env.example: not KEY=value: {line!r}" for line in malformed]
    for name in sorted({name for name, _, _ in compose_references(compose_text)}):
        if name not in active:
            problems.append(
                f"${{{name}}} is used by docker-compose.yaml but not set in .env.example"
            )
    for name in sorted((FLYWHEEL_VARIABLES | set(code_variables)) - set(active) - commented):
        problems.append(f"{name} is not documented in .env.example")
    lines = env_text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"[A-Za-z_][A-Za-z0-9_]*=", line):
            previous = lines[index - 1].strip() if index else ""
            if not previous.startswith("#") or len(previous) < 5:
                problems.append(f".env.example: {line.split('=')[0]} has no comment line above it")
    return problems


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def env_text() -> str:
    return ENV_EXAMPLE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def env_example(env_text: str) -> dict[str, str]:
    return parse_env_file(env_text)[0]


@pytest.fixture(scope="module")
def compose(compose_text: str, env_example: dict[str, str]) -> dict[str, Any]:
    return load_compose(compose_text, env_example)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------
# The deployment
# ------------------------------------------------------------------------------------------------


def test_schema_is_the_compose_specification(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft-07/schema"
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)


def test_env_example_resolves_every_required_variable(
    compose_text: str, env_example: dict[str, str]
) -> None:
    # what `docker compose --env-file .env.example config` needs; raises with the variable's name
    load_compose(compose_text, env_example)


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert schema_problems(compose, schema) == []


def test_every_required_service_exists_with_its_command(compose: dict[str, Any]) -> None:
    assert service_problems(compose) == []


def test_airflow_services_run_celery_on_postgres_and_redis(compose: dict[str, Any]) -> None:
    assert {"airflow-apiserver", "airflow-worker"} <= set(airflow_services(compose))
    assert celery_problems(compose) == []


def test_no_literal_secret_in_the_compose_file(compose_text: str) -> None:
    assert literal_secret_problems(compose_text) == []


def test_airflow_secrets_are_required_from_env(compose_text: str) -> None:
    raw = yaml.safe_load(compose_text)
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker"):
        env = service_environment(raw["services"][name])
        for key in (
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__API__SECRET_KEY",
        ):
            assert _is_required_reference(env[key]), (name, key, env.get(key))
            assert references(env[key])[0][0] == key


def test_redis_requires_the_password_every_client_sends(
    compose_text: str, env_example: dict[str, str]
) -> None:
    """redis runs with --requirepass REDIS_PASSWORD, its health check authenticates, and every Redis client
    (Celery's broker URL, Feast's online store in every Flywheel container, the serving endpoint) carries it."""
    compose = load_compose(compose_text, {**env_example, "REDIS_PASSWORD": "s3cret-Redis_pw"})
    services = compose["services"]
    redis_ = services["redis"]
    assert redis_["command"] == ["redis-server", "--requirepass", "s3cret-Redis_pw"]
    assert service_environment(redis_)["REDIS_PASSWORD"] == "s3cret-Redis_pw"
    assert "$REDIS_PASSWORD" in redis_["healthcheck"]["test"][-1]   # run for real in tests/unit
    brokers = feasts = 0
    for name, service in services.items():
        env = service_environment(service)
        if "AIRFLOW__CELERY__BROKER_URL" in env:
            brokers += 1
            assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:s3cret-Redis_pw@redis:6379/0", name
        if "FLYWHEEL_FEAST_REDIS" in env:
            feasts += 1
            assert env["FLYWHEEL_FEAST_REDIS"] == "redis:6379,db=1,password=s3cret-Redis_pw", name
    assert brokers >= len(airflow_services(compose)) and "FLYWHEEL_FEAST_REDIS" in service_environment(
        services["flywheel-serving"]
    )
    assert feasts >= brokers
    env = {k: v for k, v in env_example.items() if k != "REDIS_PASSWORD"}
    with pytest.raises(InterpolationError, match="REDIS_PASSWORD"):
        load_compose(compose_text, env)


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    assert image_problems(compose) == []


def test_every_compose_variable_and_flywheel_variable_is_documented(
    compose_text: str, env_text: str
) -> None:
    code_variables = variables_in_code(ROOT)
    assert documentation_problems(compose_text, env_text, code_variables) == []


def test_airflow_init_prepares_what_the_dags_need(compose: dict[str, Any]) -> None:
    """The DAGs' pools exist and the Feast definitions are registered, as `flywheel init` does."""
    script = "\n".join(compose["services"]["airflow-init"]["command"])
    dag_code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "dags").glob("*.py"))
    pools = set(re.findall(r"\b[A-Z_]*POOL\s*=\s*[\"']([^\"']+)[\"']", dag_code))
    pools |= set(re.findall(r"\bpool\s*=\s*[\"']([^\"']+)[\"']", dag_code))
    assert [pool for pool in sorted(pools) if f"airflow pools set {pool} " not in script] == []
    assert "flywheel.cli feast-apply" in script
    assert script.index("/entrypoint airflow version") < script.index("feast-apply")


def test_airflow_init_creates_one_account_per_role_from_env(compose: dict[str, Any], compose_text: str) -> None:
    """Logins with roles (FAB): airflow-init creates the roles and the accounts of flywheel/access.py once the
    database is migrated, each with a password that .env must set (no default)."""
    from flywheel.access import ACCOUNTS, FAB_AUTH_MANAGER

    init = compose["services"]["airflow-init"]
    script = "\n".join(init["command"])
    assert script.index("/entrypoint airflow version") < script.index("python -m flywheel.access")
    env = service_environment(yaml.safe_load(compose_text)["services"]["airflow-init"])
    for acc in ACCOUNTS:
        assert _is_required_reference(env[acc.env_var]), acc
        assert references(env[acc.env_var])[0][0] == acc.env_var
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker"):
        assert service_environment(compose["services"][name])["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER


def test_env_example_ships_placeholders_not_secrets(env_example: dict[str, str]) -> None:
    secrets_ = {key: value for key, value in env_example.items() if SECRET_NAME.search(key)}
    assert {"AIRFLOW__CORE__FERNET_KEY", "FLYWHEEL_ADMIN_PASSWORD", "POSTGRES_PASSWORD"} <= set(
        secrets_
    )
    assert {k: v for k, v in secrets_.items() if not v.startswith(PLACEHOLDER_PREFIX)} == {}


def test_airflow_init_refuses_placeholder_secrets(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    script = "\n".join(compose["services"]["airflow-init"]["command"])
    placeholders = [k for k, v in env_example.items() if v.startswith(PLACEHOLDER_PREFIX)]
    assert placeholders
    assert [name for name in placeholders if name not in script] == []


def test_airflow_containers_share_flywheel_home_and_mount_the_project(
    compose: dict[str, Any],
) -> None:
    for name, service in airflow_services(compose).items():
        home = service_environment(service).get("FLYWHEEL_HOME")
        assert home, name
        volumes = service.get("volumes", [])
        named = [v for v in volumes if v.endswith(f":{home}") and not v.startswith((".", "/"))]
        assert named, f"{name}: no named volume at FLYWHEEL_HOME={home}"
        assert named[0].split(":")[0] in compose["volumes"]
        sources = {v.split(":")[0] for v in volumes}
        assert {f"./{d}" for d in PROJECT_MOUNTS} <= sources, name


def test_mlflow_uses_postgres_and_minio(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mlflow = service_environment(services["mlflow"])
    assert re.fullmatch(
        r"postgresql(\+\w+)?://[^@]+@postgres:5432/mlflow", mlflow["MLFLOW_BACKEND_STORE_URI"]
    )
    assert mlflow["MLFLOW_DEFAULT_ARTIFACT_ROOT"] == "s3://flywheel-mlflow/"
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    worker = service_environment(services["airflow-worker"])
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["FLYWHEEL_MLFLOW_ARTIFACT_ROOT"] == "s3://flywheel-mlflow/"
    assert "mb --ignore-existing flywheel/flywheel-mlflow" in "\n".join(
        services["minio-init"]["command"]
    )
    databases = compose["configs"]["flywheel-databases"]["content"]
    assert "CREATE DATABASE mlflow;" in databases and "CREATE DATABASE feast;" in databases


def test_email_goes_to_mailpit(compose: dict[str, Any]) -> None:
    env = service_environment(compose["services"]["airflow-worker"])
    conn = json.loads(env["AIRFLOW_CONN_FLYWHEEL_SMTP"])
    assert (conn["conn_type"], conn["host"], conn["port"]) == ("smtp", "mailpit", 1025)
    assert conn["extra"]["disable_ssl"] is True and conn["extra"]["disable_tls"] is True


def test_healthchecks_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    missing = sorted(name for name in HEALTHCHECKED if "healthcheck" not in services[name])
    assert missing == []
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for target, spec in depends.items() if isinstance(depends, dict) else []:
            assert target in services, f"{name} depends on unknown service {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker"):
        assert (
            services[name]["depends_on"]["airflow-init"]["condition"]
            == "service_completed_successfully"
        )


def test_dockerfile_from_is_pinned_to_the_required_airflow() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert froms, "Dockerfile has no FROM"
    pinned = re.compile(r"apache/airflow:(?P<version>\d+\.\d+\.\d+)-python(?P<python>\d+\.\d+)")
    match = pinned.fullmatch(froms[0])
    assert match, f"FROM {froms[0]} is not apache/airflow:<x.y.z>-python<x.y>"
    required = re.search(r"^apache-airflow==(\S+)$", REQUIREMENTS.read_text(), flags=re.MULTILINE)
    assert required and match["version"] == required.group(1), "image and requirements.txt disagree"
    assert match["python"] == "3.11"


def test_dockerfile_installs_requirements_and_the_package() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    instructions = re.sub(r"\\\n", " ", dockerfile)
    assert re.search(r"^COPY\s.*\brequirements\.txt\b", instructions, flags=re.MULTILINE)
    assert re.search(
        r"^RUN\s.*pip install --no-cache-dir .*-r \S*requirements\.txt",
        instructions,
        flags=re.MULTILINE,
    )
    assert re.search(
        r"^RUN\s.*pip install --no-cache-dir --no-deps ", instructions, flags=re.MULTILINE
    )
    assert re.search(r"^USER airflow\s*$", instructions, flags=re.MULTILINE), (
        "pip must run as airflow"
    )


# ------------------------------------------------------------------------------------------------
# The checks catch what they are for (each on a broken copy)
# ------------------------------------------------------------------------------------------------


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert (
        interpolate("$$HOME ${SET} $SET ${NOPE:-d} ${EMPTY:-d} ${EMPTY-d}", env) == "$HOME x x d d "
    )
    assert interpolate("${SET:+alt}${NOPE:+alt}", env) == "alt"
    with pytest.raises(InterpolationError, match="NOPE"):
        interpolate("${NOPE:?set it}", env)
    with pytest.raises(InterpolationError, match="EMPTY"):
        interpolate("${EMPTY:?set it}", env)
    assert [name for name, _, _ in references("$${NOT} ${A:?x} $B")] == ["A", "B"]


def test_checks_catch_a_broken_compose_file(
    compose: dict[str, Any], schema: dict[str, Any], compose_text: str, env_text: str
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["mlflow"]["restart_policy"] = "always"  # not a Compose key
    assert schema_problems(broken, schema)

    broken = copy.deepcopy(compose)
    del broken["services"]["airflow-triggerer"]
    broken["services"]["airflow-worker"]["command"] = "worker"
    assert len(service_problems(broken)) == 2

    broken = copy.deepcopy(compose)
    broken["services"]["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    assert celery_problems(broken) == ["airflow-worker: AIRFLOW__CORE__EXECUTOR is 'LocalExecutor'"]

    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["image"] = "redis"
    broken["services"]["mailpit"]["image"] = "axllent/mailpit:latest"
    assert len(image_problems(broken)) == 2

    text = compose_text.replace(
        "${AIRFLOW__CORE__FERNET_KEY:?set AIRFLOW__CORE__FERNET_KEY in .env}", "Zm9vYmFy"
    )
    assert text != compose_text and literal_secret_problems(text)
    text = compose_text.replace(
        "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}@", "airflow@", 1
    )
    assert text != compose_text and literal_secret_problems(text)
    text = compose_text.replace(
        "${AIRFLOW__API__SECRET_KEY:?set", "${AIRFLOW__API__SECRET_KEY:-insecure}${UNUSED:?set"
    )
    assert any("default value" in p for p in literal_secret_problems(text))

    text = compose_text.replace("${AWS_DEFAULT_REGION:-us-east-1}", "${FLYWHEEL_UNDOCUMENTED:-x}")
    assert documentation_problems(text, env_text) == [
        "${FLYWHEEL_UNDOCUMENTED} is used by docker-compose.yaml but not set in .env.example"
    ]
    env_broken = env_text.replace("# FLYWHEEL_FEAST_REDIS=", "# FEAST_REDIS=")
    assert documentation_problems(compose_text, env_broken) == [
        "FLYWHEEL_FEAST_REDIS is not documented in .env.example"
    ]
    assert documentation_problems(compose_text, env_text + "export NOT_COMPOSE = 1\n")


def test_missing_required_secret_stops_the_deployment(
    compose_text: str, env_example: dict[str, str]
) -> None:
    env = {k: v for k, v in env_example.items() if k != "AIRFLOW__API_AUTH__JWT_SECRET"}
    with pytest.raises(InterpolationError, match="AIRFLOW__API_AUTH__JWT_SECRET"):
        load_compose(compose_text, env)


# ------------------------------------------------------------------------------------------------
# The native scale-out topology (`make up-services`) runs what the compose file runs
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def native_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from flywheel import runtime
    from pipelines.layout import Layout

    for name in [k for k in __import__("os").environ if k.startswith(("AIRFLOW__", "FLYWHEEL_", "AWS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FLYWHEEL_TOPOLOGY", "services")
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    lay, ports = Layout(tmp_path), runtime.Ports()
    env = runtime.environment(lay, ports)
    return {"env": env, "processes": set(runtime._commands(env, lay, ports))}


def test_every_compose_service_is_covered_by_the_native_topology(
    compose: dict[str, Any], native_services: dict[str, Any]
) -> None:
    from flywheel.runtime import COMPOSE_NATIVE, SERVICES

    assert set(compose["services"]) == set(COMPOSE_NATIVE), (
        "docker-compose.yaml and flywheel.runtime.COMPOSE_NATIVE must name the same services"
    )
    native = {v for v in COMPOSE_NATIVE.values() if v in SERVICES}
    # every process the native topology starts stands for a compose service, and the reverse
    assert native_services["processes"] == native, native_services["processes"] ^ native
    assert {"worker", "s3", "mlflow", "smtp"} <= native


def _scheme(url: str) -> str:
    return url.split("://", 1)[0]


@pytest.mark.parametrize(
    "variable",
    [
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "FLYWHEEL_MLFLOW_BACKEND_URI",
        "FLYWHEEL_MLFLOW_ARTIFACT_ROOT",
        "FLYWHEEL_DATA_URI",
        "FLYWHEEL_FEAST_REGISTRY",
    ],
)
def test_native_services_use_the_same_kind_of_store_as_compose(
    compose: dict[str, Any], native_services: dict[str, Any], variable: str
) -> None:
    container = service_environment(compose["services"]["airflow-worker"])
    assert _scheme(native_services["env"][variable]) == _scheme(container[variable]), variable


@pytest.mark.parametrize(
    "variable", ["AIRFLOW__CORE__EXECUTOR", "FLYWHEEL_FEAST_ONLINE_STORE", "FLYWHEEL_TOPOLOGY",
                 "AIRFLOW__CORE__AUTH_MANAGER"]
)
def test_native_services_choose_the_same_engines_as_compose(
    compose: dict[str, Any], native_services: dict[str, Any], variable: str
) -> None:
    container = service_environment(compose["services"]["airflow-worker"])
    assert native_services["env"][variable] == container[variable]


def test_native_services_reach_s3_through_one_endpoint(native_services: dict[str, Any]) -> None:
    env = native_services["env"]
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert env["AWS_SECRET_ACCESS_KEY"] and "change-me" not in env["AWS_SECRET_ACCESS_KEY"]
