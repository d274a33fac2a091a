"""Durable email: an outbox of messages retried until delivered or expired, and a digest of the expired.

A message Flywheel could not send at once (the SMTP server is down, refuses, times out) is written to
`<outbox>/pending/<id>.json` with its recipients, subject, HTML, text alternative, the locations of its
inline pictures and attachments (so a retried email keeps its picture and its report), when it was first
tried and when it expires. `deliver_pending` (run by the `deliver_outbox` DAG, every few minutes)
retries each one: a delivered message moves to `sent/`, one past its expiry to `expired/`. Expired
messages are never silently dropped: once the server answers again they go out as one digest per
recipient list ("these N messages could not be delivered"), and are marked digested.

`on_sent` lets a producer learn about a late delivery: a small JSON-able record ({"kind": ..., ...})
that `deliver_pending` hands to the `notify_sent` callback (e.g. the drift report updates its verdict
and the reports index from "pending" to "sent").

Pure: sending goes through the `send(email)` callable the caller gives (pipelines.mail.Email; Airflow's
SMTP connection in the DAGs: flywheel.dagkit.send_email); the clock is an argument.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipelines import storage
from pipelines.mail import Email

log = logging.getLogger(__name__)

DEFAULT_EXPIRE_HOURS = 72
PENDING, SENT, EXPIRED = "pending", "sent", "expired"

Send = Callable[[Email], None]


@dataclass
class Message:
    id: str
    to: list[str]
    subject: str
    html: str
    attachments: list[str]
    created_at: str
    expires_at: str
    attempts: int = 0
    last_error: str = ""
    last_attempt_at: str = ""
    sent_at: str = ""
    digested: bool = False
    on_sent: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    inline: list[list[str]] = field(default_factory=list)  # [content id, location of the PNG]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    def email(self) -> Email:
        return Email(to=tuple(self.to), subject=self.subject, html=self.html, attachments=tuple(self.attachments),
                     text=self.text, inline=tuple((str(c), str(loc)) for c, loc in self.inline))


def _path(outbox: str, state: str, mid: str) -> str:
    return storage.join(outbox, state, f"{mid}.json")


def _load(path: str) -> Message:
    return Message(**json.loads(storage.read_text(path)))


def _list(outbox: str, state: str) -> list[Message]:
    return sorted((_load(p) for p in storage.list_files(storage.join(outbox, state), ".json")),
                  key=lambda m: (m.created_at, m.id))


def message_id(to: list[str], subject: str, created_at: datetime) -> str:
    digest = hashlib.sha256(f"{','.join(to)}|{subject}|{created_at.isoformat()}".encode()).hexdigest()[:12]
    return f"{created_at:%Y%m%dT%H%M%S}-{digest}"


def queue(outbox: str, mail: Email, *, now: datetime, error: str, expire_hours: float = DEFAULT_EXPIRE_HOURS,
          on_sent: dict[str, Any] | None = None) -> Message:
    """Keep a message that could not be sent (after a first attempt that failed with `error`)."""
    to = list(mail.to)
    msg = Message(id=message_id(to, mail.subject, now), to=to, subject=mail.subject, html=mail.html,
                  attachments=[str(a) for a in mail.attachments], created_at=now.isoformat(),
                  expires_at=(now + timedelta(hours=expire_hours)).isoformat(), attempts=1, last_error=error,
                  last_attempt_at=now.isoformat(), on_sent=dict(on_sent or {}), text=mail.text,
                  inline=[[str(c), str(loc)] for c, loc in mail.inline])
    storage.write_text(msg.to_json(), _path(outbox, PENDING, msg.id))
    log.warning("email queued in the outbox (%s): %s to %s; retried until %s", error, mail.subject, ", ".join(to),
                msg.expires_at)
    return msg


def send_or_queue(send: Send, outbox: str, mail: Email, *, now: datetime, expire_hours: float = DEFAULT_EXPIRE_HOURS,
                  on_sent: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send now; when that fails, queue it. Returns {"status": "sent"} or {"status": "pending", "outbox_id", ...}."""
    try:
        send(mail)
    except Exception as exc:  # noqa: BLE001 - any delivery failure is retried from the outbox
        msg = queue(outbox, mail, now=now, error=f"{type(exc).__name__}: {exc}", expire_hours=expire_hours,
                    on_sent=on_sent)
        return {"status": PENDING, "outbox_id": msg.id, "error": msg.last_error, "expires_at": msg.expires_at}
    return {"status": SENT}


