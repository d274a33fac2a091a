"""The Flywheel page's plugin (plugins/flywheel_ui.py): loads light, and no route escapes Airflow's auth.

The behaviour of the data pages (401 without a login, 404 for traversal, the page in a browser) is asserted on
a running Airflow in tests/integration/test_ui.py; this checks the wiring without one, and the runbook pages
(no DAG, no MLflow behind them) through the app itself with Airflow's real auth manager and a real token.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

REPO = Path(__file__).resolve().parents[2]


def test_loading_the_plugin_imports_neither_fastapi_nor_the_board():
    code = ("import sys, json; sys.path.insert(0, 'plugins'); import flywheel_ui; "
            "print(json.dumps({'loaded': [m for m in ('fastapi', 'mlflow', 'pipelines.board', "
            "'airflow.api_fastapi.core_api.security') if m in sys.modules], "
            "'views': flywheel_ui.FlywheelUI.external_views, "
            "'apps': [{k: v for k, v in a.items() if k != 'app'} for a in flywheel_ui.FlywheelUI.fastapi_apps]}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["loaded"] == []
    assert {(v["url_route"], v["destination"]) for v in res["views"]} == {("flywheel", "nav"), ("flywheel-dag", "dag")}
    assert [a["url_prefix"] for a in res["apps"]] == ["/flywheel"]


def _calls(dependant) -> list:
    out = []
    for d in dependant.dependencies:
        out.append(d.call)
        out += _calls(d)
    return out


def test_every_route_depends_on_airflow_auth_and_a_dag_check():
    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from flywheel_ui import build_app
    finally:
        sys.path.remove(str(REPO / "plugins"))
    from airflow.api_fastapi.core_api.security import get_user

    routes = [r for r in build_app().routes if hasattr(r, "dependant")]
    # the index, a model, rollback, override, a dataset, the DAG tab, files, the runbooks' index, a runbook
    assert len(routes) == 9
    for r in routes:
        calls = _calls(r.dependant)
        assert get_user in calls, r.path
        names = {getattr(c, "__qualname__", "") for c in calls}
        # every route but the index (which filters by the same check per model/dataset) and the runbooks (no
        # data) checks a DAG's access
        checked = any("requires_access_dag" in n or n.endswith(("check", "_access")) for n in names)
        assert checked or r.path in ("/", "/runbooks/", "/runbooks/{name}"), (r.path, names)
        if "POST" in r.methods:
            assert any(n.endswith("same_origin") for n in names), r.path


# ---------------------------------------------------------------------------------------------- the runbooks


@pytest.fixture(scope="module")
def ui():
    """The app mounted at /flywheel as Airflow mounts it, Airflow's configured auth manager, and a viewer's token."""
    from airflow import settings
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.revoked_token import RevokedToken
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from flywheel_ui import PREFIX, build_app
    finally:
        sys.path.remove(str(REPO / "plugins"))
    RevokedToken.__table__.create(settings.engine, checkfirst=True)   # a token is checked against it
    token = create_auth_manager().generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))
    airflow = FastAPI()
    airflow.mount(PREFIX, build_app())
    with TestClient(airflow, base_url="http://127.0.0.1:8080") as client:
        yield client, token


def _books() -> dict:
    from pipelines.runbooks import list_runbooks

    return list_runbooks()


def test_runbooks_need_a_login(ui):
    client, _ = ui
    for path in ("/flywheel/runbooks/", "/flywheel/runbooks/drift-alarm", "/flywheel/runbooks/no-such-runbook"):
        r = client.get(path, headers={"Accept": "application/json"})
        assert r.status_code == 401, path
        assert "Drift alarm" not in r.text
        browser = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
        assert browser.status_code == 302 and "login" in browser.headers["location"], path
    assert client.get("/flywheel/runbooks/drift-alarm", cookies={"_token": "forged"}).status_code in (401, 403)


def test_a_logged_in_user_reads_every_runbook_and_follows_its_links(ui):
    import html
    import re

    client, token = ui
    auth = {"Authorization": f"Bearer {token}"}
    index = client.get("/flywheel/runbooks/", headers=auth)
    assert index.status_code == 200 and "Content-Security-Policy" in index.headers
    books = _books()
    assert len(books) >= 7
    for name, book in books.items():
        assert f"href='/flywheel/runbooks/{name}'>{html.escape(book.heading)}</a>" in index.text
        page = client.get(f"/flywheel/runbooks/{name}", headers=auth)
        assert page.status_code == 200, name
        assert f"<h1>{html.escape(book.heading)}</h1>" in page.text
        for href in re.findall(r'href="(/flywheel/runbooks/[^"#]*)', page.text):   # the links between runbooks
            assert client.get(href, headers=auth).status_code == 200, (name, href)
    # the browser's session cookie works the same; the name of the file works too
    client.cookies.set("_token", token)
    try:
        page = client.get("/flywheel/runbooks/automatic-rollback.md")
    finally:
        client.cookies.clear()
    assert page.status_code == 200 and books["automatic-rollback"].heading in page.text


def test_an_unknown_runbook_or_a_path_out_of_the_folder_is_404(ui):
    client, token = ui
    auth = {"Authorization": f"Bearer {token}", "Accept": "text/html"}
    unknown = client.get("/flywheel/runbooks/no-such-runbook", headers=auth)
    assert unknown.status_code == 404 and "There is no runbook called no-such-runbook" in unknown.text
    assert all(f"/flywheel/runbooks/{name}" in unknown.text for name in _books())   # the ones to choose from
    secret = (REPO / "pyproject.toml").read_text()[:40]
    for path in ("/flywheel/runbooks/..%2FREADME", "/flywheel/runbooks/..%2F..%2Fpyproject.toml",
                 "/flywheel/runbooks/..%2F..%2Fpyproject", "/flywheel/runbooks/%2E%2E%2Fdrift-alarm",
                 "/flywheel/runbooks/README", "/flywheel/runbooks/%2E%2E", "/flywheel/runbooks/%2Fetc%2Fpasswd"):
        r = client.get(path, headers=auth, follow_redirects=False)
        assert r.status_code == 404, (path, r.status_code)
        assert secret not in r.text and "root:" not in r.text, path
