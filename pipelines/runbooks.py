"""The runbooks (docs/runbooks/*.md): what to do when Flywheel says something is wrong, one Markdown file each.

Every email Flywheel composes links its runbook on the Flywheel page: `runbook_url` gives
`<Airflow base URL>flywheel/runbooks/<name>` (built like the page's other links, pipelines/mail.py
`page_url`), `runbook_link` the (label, URL) pair of an email's link list and `runbook_html` the paragraph an
email shows (its text alternative says the same: pipelines/mail.py `html_to_text`). The page
(plugins/flywheel_ui.py, `/flywheel/runbooks/`) lists them (`list_runbooks`) and shows one
(`render_runbook`): Markdown to HTML with raw HTML escaped, links between runbooks turned into links to
their pages.

A runbook's name is its file's stem (`drift-alarm`), its heading the file's first `# ` line; README.md is
the index, not a runbook. A name reaches a file only through `list_runbooks` (the folder's listing), never
by being joined into a path. No airflow import; markdown_it only inside the rendering functions.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pipelines.mail import Pages, page_url

INDEX = "README.md"

# the runbook of each email (one name, used by the composer and checked by tests/unit/test_runbooks.py)
BLOCKED_BATCH = "blocked-batch"
QUARANTINE_SPIKE = "quarantine-spike"
DRIFT_ALARM = "drift-alarm"
REJECTED_RETRAIN = "rejected-retrain"
FAILED_TASK = "failed-task"
BAD_PROMOTION = "bad-promotion"
AUTOMATIC_ROLLBACK = "automatic-rollback"
OUT_OF_BAND_CHAMPION = "out-of-band-champion"


@dataclass(frozen=True)
class Runbook:
    name: str    # the file's stem, e.g. drift-alarm
    heading: str   # its first `# ` heading, e.g. "Drift alarm"
    path: Path


def runbooks_dir() -> Path:
    """docs/runbooks of the checkout this module runs from (scaled out: mounted next to pipelines/)."""
    return Path(__file__).resolve().parent.parent / "docs" / "runbooks"


def list_runbooks(folder: Path | None = None) -> dict[str, Runbook]:
    """name -> Runbook of every `*.md` file in `folder` (default `runbooks_dir()`) but the index, by name."""
    root = folder or runbooks_dir()
    if not root.is_dir():
        return {}
    found = {}
    for path in sorted(root.glob("*.md")):
        if path.name != INDEX and path.is_file():
            found[path.stem] = Runbook(path.stem, _heading(path.read_text(encoding="utf-8"), path.stem), path)
    return found


def _heading(markdown: str, fallback: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback.replace("-", " ").capitalize()


def runbook_url(name: str, pages: Pages | str | None) -> str | None:
    """`<Airflow base URL>flywheel/runbooks/<name>`, from `pages` (its base_url) or a base URL; None without one."""
    base = pages.base_url if isinstance(pages, Pages) else pages
    return page_url(base, "runbooks", name)


def runbook_link(name: str, pages: Pages | str | None, folder: Path | None = None) -> tuple[str, str | None]:
    """The (label, URL) of the runbook `name` in an email's links (pipelines/mail.py `links_html`), e.g.
    ("Runbook: Drift alarm", "http://127.0.0.1:8080/flywheel/runbooks/drift-alarm"); the URL is None without a
    base URL (and `links_html` leaves the link out)."""
    return f"Runbook: {_label(name, folder)}", runbook_url(name, pages)


def runbook_html(names: str | Sequence[str], pages: Pages | str | None, folder: Path | None = None) -> str:
    """The paragraph an email shows: which runbook(s) say what to do, linked to their pages; without a base URL
    the file in the checkout (docs/runbooks/<name>.md) is named instead, so the text still points there."""
    e = html.escape
    shown = []
    for name in [names] if isinstance(names, str) else names:
        url, label = runbook_url(name, pages), _label(name, folder)
        shown.append(f'<a href="{e(url, quote=True)}">{e(label)}</a>' if url else
                     f"{e(label)} (<code>docs/runbooks/{e(name)}.md</code> in the Flywheel checkout)")
    if not shown:
        return ""
    what = "Runbook" if len(shown) == 1 else "Runbooks"
    return (f"<p><b>{what}:</b> {' and '.join(shown)}: what to look at, the commands, how to decide and when "
            "to escalate.</p>")


def _label(name: str, folder: Path | None) -> str:
    book = list_runbooks(folder).get(name)
    return book.heading if book else name.replace("-", " ").capitalize()


# ---------------------------------------------------------------------------------------------- the page


class UnknownRunbook(LookupError):
    """No runbook of that name in the folder's listing."""


def find_runbook(name: str, folder: Path | None = None) -> Runbook | None:
    """The runbook called `name` (`drift-alarm`, or `drift-alarm.md`), looked up in the folder's listing."""
    return list_runbooks(folder).get(name.removesuffix(".md"))


def render_runbook(name: str, folder: Path | None = None, link_base: str = "") -> str:
    """The HTML of one runbook for the page (UnknownRunbook when there is none of that name): see
    `render_markdown`."""
    books = list_runbooks(folder)
    book = books.get(name.removesuffix(".md"))
    if book is None:
        raise UnknownRunbook(f"no runbook {name!r} in {folder or runbooks_dir()}; the runbooks are: "
                             f"{', '.join(books) or 'none'}")
    return render_markdown(book.path.read_text(encoding="utf-8"), books, link_base)


def render_index(folder: Path | None = None, link_base: str = "") -> str:
    """The HTML of the index (README.md), or "" when the folder has none."""
    path = (folder or runbooks_dir()) / INDEX
    if not path.is_file():
        return ""
    return render_markdown(path.read_text(encoding="utf-8"), list_runbooks(folder), link_base)


def render_markdown(markdown: str, names: Collection[str], link_base: str = "") -> str:
    """Safe HTML of a runbook's Markdown (CommonMark and tables): raw HTML is escaped, never rendered, and
    markdown-it refuses `javascript:`-like links. A relative link to another runbook (`drift-alarm.md`,
    `drift-alarm.md#x`) becomes a link to its page (`<link_base>/drift-alarm`; relative to the page without
    `link_base`), one to README.md the index's; any other relative link keeps its text and loses its target (no
    such page is served). Absolute links and `#anchors` stay."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    for block in tokens:
        for tok in block.children or ():
            if tok.type != "link_open":
                continue
            href = str(tok.attrGet("href") or "")
            target = _page_href(href, names, link_base)
            if target is None:
                tok.attrs.pop("href", None)
            else:
                tok.attrSet("href", target)
    return md.renderer.render(tokens, md.options, {})


def _page_href(href: str, names: Collection[str], link_base: str) -> str | None:
    if not href or href.startswith("#") or "://" in href or href.startswith("mailto:"):
        return href
    target, hash_, anchor = href.partition("#")
    base = link_base.rstrip("/")
    if target == INDEX:
        page = f"{base}/" if base else "./"
    elif target.endswith(".md") and "/" not in target and target[:-3] in names:
        page = f"{base}/{quote(target[:-3])}" if base else quote(target[:-3])
    else:
        return None
    return page + hash_ + anchor