@dataclass(frozen=True)
class DeliveryReport:
    sent: list[str]
    pending: list[dict[str, Any]]     # id, subject, attempts, last_error, expires_at
    expired: list[str]
    digests_sent: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deliver_pending(outbox: str, send: Send, *, now: datetime,
                    notify_sent: Callable[[Message], None] | None = None) -> DeliveryReport:
    """Retry every pending message; expire those past their expiry; send digests of the expired ones."""
    sent, pending, expired = [], [], []
    server_answers = False
    for msg in _list(outbox, PENDING):
        src = _path(outbox, PENDING, msg.id)
        if datetime.fromisoformat(msg.expires_at) <= now:
            storage.write_text(msg.to_json(), _path(outbox, EXPIRED, msg.id))
            storage.delete(src)
            expired.append(msg.id)
            log.error("email expired undelivered after %d attempt(s): %s (%s)", msg.attempts, msg.subject,
                      msg.last_error)
            continue
        msg.attempts += 1
        msg.last_attempt_at = now.isoformat()
        try:
            send(msg.email())
        except Exception as exc:  # noqa: BLE001 - stays pending
            msg.last_error = f"{type(exc).__name__}: {exc}"
            storage.write_text(msg.to_json(), src)
            pending.append({"id": msg.id, "subject": msg.subject, "attempts": msg.attempts,
                            "last_error": msg.last_error, "expires_at": msg.expires_at})
            continue
        server_answers = True
        msg.sent_at = now.isoformat()
        storage.write_text(msg.to_json(), _path(outbox, SENT, msg.id))
        storage.delete(src)
        sent.append(msg.id)
        log.info("email delivered from the outbox after %d attempt(s): %s", msg.attempts, msg.subject)
        if notify_sent is not None and msg.on_sent:
            try:
                notify_sent(msg)
            except Exception:  # noqa: BLE001 - the mail went out; a stale status line is not worth a failure
                log.exception("could not record the late delivery of %s", msg.id)
    digests = _send_digests(outbox, send, now, try_anyway=server_answers or not pending)
    return DeliveryReport(sent, pending, expired, digests)


def _send_digests(outbox: str, send: Send, now: datetime, try_anyway: bool) -> int:
    """One digest per recipient list of the expired, not yet digested messages."""
    todo = [m for m in _list(outbox, EXPIRED) if not m.digested]
    if not todo or not try_anyway:
        return 0
    groups: dict[tuple[str, ...], list[Message]] = {}
    for m in todo:
        groups.setdefault(tuple(sorted(m.to)), []).append(m)
    done = 0
    for to, msgs in groups.items():
        subject, body = digest(msgs, now)
        try:
            send(Email(to=to, subject=subject, html=body))
        except Exception as exc:  # noqa: BLE001 - tried again next run
            log.warning("digest of %d expired email(s) not sent: %s", len(msgs), exc)
            continue
        for m in msgs:
            m.digested = True
            storage.write_text(m.to_json(), _path(outbox, EXPIRED, m.id))
        done += 1
    return done


def digest(messages: list[Message], now: datetime) -> tuple[str, str]:
    """Subject and HTML of the digest of `messages` that expired undelivered."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(m.created_at[:19])}</td><td>{e(m.subject)}</td><td>{m.attempts}</td><td>{e(m.last_error)}</td>"
        f"<td>{e(', '.join(storage.name(a) for a in m.attachments))}</td></tr>"
        for m in messages)
    body = (f"<h2>{len(messages)} Flywheel email(s) could not be delivered</h2>"
            "<p>The mail server did not accept these messages before they expired. What they reported is still on "
            "the Flywheel host (attachments listed; the reports stay in their folders).</p>"
            "<table border=1 cellpadding=4><tr><th>first tried (UTC)</th><th>subject</th><th>attempts</th>"
            f"<th>last error</th><th>attachments</th></tr>{rows}</table>"
            f"<p>Digest sent {e(now.isoformat()[:19])} UTC by the deliver_outbox DAG.</p>")
    return f"[Flywheel] {len(messages)} undelivered email(s) (digest)", body


def status(outbox: str) -> dict[str, int]:
    """How many messages are pending, sent, expired (and not yet digested)."""
    expired = _list(outbox, EXPIRED)
    sent = storage.list_files(storage.join(outbox, SENT), ".json")
    return {"pending": len(_list(outbox, PENDING)), "sent": len(sent), "expired": len(expired),
            "expired_not_digested": sum(not m.digested for m in expired)}
