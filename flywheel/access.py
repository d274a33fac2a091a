"""Who may do what in Airflow: the roles of a team deployment, declared once.

The scale-out topology (`FLYWHEEL_TOPOLOGY=services`, docker-compose.yaml) runs Airflow's FAB auth manager
with three accounts, one per role, whose passwords come from the environment or are generated per install:

| account  | role    | may                                                                               |
|----------|---------|-----------------------------------------------------------------------------------|
| `viewer` | Viewer  | read every DAG, run, log, asset and the Flywheel pages; trigger nothing            |
| `oncall` | OnCall  | what a viewer may, and trigger `rollback__<model>` and `override__<model>` (only)  |
| `admin`  | Admin   | everything, including users and roles (Security menu), connections, variables     |

The on-call role's two extra rights are declared on the two DAGs themselves (`access_control`, see
`oncall_dag_access`), so a model added later gets them when its DAGs are parsed. More people: an admin adds
users in the UI (Security → List Users) with one of these roles.

The embedded default keeps Airflow's SimpleAuthManager with the one `admin` account (README, Security).
`python -m flywheel.access` (run by `flywheel init` in an Airflow environment) creates the roles and the
accounts, and resets a password that changed; it prints nothing secret.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

ADMIN, ONCALL, VIEWER = "Admin", "OnCall", "Viewer"   # FAB role names (Admin and Viewer are FAB's own)


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    secret: str     # file name under $FLYWHEEL_HOME/secrets/ when generated
    env_var: str    # where a deployment passes the password instead


ACCOUNTS = (
    Account("admin", ADMIN, "admin_password", "FLYWHEEL_ADMIN_PASSWORD"),
    Account("oncall", ONCALL, "oncall_password", "FLYWHEEL_ONCALL_PASSWORD"),
    Account("viewer", VIEWER, "viewer_password", "FLYWHEEL_VIEWER_PASSWORD"),
)


def account(username: str) -> Account:
    return next(a for a in ACCOUNTS if a.username == username)


def uses_fab(auth_manager: str | None) -> bool:
    return bool(auth_manager) and "FabAuthManager" in str(auth_manager)


def oncall_dag_access() -> dict[str, dict[str, set[str]]]:
    """The `access_control` of `rollback__<model>` and `override__<model>`: the on-call role may read them and
    trigger runs of them (FAB checks `can_edit` on the DAG and `can_create` on its runs for a trigger). Only the
    FAB auth manager reads it; the SimpleAuthManager ignores it."""
    return {ONCALL: {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}}


def sync(passwords: dict[str, str]) -> dict[str, str]:
    """Create the roles (OnCall = Viewer's permissions; its DAG rights come from the DAGs) and one account per role
    with the given passwords (username -> password); an existing account gets its role and, when the password
    changed, the new one. Needs Airflow's environment with the FAB auth manager. Returns username -> what was done."""
    # every password first: a missing one stops before FAB's application is built (seconds) or a role changes
    for acc in ACCOUNTS:
        if not passwords.get(acc.username):
            raise ValueError(f"no password for Airflow account {acc.username!r}: set {acc.env_var}")
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    done: dict[str, str] = {}
    with get_application_builder() as appbuilder:
        sm: Any = appbuilder.sm
        sm.sync_roles()   # FAB's own roles (Admin, Viewer, User, Op, Public) and their permissions
        sm.bulk_sync_roles([{"role": ONCALL, "perms": list(sm.VIEWER_PERMISSIONS)}])
        for acc in ACCOUNTS:
            password = passwords[acc.username]
            role = sm.find_role(acc.role)
            existing = sm.find_user(username=acc.username)
            if existing is None:
                made = sm.add_user(acc.username, acc.username, "Flywheel", f"{acc.username}@flywheel.invalid",
                                   role, password)
                if not made:
                    raise RuntimeError(f"FAB refused to create the Airflow account {acc.username!r} (see the log)")
                done[acc.username] = f"created ({acc.role})"
                continue
            changes = []
            if [r.name for r in existing.roles] != [acc.role]:
                existing.roles = [role]
                sm.update_user(existing)
                changes.append(f"role {acc.role}")
            if not sm.check_password(acc.username, password):
                sm.reset_password(existing.id, password)
                changes.append("password reset")
            done[acc.username] = ", ".join(changes) or "unchanged"
    return done


def main() -> int:
    """`python -m flywheel.access`: the passwords come in FLYWHEEL_{ADMIN,ONCALL,VIEWER}_PASSWORD."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    passwords = {a.username: os.environ.get(a.env_var, "") for a in ACCOUNTS}
    try:
        done = sync(passwords)
    except (ValueError, RuntimeError) as exc:
        print(f"flywheel.access: {exc}", file=sys.stderr)  # noqa: T201 - a command's message for people
        return 2
    for username, what in done.items():
        print(f"Airflow account {username} ({account(username).role}): {what}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
