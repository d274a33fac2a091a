"""Emails people can open: an HTML body with its pictures inline, a text alternative, attachments a mail
client opens as they are, and links to Flywheel's pages.

`Email` is what a stage composes (pipelines/monitor/email.py, pipelines/notify.py) and what the outbox
keeps (pipelines/outbox.py): every part is a location (a path or a URI), so a queued email keeps its
picture and its attachments. `build_message` turns it into one MIME message:

    multipart/mixed
    ├── multipart/alternative
    │   ├── text/plain                  the text alternative
    │   └── multipart/related
    │       ├── text/html               <img src="cid:...">
    │       └── image/png               Content-ID: <...>, inline
    └── text/html, application/json ... each attachment, its content type from its name

Airflow's `SmtpHook.send_email_smtp` builds `multipart/mixed` with the HTML and every file as
`application/octet-stream`, no inline parts and no text alternative; flywheel.dagkit.send_email sends
this message through the hook's connection instead.
"""

from __future__ import annotations

import html
import mimetypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

from pipelines import storage


@dataclass(frozen=True)
class Email:
    to: tuple[str, ...]
    subject: str
    html: str
    attachments: tuple[str, ...] = ()  # file locations (paths or URIs), attached under their own names
    text: str = ""  # the text alternative; empty: derived from `html`
    # pictures shown in the HTML: (content id, location of a PNG), referenced as <img src="cid:<content id>">
    inline: tuple[tuple[str, str], ...] = ()


def build_message(
    mail: Email, sender: str, *, read: Callable[[str], bytes] = storage.read_bytes, date: str | None = None
) -> EmailMessage:
    """The MIME message of `mail` from `sender` (structure in the module docstring)."""
    msg = EmailMessage()
    msg["Subject"] = mail.subject
    msg["From"] = sender
    msg["To"] = ", ".join(mail.to)
    msg["Date"] = date or formatdate(localtime=True)
    msg.set_content(mail.text or html_to_text(mail.html))
    msg.add_alternative(mail.html, subtype="html")
    if mail.inline:
        parts: Any = msg.get_payload()   # [text/plain, text/html]: the HTML part takes the related pictures
        body = parts[1]
        for cid, location in mail.inline:
            body.add_related(read(location), maintype="image", subtype="png", cid=f"<{cid}>",
                             disposition="inline", filename=storage.name(location))
    for location in mail.attachments:
        name = storage.name(location)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        maintype, subtype = kind.split("/", 1)
        msg.add_attachment(read(location), maintype=maintype, subtype=subtype, filename=name)
    return msg


@dataclass(frozen=True)
class Pages:
    """Flywheel's pages as an email links them. `base_url` is Airflow's API base URL (the DAG layer reads
    AIRFLOW__API__BASE_URL, e.g. `http://127.0.0.1:8080/`). `folders` maps each folder whose files the page
    serves (a location) to its place under `{base}flywheel/files/`, e.g. `<data root>/reports/fraud` ->
    `reports/fraud`, `<data root>/data/validation_reports/transactions` -> `validation/transactions`,
    `<home>/data/data_docs/transactions/site` -> `docs/transactions` (plugins/flywheel_ui.py serves those).
    Without a base URL every link is None (and not shown)."""

    base_url: str | None = None
    folders: tuple[tuple[str, str], ...] = ()

    def model(self, name: str) -> str | None:
        return page_url(self.base_url, "models", name)

    def dataset(self, name: str) -> str | None:
        return page_url(self.base_url, "datasets", name)

    def file(self, location: str | None) -> str | None:
        """The page's URL of a file in one of `folders`; None for any other file."""
        if not self.base_url or not location:
            return None
        loc = str(location).removeprefix("file://")
        for folder, place in self.folders:
            prefix = str(folder).rstrip("/") + "/"
            rel = loc[len(prefix):]
            if loc.startswith(prefix) and ".." not in rel.split("/"):
                return f"{self.base_url.rstrip('/')}/flywheel/files/{quote(place.strip('/'))}/{quote(rel)}"
        return None


def page_url(base_url: str | None, kind: str, name: str) -> str | None:
    """The Flywheel page of a model or dataset (`kind`: models | datasets), or None without a base URL."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/flywheel/{kind}/{quote(name)}"


def links_html(links: Iterable[tuple[str, str | None]]) -> str:
    """`label: link` lines, the ones with a URL only."""
    e = html.escape
    shown = [f'<a href="{e(url, quote=True)}">{e(label)}</a>' for label, url in links if url]
    return "<p>" + " · ".join(shown) + "</p>" if shown else ""


def html_to_text(body: str) -> str:
    """A readable plain-text rendering of an email's HTML: paragraphs and rows on their own lines,
    cells separated by " | ", links as `label <url>`, pictures by their alt text."""
    parser = _Text()
    parser.feed(body)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.out).splitlines()]
    text, blank = [], False
    for line in lines:
        if line or not blank:
            text.append(line)
        blank = not line
    return "\n".join(text).strip() + "\n"


class _Text(HTMLParser):
    _BREAK = {"p", "br", "tr", "h1", "h2", "h3", "h4", "li", "table", "div"}
    _SKIP = {"style", "script", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.href: list[str | None] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BREAK:
            self.out.append("\n")
        elif tag in ("td", "th"):
            self.out.append(" | ")
        elif tag == "a":
            self.href.append(a.get("href"))
        elif tag == "img" and a.get("alt"):
            self.out.append(f"[{a['alt']}]")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in ("p", "h1", "h2", "h3", "h4", "table"):
            self.out.append("\n")
        elif tag == "a" and self.href:
            href = self.href.pop()
            if href and not href.startswith("cid:"):
                self.out.append(f" <{href}>")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)
