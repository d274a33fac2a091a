"""The Flywheel page inside the Airflow UI (plugins/flywheel_ui.py), on the played short scenario.

A real headless Chromium (Debian's `chromium`, driven by Playwright through `executable_path`: Playwright
never downloads a browser here) logs in, opens the page, sees every model's champion, the gate timeline
and the charts, and rolls a champion back with a reason; MLflow shows the alias moved, audited as the
user who clicked. Without a login every route answers 401 or the login redirect; `..` and absolute
paths in file URLs answer 404.

Order: this test CHANGES a champion (a rollback, preceded by an override when the model has no previous
champion). Test files run in name order, so it runs after test_loop.py and test_promotion.py, which read
the champions the loop left; it reads the aliases as they are when it starts (whatever ran before), so it
holds after them too.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from loop_outcomes import airflow_api, mlflow_client

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FLYWHEEL_CHROMIUM", "/usr/bin/chromium")
MODELS = ("fraud", "spend", "movie_rating")
DATASETS = ("transactions", "ratings")
# where the page's screenshots go: the test's own folder, or the README's pictures when asked
# (FLYWHEEL_SCREENSHOTS=docs/img): a test run leaves the working tree as it found it
SHOTS_TO = os.environ.get("FLYWHEEL_SCREENSHOTS")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _call(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None):
    """(status, headers, body) without following redirects."""
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with opener.open(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _routes(demo) -> list[tuple[str, str]]:
    """One concrete URL per route of the app, checked against the app's own route list (a new route without
    an entry here fails the test)."""
    lay = demo["layout"]
    m = next(m for m in MODELS if Path(lay.reports(m), "index.jsonl").is_file())   # a model the monitor judged
    window = json.loads(Path(lay.reports(m), "index.jsonl").read_text().splitlines()[0])["key"]
    batch = sorted(p.stem for p in Path(lay.validation_reports("transactions")).glob("2*.json"))[0]
    urls = {
        ("GET", "/"): "/flywheel/",
        ("GET", "/models/{model}"): f"/flywheel/models/{m}",
        ("POST", "/models/{model}/rollback"): f"/flywheel/models/{m}/rollback",
        ("POST", "/models/{model}/override"): f"/flywheel/models/{m}/override",
        ("GET", "/datasets/{dataset}"): "/flywheel/datasets/transactions",
        ("GET", "/dags/{dag_id}"): f"/flywheel/dags/train__{m}",
        ("GET", "/files/{area}/{owner}/{path:path}"): [
            f"/flywheel/files/reports/{m}/{window}.html", f"/flywheel/files/cards/{m}/1",
            "/flywheel/files/docs/transactions/index.html", f"/flywheel/files/validation/transactions/{batch}.json"],
        ("GET", "/runbooks/"): "/flywheel/runbooks/",
        ("GET", "/runbooks/{name}"): "/flywheel/runbooks/automatic-rollback",
    }
    from flywheel_ui import build_app

    declared = {(m, r.path) for r in build_app().routes if hasattr(r, "methods") for m in r.methods - {"HEAD"}}
    assert declared == set(urls), declared ^ set(urls)
    out = []
    for (method, _), u in sorted(urls.items()):
        out += [(method, x) for x in ([u] if isinstance(u, str) else u)]
    return out


@pytest.fixture(scope="module")
def plugin_path():
    import sys

    sys.path.insert(0, str(REPO / "plugins"))
    yield
    sys.path.remove(str(REPO / "plugins"))


def test_every_route_needs_a_login(demo, plugin_path):
    base = f"http://127.0.0.1:{demo['ports'].airflow}"
    for method, path in _routes(demo):
        for accept in ("application/json", "text/html"):
            body = b"reason=x&version=1&action=promote" if method == "POST" else None
            status, headers, _ = _call(base + path, method, {"Accept": accept, "Origin": base,
                                                             "Content-Type": "application/x-www-form-urlencoded"},
                                       body)
            if status == 302:
                assert method == "GET" and accept == "text/html", (method, path, accept)
                assert urlparse(headers["location"]).path.startswith("/auth/login"), headers["location"]
            else:
                assert status == 401, (method, path, accept, status)
        # a forged token is no login either
        status, _, _ = _call(base + path, method, {"Authorization": "Bearer not-a-token"}, b"" if method == "POST"
                             else None)
        assert status in (401, 403), (method, path, status)
    # the plugin is loaded and its entries are in the UI (nav + DAG tab)
    plugins = airflow_api(demo).get("/plugins")["plugins"]
    ui = next(p for p in plugins if p["name"] == "flywheel_ui")
    assert {(v["url_route"], v["destination"]) for v in ui["external_views"]} == {("flywheel", "nav"),
                                                                                  ("flywheel-dag", "dag")}


def test_files_stay_inside_flywheel_folders(demo, plugin_path):
    base = f"http://127.0.0.1:{demo['ports'].airflow}"
    auth = {"Authorization": f"Bearer {airflow_api(demo).token()}"}
    for _, path in _routes(demo):
        if "/files/" in path:
            status, headers, body = _call(base + path, headers=auth)
            assert status == 200 and body, path
            assert "sandbox" in headers["content-security-policy"], path
    secret = "secrets/admin_password"
    for path in ("/flywheel/files/reports/fraud/../../../" + secret,
                 "/flywheel/files/reports/spend/../../" + secret,
                 "/flywheel/files/reports/fraud/..%2F..%2F..%2F" + secret.replace("/", "%2F"),
                 "/flywheel/files/docs/transactions/%2E%2E/%2E%2E/%2E%2E/%2E%2E/" + secret,
                 "/flywheel/files/reports/fraud//etc/passwd",
                 "/flywheel/files/reports/fraud/%2Fetc%2Fpasswd",
                 f"/flywheel/files/docs/transactions/{demo['home']}/{secret}",
                 "/flywheel/files/cards/fraud/..%2F1",
                 "/flywheel/files/reports/nobody/index.jsonl",
                 "/flywheel/files/elsewhere/fraud/x"):
        status, _, body = _call(base + path, headers=auth)
        assert status == 404, (path, status, body[:200])
        assert b"admin" not in body and b"root:" not in body


def _champions(demo) -> dict[str, dict[str, str]]:
    client = mlflow_client(demo)
    return {m: dict(client.get_registered_model(f"flywheel-{m}").aliases) for m in MODELS}


def test_the_page_in_a_browser_and_a_rollback_by_its_button(demo, tmp_path):
    from playwright.sync_api import sync_playwright

    from flywheel.runtime import admin_password
    from pipelines.layout import Layout

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).is_file(), \
        f"{CHROMIUM} missing: `make browser` (apt-get install -y chromium) installs it"
    base = f"http://127.0.0.1:{demo['ports'].airflow}"
    aliases = _champions(demo)
    hosts: set[str] = set()
    shots = REPO / SHOTS_TO if SHOTS_TO else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: hosts.add(urlparse(r.url).netloc) if r.url.startswith("http") else None)
            page.goto(f"{base}/auth/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", admin_password(Layout(demo["home"])))
            page.keyboard.press("Enter")
            page.wait_for_url(lambda u: "/auth/login" not in u, timeout=60_000)

            # the nav entry: the page in Airflow's UI (an iframe of the same origin, Airflow's session cookie)
            page.goto(f"{base}/plugin/flywheel")
            frame = page.frame_locator("iframe[title='Flywheel']")
            for m in MODELS:
                cell = frame.locator(f"td.champion[data-model='{m}']")
                cell.wait_for(timeout=120_000)
                want = f"v{aliases[m]['champion']}" if "champion" in aliases[m] else "—"   # as MLflow says
                assert cell.inner_text().strip() == want, m
            for d in DATASETS:
                assert frame.locator("#datasets").get_by_text(d, exact=True).count() == 1, d
            page.screenshot(path=str(shots / "flywheel-index.png"))

            # a model's page: champion, the gate timeline with its checks, the charts
            target = next((m for m in MODELS if aliases[m].get("previous-champion")
                           not in (None, aliases[m].get("champion"))),
                          next(m for m in MODELS if "champion" in aliases[m]))
            page.goto(f"{base}/flywheel/models/{target}")
            champ = aliases[target]["champion"]
            assert page.locator("tr.role[data-role='champion'] td.version").inner_text() == f"v{champ}"
            assert page.locator("#timeline tr.event[data-kind='gate']").count() >= 1
            assert page.locator("#timeline details.checks").count() >= 1
            assert page.locator("#metric-chart svg circle.point").count() >= 1
            assert page.locator("#drift-heatmap svg g.cell").count() >= 1
            page.screenshot(path=str(shots / "flywheel-model.png"), full_page=True)
            page.goto(f"{base}/flywheel/datasets/transactions")
            assert page.locator("tr.batch[data-verdict='accepted']").count() >= 1
            assert page.locator("#rows-chart svg rect.bar").count() >= 1

            # an empty reason and a cross-site form are refused; nothing is triggered
            empty = page.request.post(f"{base}/flywheel/models/{target}/rollback", form={"reason": "  "},
                                      headers={"Origin": base})
            assert empty.status == 400 and "A reason is required" in empty.text()
            forged = page.request.post(f"{base}/flywheel/models/{target}/rollback", form={"reason": "x"},
                                       headers={"Origin": "http://evil.example"})
            assert forged.status == 403

            page.goto(f"{base}/flywheel/models/{target}")
            if aliases[target].get("previous-champion") in (None, champ):
                # nothing to roll back to (an earlier test moved it): make one with the Override form first
                other = next(v.version for v in mlflow_client(demo).search_model_versions(
                    f"name='flywheel-{target}'") if str(v.version) != champ)
                page.select_option("#override select[name=version]", str(other))
                page.fill("#override textarea[name=reason]", "test_ui: a champion to roll back from")
                page.click("#override button[type=submit]")
                page.locator("#message").wait_for()
                _wait_alias(demo, target, "champion", str(other))
                champ = str(other)
                page.goto(f"{base}/flywheel/models/{target}")
            before = _champions(demo)[target]
            page.fill("#rollback textarea[name=reason]", "test_ui: rolled back from the Flywheel page")
            page.click("#rollback button[type=submit]")
            message = page.locator("#message")
            message.wait_for()
            assert f"rollback__{target}" in message.inner_text()
            _wait_alias(demo, target, "champion", before["previous-champion"])
        finally:
            browser.close()
    # audited as the user who clicked, with the reason
    from pipelines.gate import alias_history
    from pipelines.spec import load_specs

    last = alias_history(load_specs()[target], mlflow_client(demo))[-1]
    assert last["action"] == "rollback" and last["reason"] == "test_ui: rolled back from the Flywheel page"
    assert last["actor"].startswith(f"admin via rollback__{target} run "), last
    # the browser fetched nothing from anywhere but the Airflow server (charts are inline SVG, no CDN)
    assert hosts == {urlparse(base).netloc}, hosts


def _wait_alias(demo, model: str, alias: str, version: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _champions(demo)[model].get(alias) != version:
        assert time.monotonic() < deadline, f"{model}@{alias} not v{version} after {timeout:.0f}s: {_champions(demo)}"
        time.sleep(2)
