"""flywheel.access against a real Airflow metadata database (SQLite) with the FAB auth manager: the roles and the
three accounts are created by `python -m flywheel.access` (what `flywheel init` and compose's airflow-init run), a
second run changes nothing, a password changed in the environment is the one that works afterwards, and a missing
password stops it with the variable to set. What each role may do through the API is shown on the running
scale-out stack (tests/services/test_scaleout.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from werkzeug.security import check_password_hash

from flywheel.access import ACCOUNTS, FAB_AUTH_MANAGER, ONCALL

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("fab")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "AIRFLOW__API_AUTH__JWT_SECRET": "t" * 32}
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env, home / "airflow.db"


def _sync(env: dict[str, str], passwords: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flywheel.access"], env={**env, **passwords}, capture_output=True,
                          text=True, timeout=300)


def _accounts(db) -> dict[str, tuple[list[str], str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT u.username, r.name, u.password FROM ab_user u JOIN ab_user_role ur "
                            "ON ur.user_id = u.id JOIN ab_role r ON r.id = ur.role_id ORDER BY u.username").fetchall()
    out: dict[str, tuple[list[str], str]] = {}
    for username, role, pwhash in rows:
        out.setdefault(username, ([], pwhash))[0].append(role)
    return out


def test_roles_and_accounts_are_created_once_and_a_changed_password_is_reset(airflow_env):
    env, db = airflow_env
    passwords = {a.env_var: f"{a.username}-first-pw" for a in ACCOUNTS}
    first = _sync(env, passwords)
    assert first.returncode == 0, first.stderr[-2000:]
    assert [line for line in first.stdout.splitlines() if line.startswith("Airflow account")] == [
        "Airflow account admin (Admin): created (Admin)", "Airflow account oncall (OnCall): created (OnCall)",
        "Airflow account viewer (Viewer): created (Viewer)"]
    made = _accounts(db)
    assert {u: roles for u, (roles, _) in made.items()} == {"admin": ["Admin"], "oncall": [ONCALL],
                                                            "viewer": ["Viewer"]}
    assert all(check_password_hash(made[a.username][1], f"{a.username}-first-pw") for a in ACCOUNTS)
    assert not any("first-pw" in text for text in (first.stdout, first.stderr))   # no password in the output

    # OnCall reads what Viewer reads (its trigger rights come from the two DAGs' access_control)
    with sqlite3.connect(db) as conn:
        def perms(role: str) -> set[tuple[str, str]]:
            return set(conn.execute(
                "SELECT a.name, v.name FROM ab_role r JOIN ab_permission_view_role pvr ON pvr.role_id = r.id "
                "JOIN ab_permission_view pv ON pv.id = pvr.permission_view_id JOIN ab_permission a "
                "ON a.id = pv.permission_id JOIN ab_view_menu v ON v.id = pv.view_menu_id WHERE r.name = ?", (role,)))
        assert perms(ONCALL) == perms("Viewer") and ("can_read", "DAGs") in perms(ONCALL)
        assert ("can_create", "DAG Runs") not in perms(ONCALL)

    again = _sync(env, passwords)
    assert again.returncode == 0 and "Airflow account viewer (Viewer): unchanged" in again.stdout, again.stdout

    rotated = _sync(env, {**passwords, "FLYWHEEL_VIEWER_PASSWORD": "viewer-second-pw"})
    assert "Airflow account viewer (Viewer): password reset" in rotated.stdout, rotated.stdout
    after = _accounts(db)
    assert check_password_hash(after["viewer"][1], "viewer-second-pw")
    assert not check_password_hash(after["viewer"][1], "viewer-first-pw")
    assert after["admin"][1] == made["admin"][1]   # the others are untouched


def test_a_missing_password_stops_with_the_variable_to_set_and_changes_nothing(airflow_env):
    env, db = airflow_env
    before = _accounts(db)
    out = _sync(env, {"FLYWHEEL_ADMIN_PASSWORD": "a-pw", "FLYWHEEL_ONCALL_PASSWORD": "o-pw"})
    assert out.returncode == 2
    assert "no password for Airflow account 'viewer': set FLYWHEEL_VIEWER_PASSWORD" in out.stderr
    # the two passwords that were given are not applied either: the accounts stay as a whole as they were
    assert _accounts(db) == before
