"""The runbooks (docs/runbooks/) tell an on-call engineer what to type: every command, DAG and link in them exists."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import runbooks
from pipelines.board import pages as board_pages
from pipelines.mail import Pages, html_to_text
from pipelines.spec import REPO_ROOT

pytestmark = pytest.mark.unit
RUNBOOKS = sorted((REPO_ROOT / "docs" / "runbooks").glob("*.md"))
STAGES = {p.stem for p in (REPO_ROOT / "dags").glob("*.py")} | {"features"}


def test_every_runbook_is_listed_in_the_index():
    index = (REPO_ROOT / "docs" / "runbooks" / "README.md").read_text()
    names = {p.name for p in RUNBOOKS} - {"README.md"}
    assert len(names) >= 6
    assert {n for n in names if f"({n})" in index} == names


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.name)
def test_links_commands_and_dags_in_a_runbook_exist(path: Path):
    text = path.read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in link:
            assert (path.parent / link).is_file(), f"{path.name}: broken link {link}"
    for stage in re.findall(r"`([a-z_]+)__<(?:model|dataset)>`", text):
        assert stage in STAGES, f"{path.name}: no DAG stage {stage!r} in dags/"
    for sub in sorted(set(re.findall(r"flywheel (\w[\w-]*)", text)) - {"page"}):
        out = subprocess.run([sys.executable, "-m", "flywheel.cli", sub, "--help"], capture_output=True, text=True,
                             cwd=REPO_ROOT, timeout=60)
        assert out.returncode == 0, f"{path.name}: `flywheel {sub}` is not a command: {out.stderr[-300:]}"
    for target in re.findall(r"^make (\w+)", text, flags=re.M):
        assert re.search(rf"^{target}:", (REPO_ROOT / "Makefile").read_text(), flags=re.M), target


# ---------------------------------------------------------------------------------------------- on the page

BOOKS = runbooks.list_runbooks()
LINK = re.compile(r'<a href="([^"]*)"')


def test_every_email_names_a_runbook_that_exists():
    used = {getattr(runbooks, k) for k in dir(runbooks) if k.isupper() and k != "INDEX"}
    assert used - set(BOOKS) == set()
    assert {p.stem for p in RUNBOOKS} - {"README"} == set(BOOKS)


def test_the_automatic_rollback_runbook_says_what_to_do():
    book = BOOKS[runbooks.AUTOMATIC_ROLLBACK]
    text = book.path.read_text()
    for section in ("**Symptom.**", "**Look at.**", "**Commands.**", "**Decide.**", "**Escalate**"):
        assert section in text, section
    # the commands a person has after an automatic rollback: the audited DAGs and the page's forms
    for what in ("override__<model>", "action: promote", "rollback__<model>", "flywheel/models/<model>",
                 "guardrail.tolerance", "guardrail.guard_days", "flywheel.guardrail.", "_shadow/<key>.parquet"):
        assert what in text, what
    index = (REPO_ROOT / "docs" / "runbooks" / "README.md").read_text()
    assert f"[{book.path.name}]({book.path.name})" in index


@pytest.mark.parametrize("name", sorted(BOOKS))
def test_every_runbook_renders_with_links_to_pages_that_exist(name: str):
    page = runbooks.render_runbook(name, link_base="/flywheel/runbooks")
    assert f"<h1>{html.escape(BOOKS[name].heading)}</h1>" in page
    assert "<strong>Symptom.</strong>" in page and "**" not in page   # Markdown, rendered
    source = BOOKS[name].path.read_text()
    for href in LINK.findall(page):
        if "://" in href:
            continue
        target = href.partition("#")[0]
        assert target.startswith("/flywheel/runbooks/"), (name, href)
        rest = target.removeprefix("/flywheel/runbooks/")
        assert rest == "" or rest in BOOKS, (name, href)   # the index, or another runbook's page
    # every link between runbooks in the Markdown is a link on the page
    between = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", source) if t.endswith(".md") and "/" not in t]
    assert [f"/flywheel/runbooks/{t.removesuffix('.md')}" for t in between if t != "README.md"] == \
        [h for h in LINK.findall(page) if h.startswith("/flywheel/runbooks/") and h.rstrip("/") != "/flywheel/runbooks"]


def test_the_index_renders_its_table_linking_every_runbook():
    page = runbooks.render_index(link_base="/flywheel/runbooks")
    assert "<table>" in page
    assert {h.removeprefix("/flywheel/runbooks/") for h in LINK.findall(page) if "://" not in h} >= set(BOOKS)


def test_raw_html_in_a_runbook_is_shown_as_text_never_run(tmp_path: Path):
    (tmp_path / "evil.md").write_text(
        "# Evil <b>title</b>\n\n<script>alert('x')</script>\n\nText <img src=x onerror=alert(1)> and "
        "[a link](javascript:alert(1)), [elsewhere](../secrets.md), [ok](other.md#decide).\n")
    (tmp_path / "other.md").write_text("# Other\n")
    page = runbooks.render_runbook("evil", tmp_path, link_base="/flywheel/runbooks")
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<h1>Evil &lt;b&gt;title&lt;/b&gt;</h1>" in page
    # javascript: is no link; ../secrets.md is not a page of the Flywheel page: its text stays, unlinked
    assert LINK.findall(page) == ["/flywheel/runbooks/other#decide"] and "elsewhere</a>" in page
    books = runbooks.list_runbooks(tmp_path)
    index = board_pages.runbooks_page([(b.name, b.heading) for b in books.values()], "", board_pages.Urls("/flywheel"))
    assert "Evil &lt;b&gt;title&lt;/b&gt;" in index and "<b>title" not in index


def test_a_name_is_looked_up_in_the_listing_never_joined_into_a_path(tmp_path: Path):
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "one.md").write_text("# One\n")
    (tmp_path / "secret.md").write_text("# Secret\n")
    folder = tmp_path / "runbooks"
    assert runbooks.find_runbook("one", folder) is not None and runbooks.find_runbook("one.md", folder) is not None
    for name in ("../secret", "..%2Fsecret", "/etc/passwd", "README", "", "One"):
        assert runbooks.find_runbook(name, folder) is None, name
        with pytest.raises(runbooks.UnknownRunbook, match="the runbooks are: one"):
            runbooks.render_runbook(name, folder)


def test_an_email_links_the_runbook_page_or_names_the_file():
    pages = Pages(base_url="http://127.0.0.1:8080/")
    title, url = runbooks.runbook_link(runbooks.DRIFT_ALARM, pages)
    assert url == "http://127.0.0.1:8080/flywheel/runbooks/drift-alarm"
    assert title == f"Runbook: {BOOKS['drift-alarm'].heading}"
    assert runbooks.runbook_url("drift-alarm", "http://airflow.example/base/") == \
        "http://airflow.example/base/flywheel/runbooks/drift-alarm"
    assert runbooks.runbook_link("drift-alarm", Pages())[1] is None
    text = html_to_text(runbooks.runbook_html(["blocked-batch", "quarantine-spike"], pages))
    assert "http://127.0.0.1:8080/flywheel/runbooks/blocked-batch" in text
    assert "http://127.0.0.1:8080/flywheel/runbooks/quarantine-spike" in text
    bare = html_to_text(runbooks.runbook_html("drift-alarm", None))
    assert "docs/runbooks/drift-alarm.md" in bare and "http" not in bare


def test_airflow_task_failure_email_links_the_failed_task_runbook(tmp_path):
    """Airflow's own failure email uses Flywheel's body ([email] html_content_template, from the runtime and
    compose): rendered as Airflow renders it (Jinja, the task's context), it links the failed-task runbook page."""
    from types import SimpleNamespace

    import jinja2
    import yaml

    from flywheel.runtime import Ports, environment
    from pipelines.layout import Layout
    from pipelines.runbooks import FAILED_TASK, list_runbooks
    from pipelines.spec import REPO_ROOT as REPO

    env = environment(Layout(tmp_path / "home"), Ports.free())
    template = Path(env["AIRFLOW__EMAIL__HTML_CONTENT_TEMPLATE"])
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    in_image = compose["x-airflow-common"]["environment"]["AIRFLOW__EMAIL__HTML_CONTENT_TEMPLATE"]
    assert template.is_file() and in_image.endswith("/" + template.relative_to(REPO).as_posix())
    ti = SimpleNamespace(log_url="http://127.0.0.1:8080/dags/score__m/runs/r/tasks/t?try_number=2",
                         hostname="h", mark_success_url="u")
    html = jinja2.Template(template.read_text()).render(ti=ti, try_number=2, max_tries=1,
                                                        exception_html="ValueError: boom")
    assert 'href="http://127.0.0.1:8080/flywheel/runbooks/failed-task"' in html
    assert "ValueError: boom" in html and "Try 2 out of 2" in html and FAILED_TASK in list_runbooks()
