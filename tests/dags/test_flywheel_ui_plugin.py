"""The Flywheel page's plugin (plugins/flywheel_ui.py): loads light, and no route escapes Airflow's auth.

The behaviour (401 without a login, 404 for traversal, the page in a browser) is asserted on a running
Airflow in tests/integration/test_ui.py; this checks the wiring without one.
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
    assert len(routes) == 7   # the index, a model, rollback, override, a dataset, the DAG tab, files
    for r in routes:
        calls = _calls(r.dependant)
        assert get_user in calls, r.path
        names = {getattr(c, "__qualname__", "") for c in calls}
        # every route but the index (which filters by the same check per model/dataset) checks a DAG's access
        assert r.path == "/" or any("requires_access_dag" in n or n.endswith(("check", "_access")) for n in names), \
            (r.path, names)
        if "POST" in r.methods:
            assert any(n.endswith("same_origin") for n in names), r.path
